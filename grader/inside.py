"""The grading run inside its sandbox: one topology, the submission's LB phase after phase.

``python -m grader.inside PLAN.json FACTS.json`` runs in a fresh network + PID + mount namespace
(``vnflab.sandbox``), started by ``grader.grade``. It only *gathers facts* (what the submission
did, measured from outside its process) and rewrites FACTS.json after every phase, so a grading
that runs out of time still leaves what it measured. Scores are computed by ``grader.grade``
after the sandbox has exited; the submission's process never sees the plan, the facts or the
results (it runs as another user, see ``grader.sandbox_user``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from vnflab.experiment import (SERVICE_PORT, ExperimentSpec, Testbed, _read_json, cpu_seconds, log)

from grader.sandbox_user import student_command


def _write(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


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
        u, s = cpu_seconds(self.proc.pid)
        return u + s

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
        stats = _read_json(self.stats_path, {}) or {}
        return {"alive_at_stop": was_alive, "hung": hung, "exit_code": self.proc.returncode,
                "stats": stats if isinstance(stats, dict) else {}, "log_tail": self.log_tail()}

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
        return cfg

    def start_student_lb(self, tag: str, overlay: str, **overrides) -> StudentLB:
        self.overrides = overrides
        plan = self.plan
        cfg_path = os.path.join(self.workdir, f"lb-{tag}.json")
        with open(cfg_path, "w") as f:
            json.dump(self.lb_config(), f)
        os.chmod(cfg_path, 0o644)
        run = plan["student_dir"]
        ready = os.path.join(run, f"lb-{tag}.ready")
        stats = os.path.join(run, f"lb-{tag}-stats.json")
        argv = [sys.executable, "-m", f"vnf.ways.{plan['way']}_lb", "--config", cfg_path,
                "--ready-file", ready, "--stats-file", stats]
        cmd = student_command(argv, overlay=overlay, caps=tuple(plan["caps"]),
                              limits=plan["limits"], hide=plan["hide"], cwd=run)
        proc = self._popen("lb", cmd, f"lb-{tag}")
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
        return StudentLB(proc, stats, log_path, error is None, error)


class Grading:
    def __init__(self, plan: dict, facts_path: str):
        self.plan, self.facts_path = plan, facts_path
        self.facts: dict = {"phases_done": [], "started": time.time()}
        self.stop_timeout = float(plan["limits"].get("stop_timeout_s", 5))
        self._last = time.monotonic()

    def save(self, phase: str | None = None) -> None:
        now = time.monotonic()
        if phase:
            self.facts["phases_done"].append(phase)
            self.facts.setdefault("timings", {})[phase] = round(now - self._last, 2)
        self._last = now
        _write(self.facts_path, self.facts)

    # --- phases --------------------------------------------------------------------------------
    def unit(self) -> None:
        u = self.plan.get("unit")
        if not u:
            return
        argv = [sys.executable, "-m", "grader.unitcheck", "--checks", u["checks"],
                "--module", u["module"], "--file", u["file"]]
        cmd = student_command(argv, overlay=self.plan["overlay_sub"], limits=self.plan["limits"],
                              hide=self.plan["hide"], cwd=self.plan["student_dir"])
        nonce = os.urandom(8).hex()
        try:
            r = subprocess.run(cmd, input=nonce + "\n", capture_output=True, text=True,
                               timeout=float(u.get("timeout_s", 60)))
            out = None
            for line in r.stdout.splitlines():
                if line.startswith(nonce + " "):
                    out = json.loads(line[len(nonce) + 1:])
            if out is None:
                out = {"error": f"the unit checks did not finish (exit {r.returncode})",
                       "stderr": r.stderr[-3000:]}
        except subprocess.TimeoutExpired:
            out = {"error": f"the unit checks did not finish within {u.get('timeout_s', 60)} s "
                            "(an endless loop?): stopped"}
        self.facts["unit"] = out
        self.save("unit")

    def run_network(self) -> None:
        plan = self.plan
        topo = plan["topology"]
        spec = ExperimentSpec(way=plan["way"], clients=topo["clients"], backends=topo["backends"],
                              policy=plan["traffic"].get("policy", "maglev"))
        log(f"grading lab {plan['lab']}: topology {topo}")
        bed = GradeBed(spec, plan["workdir"], plan)
        self.bed = bed
        try:
            if not self.smoke():
                self.save("network-skipped")
                return
            tests = set(plan["tests"])
            for name, fn in (("affinity", self.affinity), ("key", self.key),
                             ("robustness", self.robustness), ("cost", self.cost)):
                if name in tests or (name == "affinity" and tests & {"balance", "correctness"}):
                    log(f"phase {name}")
                    fn()
                    self.save(name)
            for scenario in plan.get("hidden", []):
                log(f"hidden scenario {scenario['id']}")
                self.scenario(scenario)
                self.save(f"hidden:{scenario['id']}")
        finally:
            bed.close()

    def _drive(self, tag, flows, ppf, rate, http, clients=None, timeout=None):
        est = flows * ppf / max(1, rate)
        return self.bed.drive(tag, flows, ppf, rate, http, clients=clients,
                              timeout=timeout or est * 3 + 40)

    def _check(self, client_recs) -> dict:
        from grader.checker import check
        return check(self.bed.backend_records(), client_recs).to_json()

    def smoke(self) -> bool:
        bed = self.bed
        lb = bed.start_student_lb("smoke", self.plan["overlay_sub"])
        f = {"ready": lb.ready, "error": lb.error}
        if lb.ready:
            recs = self._drive("smoke", 4, 3, 200, 2, timeout=30)
            f["alive_after"] = lb.alive()
            f["check"] = self._check(recs)
        f["stop"] = lb.stop(self.stop_timeout)
        c = f.get("check") or {}
        f["forwards"] = bool(lb.ready and c.get("flows", {}).get("seen", 0) >= 1)
        self.facts["smoke"] = f
        self.save("smoke")
        bed.restart_backends()
        return f["forwards"]

    def affinity(self) -> None:
        bed, t = self.bed, self.plan["traffic"]
        cfg = bed.topo_cfg
        caps = []
        for b in cfg.backend_names():
            out = os.path.join(bed.workdir, f"capture-{b}.json")
            proc = bed._popen(b, [sys.executable, "-m", "grader.probe", "capture", "--iface",
                                  f"{b}-eth0", "--port", str(SERVICE_PORT), "--seconds", "600",
                                  "--max", "120", "--ready-file", out + ".ready", "--out", out],
                              f"capture-{b}")
            caps.append((b, proc, out))
        for b, proc, out in caps:
            for _ in range(100):
                if os.path.exists(out + ".ready") or proc.poll() is not None:
                    break
                time.sleep(0.05)
        lb = bed.start_student_lb("affinity", self.plan["overlay_sub"])
        f = {"ready": lb.ready, "error": lb.error, "traffic": t}
        if lb.ready:
            recs = self._drive("affinity", t["udp_flows"], t["packets_per_flow"], t["rate_pps"],
                               t["http_conns"])
            f["alive_after"] = lb.alive()
            f["check"] = self._check(recs)
        f["stop"] = lb.stop(self.stop_timeout)
        captures = {}
        for b, proc, out in caps:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
            captures[b] = (_read_json(out, {}) or {}).get("frames", [])
        f["captures"] = captures
        self.facts["affinity"] = f
        bed.restart_backends()

    def key(self) -> None:
        from vnf.backends import Backend, BackendPool
        from vnf.packet import FiveTuple, ip_to_int
        bed = self.bed
        cfg = bed.topo_cfg
        lb = bed.start_student_lb("key", self.plan["overlay_sub"], policy="maglev")
        f = {"ready": lb.ready, "error": lb.error}
        client = cfg.client_names()[0]
        if lb.ready:
            out = os.path.join(bed.workdir, "portpairs.json")
            proc = bed._popen(client, [sys.executable, "-m", "grader.probe", "portpairs",
                                       "--vip", cfg.vip, "--port", str(SERVICE_PORT),
                                       "--ports", "41000-41023", "--flow-id-base", "9000000",
                                       "--client-id", "90", "--out", out], "portpairs")
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
            probe = _read_json(out, {}) or {}
            f["alive_after"] = lb.alive()
            records = bed.backend_records()
            seen: dict[str, list] = {}
            for rec in records:
                for fl in rec.get("flows", []):
                    seen.setdefault(str(fl["flow_id"]), []).append(rec.get("backend"))
            backends = [Backend(name=b, ip=cfg.host_ip(b), mac=cfg.host_mac(b), port=SERVICE_PORT)
                        for b in cfg.backend_names()]
            pool = BackendPool(backends, "maglev", 65537)
            rows = []
            for fid, (proto, port) in sorted(probe.get("ports", {}).items()):
                flow = FiveTuple(ip_to_int(cfg.host_ip(client)), ip_to_int(cfg.vip), port,
                                 SERVICE_PORT, 17 if proto == "udp" else 6)
                rows.append({"flow_id": int(fid), "proto": proto, "src_port": port,
                             "flow": str(flow), "expected": pool.choose(flow).name,
                             "got": sorted(set(seen.get(fid, [])))})
            f["rows"] = rows
            f["check"] = self._check([{k: v for k, v in probe.items() if k != "ports"}]) if probe else None
        f["stop"] = lb.stop(self.stop_timeout)
        self.facts["key"] = f
        bed.restart_backends()

    def robustness(self) -> None:
        bed = self.bed
        cfg = bed.topo_cfg
        lb = bed.start_student_lb("robust", self.plan["overlay_sub"])
        f = {"ready": lb.ready, "error": lb.error}
        if lb.ready:
            client = cfg.client_names()[0]
            out = os.path.join(bed.workdir, "robust.json")
            proc = bed._popen(client, [sys.executable, "-m", "grader.probe", "robust",
                                       "--iface", f"{client}-eth0", "--dst-mac", cfg.host_mac("lb"),
                                       "--src-mac", cfg.host_mac(client),
                                       "--src-ip", cfg.host_ip(client), "--vip", cfg.vip,
                                       "--port", str(SERVICE_PORT), "--lb-pid", str(lb.pid),
                                       "--fuzz", str(self.plan.get("fuzz_frames", 2000)),
                                       "--out", out], "robust")
            try:
                proc.wait(180)
            except subprocess.TimeoutExpired:
                proc.kill()
            f["probe"] = _read_json(out, {}) or {}
            time.sleep(0.3)
            f["alive_after_corpus"] = lb.alive()
            if f["alive_after_corpus"]:
                bed.restart_backends()
                recs = self._drive("after-corpus", 20, 3, 500, 4, timeout=40)
                f["alive_after"] = lb.alive()
                f["check"] = self._check(recs)
        f["stop"] = lb.stop(self.stop_timeout)
        self.facts["robustness"] = f
        bed.restart_backends()

    def _cost_window(self, tag: str, overlay: str, c: dict) -> dict:
        bed = self.bed
        bed.restart_backends()
        lb = bed.start_student_lb(tag, overlay)
        w = {"ready": lb.ready, "error": lb.error}
        if lb.ready:
            flows = 64
            per_flow = max(1, int(c["rate_pps"] * c["seconds"]) // flows)
            time.sleep(0.2)
            c0 = lb.cpu()
            t0 = time.monotonic()
            recs = self._drive(tag, flows, per_flow, int(c["rate_pps"]), 0,
                               clients=[bed.topo_cfg.client_names()[0]],
                               timeout=c["seconds"] * 4 + 30)
            cpu = lb.cpu() - c0
            w["wall_s"] = round(time.monotonic() - t0, 3)
            chk = self._check(recs)
            fwd = chk["lost"]["udp_arrived"]
            if self.plan["way"] == "socket":
                fwd += chk["lost"]["replies_received"]
            w.update(cpu_s=round(cpu, 4), forwarded=fwd, split=chk["split_flows"],
                     ns_per_packet=round(cpu / fwd * 1e9, 1) if fwd else None)
        w["stop"] = {k: v for k, v in lb.stop(self.stop_timeout).items() if k != "stats"}
        return w

    def cost(self) -> None:
        c = self.plan["cost"]
        windows = []
        for r in range(int(c.get("rounds", 1))):
            for who, overlay in (("reference", self.plan["overlay_ref"]),
                                 ("submission", self.plan["overlay_sub"])):
                w = self._cost_window(f"cost-{who}-{r}", overlay, c)
                w["who"] = who
                windows.append(w)
        self.facts["cost"] = {"windows": windows, "rate_pps": c["rate_pps"], "seconds": c["seconds"]}

    def scenario(self, s: dict) -> None:
        bed = self.bed
        bed.restart_backends()
        over = {k: s[k] for k in ("policy", "flow_capacity", "backends", "idle_timeout") if k in s}
        lb = bed.start_student_lb(f"hidden-{s['id']}", self.plan["overlay_sub"], **over)
        f = {"ready": lb.ready, "error": lb.error}
        if lb.ready:
            recs = self._drive(f"hidden-{s['id']}", int(s.get("udp_flows", 300)),
                               int(s.get("packets_per_flow", 3)), int(s.get("rate_pps", 3000)),
                               int(s.get("http_conns", 10)))
            f["alive_after"] = lb.alive()
            f["check"] = self._check(recs)
        f["stop"] = lb.stop(self.stop_timeout)
        self.facts.setdefault("hidden", {})[s["id"]] = f


def main(argv: list[str]) -> int:
    from vnflab import sandbox
    plan_path, facts_path = argv
    sandbox.setup_inside()
    with open(plan_path) as f:
        plan = json.load(f)
    g = Grading(plan, facts_path)
    g.save()
    g.unit()
    try:
        g.run_network()
    except Exception as exc:                       # noqa: BLE001 - recorded, graded as not run
        import traceback
        g.facts["grader_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
    g.facts["finished"] = time.time()
    g.save("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
