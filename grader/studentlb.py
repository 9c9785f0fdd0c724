"""The submission's LB program in the grading sandbox: started in the student's jail, watched
from outside its process (ready file, CPU time, busy counters on SIGUSR1), stopped.

``GradeBed`` is the experiment's ``Testbed`` with two differences: every LB it starts runs
through ``grader.sandbox_user.student_command`` (another user, capped, blind to the instructor
tree), and a hidden scenario may change the LB's config (pool, policy, table size). The phases
that use it are in ``grader.inside``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from testbed.experiment import ExperimentSpec, Testbed, log, read_json
from testbed.procfs import cpu_times

from grader.sandbox_user import student_command, student_ids


class StudentLB:
    """A running LB program (submission or reference) in the student's jail."""

    def __init__(self, proc: subprocess.Popen, stats_path: str, log_path: str, ready: bool,
                 error: str | None):
        self.proc, self.stats_path, self.log_path = proc, stats_path, log_path
        self.ready, self.error = ready, error

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        """Exact on-CPU seconds of the LB and its workers (tick counts are 10 ms steps)."""
        return cpu_times(self.proc.pid).exact

    def stop(self, timeout: float) -> dict:
        """SIGTERM, then SIGKILL after ``timeout``: facts on how it ended, and its stats."""
        was_alive = self.alive()
        hung = False
        if was_alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait()
        stats = read_json(self.stats_path, {}) or {}
        return {"alive_at_stop": was_alive, "hung": hung, "exit_code": self.proc.returncode,
                "stats": stats if isinstance(stats, dict) else {}, "log_tail": self.log_tail()}

    def busy_snapshot(self, timeout: float = 3.0) -> dict | None:
        """The LB's busy counters now: SIGUSR1 makes it rewrite its stats file."""
        try:
            os.unlink(self.stats_path)
        except FileNotFoundError:
            pass
        if not self.alive():
            return None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = read_json(self.stats_path)
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
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])[-4000:]
        except OSError:
            return ""


class GradeBed(Testbed):
    """The Testbed, with LB programs started through the student jail and per-scenario configs."""

    def __init__(self, spec: ExperimentSpec, workdir: str, plan: dict):
        self.plan = plan
        self.overrides: dict = {}
        super().__init__(spec, workdir)

    def lb_config(self) -> dict:
        cfg = super().lb_config()
        o = self.overrides
        if o.get("backends"):
            keep = set(o["backends"])
            cfg["lb"]["backends"] = [b for b in cfg["lb"]["backends"] if b["name"] in keep]
        for key in ("policy", "flow_capacity", "idle_timeout"):
            if key in o:
                cfg["lb"][key] = o[key]
        cfg["io"].update(o.get("io") or {})       # a graded path's io options (style, mode...)
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
        return os.path.join(self.ovs.workdir, "vhost")

    @property
    def vhost_socket(self) -> str:
        return os.path.join(self.vhost_dir, f"lb{self.lb_generation}.sock")

    def _student_dpdk_dir(self) -> None:
        uid, gid, _ = student_ids()
        os.makedirs(self.vhost_dir, exist_ok=True)
        os.chown(self.vhost_dir, uid, gid)
        os.chmod(self.vhost_dir, 0o700)

    def _student_dpdk_access(self) -> None:
        """Before each DPDK LB process: its socket directory, and enough free huge pages that
        vnf.dpdk.init (which reserves more itself when fewer than twice its need are free: a
        root-only write the student cannot do) finds them free. Its huge pages are memfds
        (EAL --in-memory): nothing is written in hugetlbfs, it only reads the private mount."""
        self._student_dpdk_dir()
        self._fresh_vhost_port()
        # The LB's MAC sits on the new port from the start: without a static entry the bridge
        # floods clients' frames for it to every backend until it has learned the MAC again
        # (and revalidated its flows), and the backends' captures would hold those copies.
        bridge = self.net["s1"].name
        try:
            self.ovs.appctl("fdb/add", bridge, self.vhost_port, "0", self.topo_cfg.host_mac("lb"))
        except Exception as exc:                  # noqa: BLE001 - learning still works
            log(f"fdb/add for the LB's MAC failed: {exc}")

    def start_student_lb(self, tag: str, overlay: str, config: dict | None = None,
                         **overrides) -> StudentLB:
        """The LB program in the jail; ``config`` (the DPDK cost windows: a generator's vdev
        instead of OVS) replaces the topology's LB config."""
        self.overrides = overrides
        plan = self.plan
        if self.ovs is not None and config is None:
            self._student_dpdk_access()
        if self.ovs is not None:
            # vnf.dpdk.init reserves more huge pages itself when fewer than twice its need are
            # free: a root-only write the student cannot do. Make them free now, with room for a
            # generator or a parallel grading starting meanwhile.
            from vnf.dpdk import hugepages
            for mb in (4 * self.LB_DPDK_MEM_MB + 64, self.LB_DPDK_MEM_MB + 16):
                try:                              # generous if the kernel can, else just enough
                    hugepages.ensure_free(mb)
                    break
                except (OSError, hugepages.HugePagesError) as exc:
                    log(f"huge pages for {mb} MiB: {exc}")
        cfg_path = os.path.join(self.workdir, f"lb-{tag}.json")
        with open(cfg_path, "w") as f:
            json.dump(config or self.lb_config(), f)
        os.chmod(cfg_path, 0o644)
        run = plan["student_dir"]
        ready = os.path.join(run, f"lb-{tag}.ready")
        stats = os.path.join(run, f"lb-{tag}-stats.json")
        argv = [sys.executable, "-m", f"vnf.ways.{plan['way']}_lb", "--config", cfg_path,
                "--ready-file", ready, "--stats-file", stats]
        cmd = student_command(argv, overlay=overlay, caps=tuple(plan["caps"]),
                              limits=plan["limits"], hide=plan["hide"], cwd=run)
        proc = self.popen("lb", cmd, f"lb-{tag}")
        log_path = os.path.join(self.workdir, f"lb-{tag}.log")
        deadline = time.monotonic() + float(plan["limits"].get("ready_timeout_s", 20))
        error = None
        while True:
            if os.path.exists(ready):
                break
            if proc.poll() is not None:
                error = f"exited with code {proc.returncode} before it was ready"
                break
            if time.monotonic() > deadline:
                error = (f"not ready within {plan['limits'].get('ready_timeout_s', 20)} s "
                         "(no ready file): killed")
                proc.kill()
                proc.wait()
                break
            time.sleep(0.05)
        if error is None and self.ovs is not None and config is None:
            try:                                  # OVS (the client) connected: link up
                self.wait_vhost_up(float(plan["limits"].get("link_timeout_s", 30)))
            except Exception as exc:              # noqa: BLE001 - graded as not started
                error = f"its vhost-user port did not come up ({exc})"
                proc.kill()
                proc.wait()
        return StudentLB(proc, stats, log_path, error is None, error)
