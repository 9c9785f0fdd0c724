"""What the scenarios share: a Mininet network in the sandbox, backend servers, LB processes,
traffic drivers, and per-flow facts from the backends' records.

Everything here runs *inside* a sandbox (``vnflab.scenarios.runner``): processes and interfaces
die with it. Processes, the backend servers and the driver are the project's own
(``topologies.servers``, ``grader.traffic``); the LB is ``vnflab.scenarios.lbctl`` (the AF_PACKET
way plus a health checker and a control file) unless a scenario says otherwise.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from vnflab.experiment import RunningLB, _read_json, _stop, _wait_for_file, log

SERVICE_PORT = 8080          # HTTP and UDP on the same port, as in vnflab.experiment
VIP = "10.0.0.100"


class Checks:
    """The assertions of a scenario: each has a name, a verdict and the figures behind it."""

    def __init__(self):
        self.items: list[dict] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        log(f"check {'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(c["ok"] for c in self.items)


@dataclass
class Driver:
    proc: subprocess.Popen
    out: str
    host: str


class Bed:
    """A started Mininet network plus the processes a scenario starts on its hosts."""

    def __init__(self, workdir: str, topo, switch=None, controller=None, **mn_kwargs):
        from mininet.link import Link
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge
        setLogLevel("error")
        Mininet.inited = True      # skip fixLimits(): its sysctls fail in a netns, harmlessly
        self.workdir = workdir
        self.net = Mininet(topo=topo, switch=switch or LinuxBridge, controller=controller,
                           link=Link, autoSetMacs=False, **mn_kwargs)
        self.procs: list[subprocess.Popen] = []
        self.backends: dict[str, subprocess.Popen] = {}
        self.net.start()

    def __getitem__(self, host: str):
        return self.net[host]

    def cmd(self, host: str, command: str) -> str:
        return self.net[host].cmd(command)

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def popen(self, host: str, argv: list[str], log_name: str) -> subprocess.Popen:
        out = open(self.path(f"{log_name}.log"), "ab")
        proc = self.net[host].popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def offloads_off(self) -> None:
        """Checksum/segmentation offloads would hand AF_PACKET partial checksums (and a netdev
        OVS bridge forwards them as bad ones)."""
        for host in self.net.hosts:
            for intf in host.intfNames():
                if intf != "lo":
                    host.cmd(f"ethtool -K {intf} tx off rx off gso off tso off gro off "
                             f">/dev/null 2>&1")

    # --- backends ------------------------------------------------------------------------------
    def start_backends(self, names: list[str]) -> None:
        started = {}
        for b in names:
            for suffix in (".json", ".ready"):
                try:
                    os.unlink(self.path(b + suffix))
                except FileNotFoundError:
                    pass
            ready = self.path(f"{b}.ready")
            started[b] = (self.popen(b, [sys.executable, "-m", "topologies.servers", "--name", b,
                                         "--bind", "0.0.0.0", "--http-port", str(SERVICE_PORT),
                                         "--udp-port", str(SERVICE_PORT),
                                         "--record", self.path(f"{b}.json"),
                                         "--ready-file", ready], f"server-{b}"), ready)
        for b, (proc, ready) in started.items():
            _wait_for_file(ready, proc, 30, f"backend server {b}")
            self.backends[b] = proc

    def stop_backend(self, name: str) -> None:
        """The server process exits (SIGTERM: it writes its final record first)."""
        _stop(self.backends[name])

    def restart_backends(self) -> None:
        names = list(self.backends)
        for proc in self.backends.values():
            _stop(proc)
        self.start_backends(names)

    def backend_records(self) -> list[dict]:
        """Every backend's record: live ones are asked to write it now (SIGUSR1)."""
        for proc in self.backends.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR1)
        time.sleep(0.4)
        return [r for r in (_read_json(self.path(f"{b}.json")) for b in self.backends) if r]

    # --- load balancers ----------------------------------------------------------------------
    def start_lb(self, host: str, config: dict, tag: str,
                 module: str = "vnflab.scenarios.lbctl") -> RunningLB:
        path = self.path(f"lb-{tag}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        ready, stats = self.path(f"lb-{tag}.ready"), self.path(f"lb-{tag}-stats.json")
        for p in (ready, stats):
            if os.path.exists(p):
                os.unlink(p)
        proc = self.popen(host, [sys.executable, "-m", module, "--config", path,
                                 "--ready-file", ready, "--stats-file", stats], f"lb-{tag}")
        _wait_for_file(ready, proc, 30, f"load balancer {tag}")
        return RunningLB(proc, stats, self.path(f"lb-{tag}.log"))

    # --- traffic -----------------------------------------------------------------------------
    def start_driver(self, host: str, tag: str, client_id: int, flows: int, packets: int,
                     rate: float, http_conns: int = 0, vip: str = VIP) -> Driver:
        """``grader.traffic`` on ``host``: ``flows`` UDP flows of ``packets`` datagrams, sent in
        rounds (packet k of every flow, then k+1 ...) at ``rate`` packets/s. Flow ids start at
        ``client_id * 1_000_000``."""
        out = self.path(f"{tag}-{host}.json")
        argv = [sys.executable, "-m", "grader.traffic", "--vip", vip,
                "--udp-port", str(SERVICE_PORT), "--http-port", str(SERVICE_PORT),
                "--client-id", str(client_id), "--udp-flows", str(flows),
                "--packets-per-flow", str(packets), "--rate", str(rate),
                "--http-conns", str(http_conns), "--http-timeout", "2", "--drain", "0.5",
                "--out", out]
        return Driver(self.popen(host, argv, f"{tag}-{host}"), out, host)

    def wait_drivers(self, drivers: list[Driver], timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        records = []
        for d in drivers:
            try:
                d.proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
                log(f"traffic driver on {d.host} timed out")
            rec = _read_json(d.out)
            if rec is None:
                raise RuntimeError(f"traffic driver on {d.host} wrote no record "
                                   f"(exit {d.proc.returncode})")
            records.append(rec)
        return records

    def close(self) -> None:
        for proc in self.procs:
            _stop(proc, timeout=2)
        self.net.stop()


def setup_dsr(bed: Bed, backends: list[str], vip: str = VIP) -> None:
    """Direct server return: every backend owns the VIP on loopback but never answers ARP for
    it (nor uses it as an ARP source), so the LB (or the network) decides who gets a packet."""
    for b in backends:
        bed.cmd(b, f"ip addr add {vip}/32 dev lo")
        bed.cmd(b, "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")


def lb_config(backends: list[tuple[str, str, str]], iface: str, mac: str, ip: str,
              policy: str = "maglev", subnet: str | None = "10.0.0.0/24", lb: dict | None = None,
              io: dict | None = None) -> dict:
    """LB.json of the way contract; ``backends`` as (name, ip, mac)."""
    return {"lb": {"vip": VIP, "port": SERVICE_PORT, "protos": ["udp", "tcp"], "subnet": subnet,
                   "policy": policy,
                   "backends": [{"name": n, "ip": i, "mac": m, "port": SERVICE_PORT}
                                for n, i, m in backends], **(lb or {})},
            "io": {"iface": iface, "mac": mac, "ip": ip, **(io or {})}}


def live_stats(lb: RunningLB, timeout: float = 3.0) -> dict:
    """Ask a running LB for its counters now (SIGUSR1) and read them."""
    before = os.path.getmtime(lb.stats_path) if os.path.exists(lb.stats_path) else 0
    lb.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(lb.stats_path) and os.path.getmtime(lb.stats_path) > before:
            stats = _read_json(lb.stats_path)
            if stats:
                return stats
        time.sleep(0.05)
    return _read_json(lb.stats_path, {}) or {}


def flow_facts(backend_records: list[dict], proto: str = "udp") -> dict[int, dict[str, dict]]:
    """flow id -> {backend: {"packets", "min_seq", "max_seq"}} for the flows of ``proto``."""
    out: dict[int, dict[str, dict]] = {}
    for rec in backend_records:
        for f in rec.get("flows", []):
            if f.get("proto") != proto:
                continue
            out.setdefault(int(f["flow_id"]), {})[rec["backend"]] = {
                "packets": f["packets"], "min_seq": f["min_seq"], "max_seq": f["max_seq"]}
    return out


def first_backend(where: dict[str, dict]) -> str:
    """The backend that got the flow's earliest packet."""
    return min(where, key=lambda b: where[b]["min_seq"])


def pct(n: float, d: float) -> str:
    return "-" if not d else f"{100.0 * n / d:.1f}%"
