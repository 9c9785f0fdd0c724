"""The submission's LB program in the grading sandbox: started in a jail of its own, watched
from outside it (ready file, the jail's CPU time, busy counters on SIGUSR1), stopped as a whole.

``GradeBed`` is the experiment's ``Testbed`` with two differences: every LB it starts runs in a
fresh ``grader.jail.Jail`` (its own cgroup, PID/IPC/mount namespaces, an allow-listed root,
another user), and a hidden scenario may change the LB's config (pool, policy, table size). The
phases that use it are in ``grader.inside``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from grader.jail import CODE, OUT, RUN, Jail, JailError, python
from grader.sandbox_user import REFERENCE_USER, STUDENT_USER, user_ids
from grader.untrusted import is_regular, load_json_or, read_json_capped, read_text_tail
from testbed.experiment import ExperimentSpec, Testbed, log

CONTROL = "/vnflab/control"  # the control file's directory, inside the jail (read-only)


class StudentLB:
    """A running LB program (submission or reference) in its jail."""

    def __init__(self, jail: Jail, log_path: str, ready: bool, error: str | None):
        assert jail.proc is not None, "the jail's program started (Jail.popen)"
        self.jail, self.proc, self.log_path = jail, jail.proc, log_path
        self.stats_path = jail.out_path("stats.json")
        self.ready, self.error = ready, error

    @property
    def pid(self) -> int | None:
        """The LB's own pid (pid 1 of its PID namespace, as the grader sees it)."""
        return self.jail.lb_pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        pid = self.pid
        if pid is not None and self.alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def cpu(self) -> float:
        """Exact on-CPU seconds of everything in the LB's jail: its workers, any daemon it
        detached, children it reaped (the cgroup's cpuacct.usage: it never goes backwards)."""
        return self.jail.cpu_seconds()

    def stop(self, timeout: float) -> dict:
        """SIGTERM, then after ``timeout`` the jail's end (freeze, SIGKILL every task): facts on
        how it ended, and its stats. Nothing it started outlives this."""
        was_alive = self.alive()
        hung = False
        if was_alive:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                hung = True
        self.jail.cgroup.kill()
        self.proc.wait()
        # The stats file is the student's: read without following a link, capped, checked
        stats, problem = read_json_capped(self.stats_path)
        facts = {
            "alive_at_stop": was_alive,
            "hung": hung,
            "exit_code": self.proc.returncode,
            "stats": stats if isinstance(stats, dict) else {},
            "log_tail": self.log_tail(),
        }
        if problem and os.path.lexists(self.stats_path):
            facts["stats_problem"] = problem
        self.jail.destroy()
        return facts

    def busy_snapshot(self, timeout: float = 3.0) -> dict | None:
        """The LB's busy counters now: SIGUSR1 makes it rewrite its stats file."""
        try:
            os.unlink(self.stats_path)
        except FileNotFoundError:
            pass
        if not self.alive():
            return None
        self.signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = load_json_or(self.stats_path)
            if isinstance(stats, dict):
                busy = stats.get("busy")
                if not isinstance(busy, dict):
                    return None
                try:
                    return {k: int(busy[k]) for k in ("cycles", "rx_packets", "tsc_hz")}
                except (KeyError, TypeError, ValueError):
                    return None
            time.sleep(0.05)
        return None

    def log_tail(self, n: int = 25) -> str:
        lines = read_text_tail(self.log_path).splitlines(keepends=True)
        return "".join(lines[-n:])[-4000:]


class GradeBed(Testbed):
    """The Testbed, with LB programs started through the student jail and per-scenario configs."""

    def __init__(self, spec: ExperimentSpec, workdir: str, plan: dict):
        self.plan = plan
        self.overrides: dict = {}
        self.jails: list[Jail] = []
        super().__init__(spec, workdir)

    def lb_user(self, overlay: str) -> str:
        """Who an LB runs as: the reference's overlay as the reference's own user (a submission
        can never signal or ptrace the LB its cost is compared with), any other as the student."""
        return REFERENCE_USER if overlay == self.plan["overlay_ref"] else STUDENT_USER

    def close(self) -> None:
        try:
            super().close()
        finally:
            for jail in self.jails:
                jail.destroy()

    def lb_config(self) -> dict:
        cfg = super().lb_config()
        o = self.overrides
        if o.get("backends"):
            keep = set(o["backends"])
            cfg["lb"]["backends"] = [b for b in cfg["lb"]["backends"] if b["name"] in keep]
        for key in ("policy", "flow_capacity", "idle_timeout"):
            if key in o:
                cfg["lb"][key] = o[key]
        cfg["io"].update(o.get("io") or {})  # a graded path's io options (style, mode...)
        return cfg

    # The grader's own probes (captures, port pairs, the malformed-frame corpus) on CPU 0 with
    # OVS's PMD thread (which sleeps while idle): the poll-mode LB (EAL pins it to CPU 1) keeps
    # its core to itself, and its busy cycles measure its own work, not a probe preempting it.
    OTHERS_CPU = "0"

    def popen_off_lb_core(self, host: str, argv: list[str], log_name: str) -> subprocess.Popen:
        """``popen``, on CPU 0 in the DPDK way when ``host`` is not the LB."""
        if self.ovs is not None and host != "lb":
            argv = ["taskset", "-c", self.OTHERS_CPU, *argv]
        return self.popen(host, argv, log_name)

    # --- the DPDK way: what the student's LB process may touch -------------------------------
    @property
    def vhost_dir(self) -> str:
        """The vhost-user sockets' directory: the student's own (the LB is the vhost-user
        *server*: it creates the socket; OVS, root, connects to it as the client)."""
        assert self.ovs is not None, "the DPDK way only"
        return os.path.join(self.ovs.workdir, "vhost")

    @property
    def vhost_socket(self) -> str:
        return os.path.join(self.vhost_dir, f"lb{self.lb_generation}.sock")

    def lb_dpdk_dir(self, user: str) -> None:
        """The vhost-user socket dir, owned by the user whose LB starts next (bound into its
        jail read-write: the LB creates or connects to its socket there)."""
        uid, gid = user_ids(user)
        os.makedirs(self.vhost_dir, exist_ok=True)
        os.chown(self.vhost_dir, uid, gid)
        os.chmod(self.vhost_dir, 0o700)

    def _student_dpdk_access(self, user: str) -> None:
        """Before each DPDK LB process: its socket directory, and enough free huge pages that
        vnf.dpdk.init (which reserves more itself when fewer than twice its need are free: a
        root-only write the student cannot do) finds them free. Its huge pages are memfds
        (EAL --in-memory): nothing is written in hugetlbfs, it only reads the private mount."""
        self.lb_dpdk_dir(user)
        self._fresh_vhost_port()
        # The LB's MAC sits on the new port from the start: without a static entry the bridge
        # floods clients' frames for it to every backend until it has learned the MAC again
        # (and revalidated its flows), and the backends' captures would hold those copies.
        bridge = self.net["s1"].name
        assert self.ovs is not None, "the DPDK way only"
        try:
            self.ovs.appctl("fdb/add", bridge, self.vhost_port, "0", self.topo_cfg.host_mac("lb"))
        except Exception as exc:  # noqa: BLE001 - learning still works
            log(f"fdb/add for the LB's MAC failed: {exc}")

    def start_student_lb(
        self,
        tag: str,
        overlay: str,
        config: dict | None = None,
        control_file: str | None = None,
        **overrides,
    ) -> StudentLB:
        """The LB program in a fresh jail; ``config`` (the DPDK cost windows: a generator's vdev
        instead of OVS) replaces the topology's LB config; ``control_file``: the pool the control
        plane wants (the grader's file, bound read-only into the jail; re-read on SIGHUP).
        ``tag`` names only the grader's own files (the log): the jailed program sees neutral
        paths, never the phase."""
        self.overrides = overrides
        plan = self.plan
        user = self.lb_user(overlay)
        if self.ovs is not None and config is None:
            self._student_dpdk_access(user)
        if self.ovs is not None:
            # vnf.dpdk.init reserves more huge pages itself when fewer than twice its need are
            # free: a root-only write the student cannot do. Make them free now, with room for a
            # generator or a parallel grading starting meanwhile.
            from vnf.dpdk import hugepages

            for mb in (4 * self.LB_DPDK_MEM_MB + 64, self.LB_DPDK_MEM_MB + 16):
                try:  # generous if the kernel can, else just enough
                    hugepages.ensure_free(mb)
                    break
                except (OSError, hugepages.HugePagesError) as exc:
                    log(f"huge pages for {mb} MiB: {exc}")
        limits = dict(plan["limits"])
        if self.ovs is not None:  # EAL's memory, and room for its own slack
            limits.setdefault("hugepages_mb", 2 * self.LB_DPDK_MEM_MB)
        binds = {CODE: overlay}
        if control_file:  # the grader rewrites it: bind its directory
            binds[CONTROL] = os.path.dirname(control_file)
        jail = Jail(
            plan["grading_id"],
            self.workdir,
            user=user,
            limits=limits,
            caps=tuple(plan["caps"]),
            binds=binds,
            rw_binds={self.vhost_dir: self.vhost_dir} if self.ovs is not None else {},
            hugepages=self.ovs is not None,
            netns_pid=self.net["lb"].pid,
            files={"config.json": json.dumps(config or self.lb_config())},
        )
        self.jails.append(jail)
        argv = [
            python(),
            "-m",
            f"vnf.ways.{plan['way']}_lb",
            "--config",
            f"{RUN}/config.json",
            "--ready-file",
            f"{OUT}/ready",
            "--stats-file",
            f"{OUT}/stats.json",
        ]
        if control_file:
            argv += ["--control-file", f"{CONTROL}/{os.path.basename(control_file)}"]
        log_path = os.path.join(self.workdir, f"lb-{tag}.log")
        with open(log_path, "ab") as out:
            jail.build()
            proc = jail.popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        ready = jail.out_path("ready")
        deadline = time.monotonic() + float(plan["limits"].get("ready_timeout_s", 20))
        error = None
        lb = StudentLB(jail, log_path, False, None)
        while True:
            if is_regular(ready):  # a link or a FIFO is not a ready file
                break
            if proc.poll() is not None:
                try:
                    jail.check_setup(lb.log_tail())
                except JailError:
                    jail.destroy()
                    raise
                error = f"exited with code {proc.returncode} before it was ready"
                break
            if time.monotonic() > deadline:
                error = (
                    f"not ready within {plan['limits'].get('ready_timeout_s', 20)} s "
                    "(no ready file): killed"
                )
                jail.cgroup.kill()
                proc.wait()
                break
            time.sleep(0.05)
        if error is None and self.ovs is not None and config is None:
            try:  # OVS (the client) connected: link up
                self.wait_vhost_up(float(plan["limits"].get("link_timeout_s", 30)))
            except Exception as exc:  # noqa: BLE001 - graded as not started
                error = f"its vhost-user port did not come up ({exc})"
                jail.cgroup.kill()
                proc.wait()
        lb.ready, lb.error = error is None, error
        return lb
