"""``vnflab shell`` and ``vnflab lab shell N``: the LB topology, running, at Mininet's prompt.

Batch runs (``demo``, ``lab run``) answer "is it right?"; a prompt answers "what is it doing?".
:func:`run_shell` builds the LB topology in a fresh sandbox (``testbed.sandbox.run_interactive``:
the sandbox keeps the user's terminal), starts the backends and the LB program (the reference
or a student's overlay: any program of the way contract, ``vnf/ways/common.py``) and opens
Mininet's own CLI with vnflab's commands added (:class:`LBShell`):

* ``traffic [udp_flows] [http_conns] [rate]``: the traffic driver on the clients, then the
  affinity report (``testbed.checker``), from fresh backend records;
* ``stats``, ``flows [n]``: the running LB's counters and its newest flows (its stats file,
  written on SIGUSR1; ``flows_sample`` in the contract);
* ``pcap NODE|all [seconds]``: tcpdump at those hosts' interfaces, in the background, into
  pcap files kept after the shell ends (``testbed.capture``); ``pcap`` lists them, ``pcap stop``;
* ``drain B``, ``fail B``, ``add [B]``, ``remove B``, ``pool [reset]``: the pool through the
  LB's control file and SIGHUP (``vnf.control``); one spare backend is not in the LB's pool
  at the start, so ``add`` has one to add;
* ``restart``: the student's files copied into the overlay again, the LB restarted, the
  topology kept; ``log [n]``: the end of the LB's output.

Mininet's commands keep working (``c1 curl -s 10.0.0.100:8080/``, ``lb tcpdump -ni lb-eth0 -c
5``, ``pingall``, ``py c1.cmd(...)``, ``xterm c1``). Leaving (``exit``, Ctrl-D, Ctrl-C at the
prompt, the terminal closing) ends the sandbox, and with it every host, process and interface.
An LB that crashes does not end the shell: it says so at the next prompt, so the student can
fix the file and ``restart``.

Inside the sandbox this module runs as ``python -m testbed.shell SPEC.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from mininet.cli import CLI
from mininet.util import quietRun

from testbed.capture import Captures
from testbed.experiment import ExperimentSpec, RunningLB, Testbed, read_json
from testbed.poolchange import write_control
from vnf.addresses import SERVICE_PORT

FLOWS_SAMPLE = 1000  # --flows-sample of the shell's LB: the most `flows N` can show


@dataclass
class ShellSpec:
    way: str = "socket"
    policy: str = "maglev"
    clients: int = 2
    backends: int = 3  # in the LB's pool; one spare more for `add`
    lb_command: list[str] | None = None  # default: the reference, python -m vnf.ways.W_lb
    refresh: list[list[str]] = field(default_factory=list)  # [src, dest]: copied by `restart`
    title: str = ""  # what runs, for the banner
    workdir: str = ""
    pcap_dir: str = ""


# --------------------------------------------------------------------------------------------
# outside: the sandbox in the foreground of the user's terminal
# --------------------------------------------------------------------------------------------


def run_shell(spec: ShellSpec) -> int:
    """Run the shell in a fresh sandbox on this terminal; afterwards remove its work directory
    but the captures (their directory is printed)."""
    from testbed import sandbox

    ExperimentSpec(
        way=spec.way, clients=spec.clients, backends=spec.backends + 1, policy=spec.policy
    ).validate()
    made_workdir = not spec.workdir
    spec.workdir = spec.workdir or tempfile.mkdtemp(prefix="vnflab-shell-")
    spec.pcap_dir = os.path.abspath(spec.pcap_dir or os.path.join(spec.workdir, "pcap"))
    path = os.path.join(spec.workdir, "shell.json")
    with open(path, "w") as f:
        json.dump(asdict(spec), f)
    code = sandbox.run_interactive([sys.executable, "-m", "testbed.shell", path])
    pcaps = sorted(os.listdir(spec.pcap_dir)) if os.path.isdir(spec.pcap_dir) else []
    if made_workdir:
        inside = os.path.dirname(spec.pcap_dir) == spec.workdir
        if pcaps and inside:  # keep the captures only
            for name in os.listdir(spec.workdir):
                full = os.path.join(spec.workdir, name)
                if full != spec.pcap_dir:
                    shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)
        else:
            shutil.rmtree(spec.workdir, ignore_errors=True)
    print(
        "vnflab shell: the topology is gone"
        + (f"; your captures are in {spec.pcap_dir}" if pcaps else ""),
        flush=True,
    )
    return code


# --------------------------------------------------------------------------------------------
# inside the sandbox
# --------------------------------------------------------------------------------------------


class Session:
    """The topology, the LB and its control file, the captures: what the commands act on."""

    def __init__(self, spec: ShellSpec):
        self.spec = spec
        exp = ExperimentSpec(
            way=spec.way,
            clients=spec.clients,
            backends=spec.backends + 1,
            policy=spec.policy,
            lb_command=spec.lb_command,
        )
        self.bed = Testbed(exp.validate(), spec.workdir)
        cfg = self.bed.topo_cfg
        self.pool = cfg.backend_names()[: spec.backends]  # the LB's configured backends
        self.spare = cfg.backend_names()[spec.backends :]
        self.control_path = self.bed.path("control.json")
        self.control: dict = {}
        write_control(self.control_path, self.control)
        self.captures = Captures(self.bed.net, spec.pcap_dir, log_dir=spec.workdir)
        self.capture_rounds = 0
        self.lb: RunningLB | None = None
        self.lb_tag = ""
        self.starts = 0
        self.reported_exit = False

    # --- the LB ----------------------------------------------------------------------------
    def start_lb(self) -> None:
        self.starts += 1
        self.lb_tag = f"shell-{self.starts}"
        self.reported_exit = False
        self.lb = None
        self.lb = self.bed.start_lb(
            self.lb_tag,
            self.pool,
            ("--control-file", self.control_path, "--flows-sample", str(FLOWS_SAMPLE)),
        )

    def restart_lb(self) -> None:
        if self.lb is not None:
            self.lb.stop()
        for src, dest in self.spec.refresh:
            shutil.copyfile(src, dest)
        self.start_lb()

    def lb_log_path(self) -> str:
        return self.bed.path(f"lb-{self.lb_tag}.log")

    def lb_log_tail(self, n: int = 20) -> str:
        try:
            with open(self.lb_log_path(), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def fresh_stats(self, timeout: float = 3.0) -> dict | None:
        """Ask the LB for its stats (SIGUSR1) and read them once the file is rewritten."""
        lb = self.lb
        if lb is None or not lb.alive():
            return None
        before = os.stat(lb.stats_path).st_mtime_ns if os.path.exists(lb.stats_path) else 0
        lb.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(lb.stats_path) and os.stat(lb.stats_path).st_mtime_ns != before:
                stats = read_json(lb.stats_path)
                if stats is not None:
                    return stats
            time.sleep(0.05)
        return None

    # --- the pool --------------------------------------------------------------------------
    def change_pool(self, doc: dict, timeout: float = 3.0) -> dict | None:
        """Write the control file, SIGHUP the LB and wait until its stats show the change
        (a Maglev table takes a moment to build); returns those stats (None: not seen)."""
        self.control = doc
        write_control(self.control_path, doc)
        if self.lb is None or not self.lb.alive():
            return None
        self.lb.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.fresh_stats()
            control = (stats or {}).get("control") or {}
            if _same_change(control.get("pool_change") or {}, doc) or control.get("last_error"):
                return stats
            time.sleep(0.1)
        return None

    def backend_entry(self, name: str) -> dict:
        cfg = self.bed.topo_cfg
        return {
            "name": name,
            "ip": cfg.host_ip(name),
            "mac": cfg.host_mac(name),
            "port": SERVICE_PORT,
        }

    def close(self) -> None:
        try:
            self.captures.stop()
            if self.lb is not None:
                self.lb.stop()
        finally:
            self.bed.close()


def _same_change(applied: dict, doc: dict) -> bool:
    """True if the LB's ``pool_change`` (its stats) is the control document ``doc``."""

    def names(d: dict, key: str) -> set:
        return {x["name"] if isinstance(x, dict) else x for x in d.get(key) or []}

    return all(names(applied, k) == names(doc, k) for k in ("drain", "fail", "add", "remove"))


def _ints(line: str, defaults: list[int]) -> list[int]:
    words = line.split()
    if len(words) > len(defaults) or not all(w.isdigit() for w in words):
        raise ValueError(f"expected up to {len(defaults)} whole numbers, got {line!r}")
    return [int(w) for w in words] + defaults[len(words) :]


class LBShell(CLI):
    """Mininet's CLI plus vnflab's commands (see the module docstring)."""

    prompt = "vnflab> "

    def __init__(self, session: Session, **kwargs):
        self.session = session
        self.busy = False
        CLI.__init__(self, session.bed.net, **kwargs)

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Mininet's loop, but Ctrl-C at an idle prompt leaves (the sandbox is removed);
        Ctrl-C while a command runs only interrupts that command, as in Mininet."""
        while True:
            try:
                self.busy = False
                for node in self.mn.values():  # as Mininet: none left mid-command
                    while node.waiting:
                        node.sendInt()
                        node.waitOutput()
                if self.isatty():
                    quietRun("stty echo sane intr ^C")
                self.cmdloop()
                return
            except KeyboardInterrupt:
                if not self.busy:
                    print("\nleaving: removing the topology", flush=True)
                    return
                print("\nInterrupted", flush=True)

    def precmd(self, line: str) -> str:
        self.busy = True
        return CLI.precmd(self, line)

    def postcmd(self, stop, line: str):
        self.busy = False
        self.report_lb_exit()
        return stop

    def emptyline(self):
        self.report_lb_exit()

    def report_lb_exit(self) -> None:
        """Once per LB process: say that it exited, and how, if it did."""
        s = self.session
        if s.lb is None or s.lb.alive() or s.reported_exit:
            return
        s.reported_exit = True
        print(
            f"*** the LB exited (code {s.lb.proc.returncode}); the end of its output:\n"
            f"{s.lb_log_tail()}*** fix your file and type restart",
            flush=True,
        )

    def _lb_running(self) -> bool:
        s = self.session
        if s.lb is None or not s.lb.alive():
            self.report_lb_exit()
            print("the LB is not running: restart starts it again")
            return False
        return True

    # --- traffic and what the LB says --------------------------------------------------------
    def do_traffic(self, line: str) -> None:
        """traffic [udp_flows] [http_conns] [rate]: drive UDP flows (3 datagrams each, at
        `rate` packets/s) and HTTP connections to the VIP from every client; print the
        affinity report. Each run starts from fresh backend records. Default: 200 20 2000."""
        from testbed.checker import check

        try:
            flows, conns, rate = _ints(line, [200, 20, 2000])
        except ValueError as exc:
            print(f"traffic: {exc}")
            return
        s = self.session
        s.bed.restart_backends()
        print(
            f"driving {flows} UDP flows x 3 datagrams at {rate} pps and {conns} HTTP "
            f"connections from {', '.join(s.bed.topo_cfg.client_names())} ...",
            flush=True,
        )
        clients = s.bed.drive(
            "traffic", flows, 3, max(1, rate), conns, timeout=flows * 3 / max(1, rate) * 3 + 60
        )
        serving = set(s.pool) | {a["name"] for a in s.control.get("add", [])}
        records = [
            r for r in s.bed.backend_records() if r.get("backend") in serving or r.get("flows")
        ]
        print(check(records, clients).table(), flush=True)

    def do_stats(self, _line: str) -> None:
        """stats: the running LB's counters (its stats file, asked for with SIGUSR1)."""
        if not self._lb_running():
            return
        stats = self.session.fresh_stats()
        if stats is None:
            print("stats: the LB did not write its stats file within 3 s")
            return
        lb = stats.get("lb") or {}
        dropped = {k: v for k, v in (lb.get("dropped") or {}).items() if v}
        lines = [
            (
                f"LB {stats.get('way')} pid {stats.get('pid')}, up {stats.get('uptime_s')} s, "
                f"CPU {stats.get('cpu_user_s', 0):.2f} s user + "
                f"{stats.get('cpu_sys_s', 0):.2f} s sys"
            ),
            (
                f"  packets {lb.get('packets')}  forwarded {lb.get('forwarded')}  new flows "
                f"{lb.get('new_flows')}  moved {lb.get('reassigned')}"
            ),
            f"  dropped {dropped or 'none'}",
            f"  new flows per backend {lb.get('assigned')}",
            f"  backends {lb.get('backends')}",
            f"  flow table {lb.get('flow_table')}",
        ]
        control = stats.get("control") or {}
        lines.append(
            f"  control: applied {control.get('applied')}, errors "
            f"{control.get('errors')}, pool change {control.get('pool_change')}"
        )
        skip = {
            "way",
            "pid",
            "uptime_s",
            "cpu_user_s",
            "cpu_sys_s",
            "lb",
            "control",
            "flows_sample",
            "exit_code",
        }
        extra = {k: v for k, v in stats.items() if k not in skip}
        if extra:
            lines.append(f"  way's own: {json.dumps(extra)[:600]}")
        print("\n".join(lines))

    def do_flows(self, line: str) -> None:
        """flows [n]: the n most recently used entries of the LB's flow table (default 10):
        5-tuple -> backend, and how long ago the flow's last packet was."""
        try:
            (n,) = _ints(line, [10])
        except ValueError as exc:
            print(f"flows: {exc}")
            return
        if not self._lb_running():
            return
        stats = self.session.fresh_stats()
        if stats is None:
            print("flows: the LB did not write its stats file within 3 s")
            return
        sample = stats.get("flows_sample")
        if sample is None:
            print(
                "flows: the LB's stats have no flows_sample (an LB program of an older contract?)"
            )
            return
        table = (stats.get("lb") or {}).get("flow_table") or {}
        print(
            f"flow table: {table.get('size', '?')} flows; the {min(n, len(sample))} most "
            f"recently used:"
        )
        for row in sample[:n]:
            if "error" in row:
                print(f"  (cannot read the flow table: {row['error']})")
            elif "hash" in row:
                print(
                    f"  flow hash {row['hash']} -> {row['backend']}, last packet "
                    f"{row['idle_s']:.1f} s ago (the batch cache keeps hashes, not 5-tuples)"
                )
            else:
                print(
                    f"  {row['flow']:<44} -> {row['backend']}, last packet "
                    f"{row['idle_s']:.1f} s ago"
                )
        if not sample:
            print("  (none yet: try traffic, or c1 curl -s 10.0.0.100:8080/)")

    def do_log(self, line: str) -> None:
        """log [n]: the last n lines (default 20) of the LB's output."""
        try:
            (n,) = _ints(line, [20])
        except ValueError as exc:
            print(f"log: {exc}")
            return
        print(f"{self.session.lb_log_path()}:\n{self.session.lb_log_tail(n)}", end="")

    # --- captures ------------------------------------------------------------------------------
    def do_pcap(self, line: str) -> None:
        """pcap NODE|all [seconds]: capture at NODE-eth0 (all: every host) for `seconds`
        (default 10) in the background, into pcap files for Wireshark or scapy.rdpcap; run
        traffic meanwhile. pcap: list the captures; pcap stop: stop them now."""
        s = self.session
        words = line.split()
        s.captures.expire()
        if not words:
            for cap in s.captures.files:
                state = "capturing" if cap.running() else "done"
                print(f"  {cap.path}  {cap.frames()} frames ({state})")
            if not s.captures.files:
                print("no captures yet: pcap lb 10, then traffic")
            return
        if words[0] == "stop":
            s.captures.stop()
            print(f"stopped; the files are in {s.spec.pcap_dir}")
            return
        cfg = s.bed.topo_cfg
        hosts = cfg.host_names() if words[0] == "all" else [words[0]]
        if any(h not in cfg.host_names() for h in hosts):
            print(f"pcap: no host {words[0]!r} (hosts: {', '.join(cfg.host_names())}, or all)")
            return
        if s.bed.ovs is not None and "lb" in hosts:
            print(
                "pcap: the DPDK LB's port is a vhost-user port of OVS-DPDK, not a kernel "
                "interface: capture at the clients and backends instead"
            )
            hosts.remove("lb")
            if not hosts:
                return
        try:
            seconds = float(words[1]) if len(words) > 1 else 10.0
        except ValueError:
            print(f"pcap: seconds must be a number, got {words[1]!r}")
            return
        s.capture_rounds += 1
        started = s.captures.start(hosts, seconds, prefix=f"{s.capture_rounds:02d}-")
        for cap in started:
            print(f"capturing at {cap.host}:{cap.iface} for {seconds:g} s -> {cap.path}")

    # --- the pool ------------------------------------------------------------------------------
    def _pool_change(self, key: str, line: str) -> None:
        s = self.session
        name = line.strip()
        known = s.pool + s.spare
        if name not in known:
            print(f"{key}: which backend? ({', '.join(known)})")
            return
        doc = {k: list(v) for k, v in s.control.items()}
        for other in ("drain", "fail", "remove"):
            if other != key and name in doc.get(other, []):
                doc[other].remove(name)
        if name not in doc.setdefault(key, []):
            doc[key].append(name)
        self.show_pool(s.change_pool({k: v for k, v in doc.items() if v}))

    def do_drain(self, line: str) -> None:
        """drain B: backend B keeps its flows but gets no new ones (control file + SIGHUP)."""
        self._pool_change("drain", line)

    def do_fail(self, line: str) -> None:
        """fail B: backend B is unhealthy: no new flows, its flows move (control file +
        SIGHUP). pool reset brings it back."""
        self._pool_change("fail", line)

    def do_remove(self, line: str) -> None:
        """remove B: backend B leaves the pool; its flows move."""
        self._pool_change("remove", line)

    def do_add(self, line: str) -> None:
        """add [B]: a backend joins the pool (default: the spare one, which runs a server but
        is not in the LB's configured pool) and gets its share of new flows."""
        s = self.session
        name = line.strip() or (s.spare[0] if s.spare else "")
        if name not in s.spare:
            print(
                f"add: {name or 'no spare backend'} cannot be added (spare: "
                f"{', '.join(s.spare) or 'none'}; a configured backend is brought back by "
                f"pool reset)"
            )
            return
        doc = {k: list(v) for k, v in s.control.items()}
        if name not in [a["name"] for a in doc.get("add", [])]:
            doc.setdefault("add", []).append(s.backend_entry(name))
        self.show_pool(s.change_pool(doc))

    def do_pool(self, line: str) -> None:
        """pool: the control document the LB was sent and each backend's state as the LB
        reports it. pool reset: back to the configured pool ({})."""
        s = self.session
        if line.strip() == "reset":
            self.show_pool(s.change_pool({}))
        elif line.strip():
            print("pool: pool or pool reset")
        else:
            self.show_pool(s.fresh_stats())

    def show_pool(self, stats: dict | None) -> None:
        s = self.session
        print(f"control file {s.control_path}: {json.dumps(s.control)}")
        if stats is None:
            print("  (the LB has not reported it: is it running? stats, log)")
        else:
            control = stats.get("control") or {}
            print(
                f"  the LB says: backends {(stats.get('lb') or {}).get('backends')}"
                + (
                    f"; last control error: {control['last_error']}"
                    if control.get("last_error")
                    else ""
                )
            )

    # --- the LB itself -------------------------------------------------------------------------
    def do_restart(self, _line: str) -> None:
        """restart: stop the LB, copy your files into its package again, start it; the
        topology, the backends and the pool's control file stay."""
        s = self.session
        try:
            s.restart_lb()
        except RuntimeError as exc:
            print(
                f"restart: {exc}; the end of its output:\n{s.lb_log_tail()}"
                "*** fix your file and type restart"
            )
            s.reported_exit = True
            return
        assert s.lb is not None  # restart_lb() started it
        print(
            f"LB restarted: pid {s.lb.proc.pid}"
            + (f", with {len(s.spec.refresh)} file(s) copied again" if s.spec.refresh else "")
        )


BANNER = """\
vnflab shell: {title}
  topology: {clients}, lb, {backends} (in the LB's pool){spare}; VIP {vip}:{port} (UDP and TCP)
  try:      c1 curl -s {vip}:{port}/    traffic    stats    flows 5    pcap lb 10
  vnflab:   traffic stats flows pcap drain fail add remove pool restart log (help CMD)
  mininet:  c1 ping -c1 b1, lb tcpdump -ni lb-eth0 -c 5, pingall, py c1.cmd('ip a'), xterm c1
  captures: {pcap_dir}
  leave with exit, Ctrl-D or Ctrl-C at the prompt: everything is removed"""


def main(argv: list[str]) -> int:
    from mininet.log import setLogLevel

    from testbed import sandbox

    def leave(signum, frame):  # PID 1 of the sandbox: no default action for these
        raise SystemExit(128 + signum)

    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, leave)
    sandbox.setup_inside()
    with open(argv[0]) as f:
        spec = ShellSpec(**json.load(f))
    print(f"vnflab shell: building the topology and starting the {spec.way} LB ...", flush=True)
    session = Session(spec)
    try:
        try:
            session.start_lb()
        except RuntimeError as exc:
            print(
                f"*** the LB did not start: {exc}; the end of its output:\n"
                f"{session.lb_log_tail()}*** fix your file and type restart",
                flush=True,
            )
            session.reported_exit = True
        cfg = session.bed.topo_cfg
        spare = f" + {', '.join(session.spare)} (spare, for add)" if session.spare else ""
        print(
            BANNER.format(
                title=spec.title or f"the reference {spec.way} LB",
                clients=", ".join(cfg.client_names()),
                backends=", ".join(session.pool),
                spare=spare,
                vip=cfg.vip,
                port=SERVICE_PORT,
                pcap_dir=spec.pcap_dir,
            ),
            flush=True,
        )
        setLogLevel("output")  # Testbed keeps Mininet quiet; the CLI prints at "output"
        LBShell(session)
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
