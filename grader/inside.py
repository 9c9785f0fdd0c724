"""The grading run inside its sandbox: one topology, the submission's LB phase after phase.

``python -m grader.inside PLAN.json FACTS.json`` runs in a fresh network + PID + mount namespace
(``testbed.sandbox``), started by ``grader.grade``. It only *gathers facts* (what the submission
did, measured from outside its process) and rewrites FACTS.json after every phase, so a grading
that runs out of time still leaves what it measured. Scores are computed by ``grader.scoring``
after the sandbox has exited; the submission's process never sees the plan, the facts or the
results (it runs in a jail, see ``grader.jail``; the LB it grades is started and stopped by
``grader.studentlb``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from grader import unitserve
from grader.jail import CODE, Jail, python
from grader.pcaps import finish_affinity_capture, start_affinity_capture
from grader.pool_phase import run_pool_changes
from grader.sandbox_user import STUDENT_USER, user_ids
from grader.studentlb import GradeBed
from grader.untrusted import chown_own_socket
from testbed.experiment import ExperimentSpec, forget_poisoned_neighbours, log, read_json
from testbed.probe import JUNK_SRC_IP, MIXED_MARKER
from vnf.addresses import SERVICE_PORT
from vnf.jsonfile import write_json_atomic

UNITSERVE = unitserve.__file__  # the servant, bound into the unit checks' jails


class Grading:
    """The phases of one grading, in order (``main``); each adds its facts to FACTS.json."""

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
        write_json_atomic(self.facts_path, self.facts, indent=1)

    # --- phases --------------------------------------------------------------------------------
    def unit(self) -> None:
        """The lab's unit checks, judged here: the student's module runs in the jail and only
        answers calls (``grader.unitcheck``)."""
        from grader.unitcheck import run_unit_checks

        u = self.plan.get("unit")
        if not u:
            return
        # The harness runs on the grader's side (grader.unitcheck: it holds the expected
        # answers); the student's module is imported by grader.unitserve in a jail of its own
        # (a fresh one whenever a check lost it), which sees the overlay and that file only.
        plan, sub = self.plan, self.plan["overlay_sub"]
        inside = {
            sys.executable: python(),
            UNITSERVE: "/vnflab/harness/unitserve.py",
            u["file"]: CODE + "/" + os.path.relpath(u["file"], sub),
        }
        jails: list[Jail] = []

        def jailed(argv: list[str]) -> list[str]:
            jail = Jail(
                plan["grading_id"],
                plan["workdir"],
                user=STUDENT_USER,
                limits=plan["limits"],
                binds={CODE: sub, "/vnflab/harness/unitserve.py": UNITSERVE},
            )
            jails.append(jail)
            jail.build()
            return jail.command([inside.get(a, a) for a in argv])

        try:
            self.facts["unit"] = run_unit_checks(u, jailed)
        except Exception as exc:  # noqa: BLE001 - the grader's own fault
            self.facts["unit"] = {
                "error": f"grader error in the unit checks: {type(exc).__name__}: {exc}"
            }
        finally:
            for jail in jails:
                jail.destroy()
        self.save("unit")

    def run_network(self) -> None:
        plan = self.plan
        topo = plan["topology"]
        spec = ExperimentSpec(
            way=plan["way"],
            clients=topo["clients"],
            backends=topo["backends"],
            policy=plan["traffic"].get("policy", "maglev"),
        )
        log(f"grading lab {plan['lab']}: topology {topo}")
        bed = GradeBed(spec, plan["workdir"], plan)
        self.bed = bed
        try:
            if not self.smoke():
                self.save("network-skipped")
                return
            tests = set(plan["tests"])
            for name, fn in (
                ("affinity", self.affinity),
                ("paths", self.paths),
                ("pool_changes", self.pool_changes),
                ("key", self.key),
                ("robustness", self.robustness),
            ):
                if name in tests or (name == "affinity" and tests & {"balance", "correctness"}):
                    log(f"phase {name}")
                    fn()
                    self.save(name)
            for scenario in plan.get("hidden", []):
                log(f"hidden scenario {scenario['id']}")
                self.scenario(scenario)
                self.save(f"hidden:{scenario['id']}")
            if "cost" in tests:  # last: its sink drops all the LB sends
                log("phase cost")
                self.cost()
                self.save("cost")
        finally:
            bed.close()

    def _drive(self, tag, flows, ppf, rate, http, clients=None, timeout=None):
        est = flows * ppf / max(1, rate)
        return self.bed.drive(
            tag, flows, ppf, rate, http, clients=clients, timeout=timeout or est * 3 + 40
        )

    def _check(self, client_recs) -> dict:
        from testbed.checker import check

        return check(self.bed.backend_records(), client_recs).to_json()

    def smoke(self) -> bool:
        bed = self.bed
        lb = bed.start_student_lb("smoke", self.plan["overlay_sub"])
        f: dict[str, Any] = {"ready": lb.ready, "error": lb.error}
        udp_seen = 0
        if lb.ready:
            recs = self._drive("smoke", 4, 3, 200, 2, timeout=30)
            f["alive_after"] = lb.alive()
            f["check"] = self._check(recs)
            udp_seen = _udp_flows_seen(f["check"])
            if not udp_seen and f["alive_after"]:
                # A live LB that passed nothing: one more try before it costs the test (and
                # skips the rest). On a loaded machine the first datagrams can be lost outside
                # the LB (the switch still learning, a PMD not yet polling its new port);
                # a loop that is really broken fails the second time too.
                log("smoke: no UDP flow got through a live LB; driving the first flows again")
                recs += self._drive("smoke-again", 4, 3, 200, 0, timeout=30)
                f["alive_after"] = lb.alive()
                f["check"] = self._check(recs)
                f["retried"] = True
                udp_seen = _udp_flows_seen(f["check"])
        f["stop"] = lb.stop(self.stop_timeout)
        # "Forwards" means UDP datagrams got through: one relayed HTTP connection is not enough,
        # since a loop that hangs on its first datagram may still have relayed an early one.
        f["forwards"] = bool(lb.ready and udp_seen >= 1)
        self.facts["smoke"] = f
        self.save("smoke")
        bed.restart_backends()
        return f["forwards"]

    def affinity(self) -> None:
        self.facts["affinity"] = self.traffic_run("affinity", self.plan["traffic"])

    def traffic_run(self, tag: str, t: dict, **overrides) -> dict:
        """One LB run under a flow mix (``t``), with mixed bursts alongside, and the frames the
        backends captured: the facts the affinity, balance and correctness tests (and each
        graded path) are scored on. ``overrides``: the LB's config (``io`` options...)."""
        bed = self.bed
        cfg = bed.topo_cfg
        caps = []
        for b in cfg.backend_names():
            out = os.path.join(bed.workdir, f"capture-{tag}-{b}.json")
            argv = [
                sys.executable,
                "-m",
                "testbed.probe",
                "capture",
                "--iface",
                f"{b}-eth0",
                "--port",
                str(SERVICE_PORT),
                "--seconds",
                "600",
                "--max",
                "120",
                "--keep-marker",
                MIXED_MARKER.hex(),
                "--ignore-src",
                JUNK_SRC_IP,
                "--ready-file",
                out + ".ready",
                "--out",
                out,
            ]
            proc = bed.popen_off_lb_core(b, argv, f"capture-{tag}-{b}")
            caps.append((b, proc, out))
        for _b, proc, out in caps:
            for _ in range(100):
                if os.path.exists(out + ".ready") or proc.poll() is not None:
                    break
                time.sleep(0.05)
        # the frames of split flows, for the report (the affinity run's: the test that names them)
        pcaps = start_affinity_capture(bed) if tag == "affinity" else None
        lb = bed.start_student_lb(tag, self.plan["overlay_sub"], **overrides)
        f: dict[str, Any] = {"ready": lb.ready, "error": lb.error, "traffic": t}
        if lb.ready:
            f["first_flow_tries"] = self._first_flow_through(tag, lb)
            mixed = self._start_mixed(tag)
            recs = self._drive(
                tag, t["udp_flows"], t["packets_per_flow"], t["rate_pps"], t["http_conns"]
            )
            f["mixed"] = self._finish_mixed(*mixed)
            if f["mixed"].get("udp"):
                recs = recs + [{k: f["mixed"][k] for k in ("client", "udp", "http")}]
            f["alive_after"] = lb.alive()
            f["check"] = self._check(recs)
        f["stop"] = lb.stop(self.stop_timeout)
        if pcaps is not None:
            f["split_pcap"] = finish_affinity_capture(pcaps, f)
        captures, marked = {}, {}
        for b, proc, out in caps:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
            cap = read_json(out, {}) or {}
            captures[b], marked[b] = cap.get("frames", []), cap.get("marked", [])
        f["captures"] = captures
        f["mixed_captures"] = marked
        bed.restart_backends()
        return f

    def _first_flow_through(self, tag: str, lb) -> int:
        """Before a checked run: a few flows until one gets through (at most 3 tries), then
        fresh backend records. Right after an LB starts, its first datagrams can be lost outside
        it on a loaded machine (a PMD not yet polling its new port, the switch still learning;
        once, a correct per-packet DPDK path lost 352 of its 648 flows in a 0.65 s run, cause
        not pinned down). The checked traffic starts when the path works; an LB that never
        forwards still fails the checked run (and the smoke test). Returns the tries it took
        (0: none got through)."""
        for attempt in range(1, 4):
            recs = self._drive(f"{tag}-first{attempt}", 4, 3, 200, 0, timeout=30)
            if _udp_flows_seen(self._check(recs)) or not lb.alive():
                break
        else:
            attempt = 0
        self.bed.restart_backends()
        return attempt

    def paths(self) -> None:
        """Every other path the student writes, each in a run of its own (``[[paths]]`` in
        lab.toml: io options such as the other style, fanout workers, NAT mode)."""
        bed = self.bed
        out = {}
        for p in self.plan.get("paths", []):
            log(f"path {p['id']}: io {p.get('io')}")
            vip_mode = p.get("vip_mode")
            try:
                if vip_mode:
                    bed.set_vip_mode(vip_mode)
                out[p["id"]] = self.traffic_run(
                    f"path-{p['id']}", self.plan["path_traffic"], io=dict(p.get("io", {}))
                )
            finally:
                if vip_mode:
                    bed.set_vip_mode("dsr")
            self.facts["paths"] = out
            self.save(f"path:{p['id']}")

    def _start_mixed(self, tag: str):
        """Valid flows with malformed frames in the same bursts, from the last client's raw
        socket, alongside the affinity traffic (``testbed.probe mixed``)."""
        bed = self.bed
        cfg = bed.topo_cfg
        client = cfg.client_names()[-1]
        out = os.path.join(bed.workdir, f"mixed-{tag}.json")
        argv = [*bed.raw_sender(client, "testbed.probe", "mixed"), "--out", out]
        return bed.popen_off_lb_core(client, argv, f"mixed-{tag}"), out

    @staticmethod
    def _finish_mixed(proc, out: str) -> dict:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return read_json(out, {}) or {}

    def pool_changes(self) -> None:
        """Affinity across pool changes (add, drain, fail + recover) under live traffic:
        the flow table, not luck, must keep each flow on its backend (grader.pool_phase)."""
        bed, overlay = self.bed, self.plan["overlay_sub"]

        def start_lb(tag, control, backends):
            return bed.start_student_lb(tag, overlay, control_file=control, backends=backends)

        self.facts["pool_changes"] = run_pool_changes(bed, start_lb, self.plan)
        bed.restart_backends()

    def key(self) -> None:
        from vnf.backends import Backend, BackendPool
        from vnf.packet import FiveTuple, ip_to_int

        bed = self.bed
        cfg = bed.topo_cfg
        lb = bed.start_student_lb("key", self.plan["overlay_sub"], policy="maglev")
        f: dict[str, Any] = {"ready": lb.ready, "error": lb.error}
        client = cfg.client_names()[0]
        if lb.ready:
            out = os.path.join(bed.workdir, "portpairs.json")
            argv = [
                sys.executable,
                "-m",
                "testbed.probe",
                "portpairs",
                "--vip",
                cfg.vip,
                "--port",
                str(SERVICE_PORT),
                "--ports",
                "41000-41023",
                "--flow-id-base",
                "9000000",
                "--client-id",
                "90",
                "--out",
                out,
            ]
            proc = bed.popen_off_lb_core(client, argv, "portpairs")
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
            probe = read_json(out, {}) or {}
            f["alive_after"] = lb.alive()
            records = bed.backend_records()
            seen: dict[str, list] = {}
            for rec in records:
                for fl in rec.get("flows", []):
                    seen.setdefault(str(fl["flow_id"]), []).append(rec.get("backend"))
            backends = [
                Backend(name=b, ip=cfg.host_ip(b), mac=cfg.host_mac(b), port=SERVICE_PORT)
                for b in cfg.backend_names()
            ]
            pool = BackendPool(backends, "maglev", 65537)
            rows = []
            for fid, (proto, port) in sorted(probe.get("ports", {}).items()):
                flow = FiveTuple(
                    ip_to_int(cfg.host_ip(client)),
                    ip_to_int(cfg.vip),
                    port,
                    SERVICE_PORT,
                    17 if proto == "udp" else 6,
                )
                expected = pool.choose(flow)
                assert expected is not None, "a pool of healthy backends always chooses one"
                rows.append(
                    {
                        "flow_id": int(fid),
                        "proto": proto,
                        "src_port": port,
                        "flow": str(flow),
                        "expected": expected.name,
                        "got": sorted(set(seen.get(fid, []))),
                    }
                )
            f["rows"] = rows
            f["check"] = (
                self._check([{k: v for k, v in probe.items() if k != "ports"}]) if probe else None
            )
        f["stop"] = lb.stop(self.stop_timeout)
        self.facts["key"] = f
        bed.restart_backends()

    def robustness(self) -> None:
        bed = self.bed
        cfg = bed.topo_cfg
        lb = bed.start_student_lb("robust", self.plan["overlay_sub"])
        f: dict[str, Any] = {"ready": lb.ready, "error": lb.error}
        if lb.ready:
            client = cfg.client_names()[0]
            out = os.path.join(bed.workdir, "robust.json")
            argv = [
                *bed.raw_sender(client, "testbed.probe", "robust"),
                "--lb-pid",
                str(lb.pid),
                "--fuzz",
                str(self.plan.get("fuzz_frames", 2000)),
                "--out",
                out,
            ]
            proc = bed.popen_off_lb_core(client, argv, "robust")
            try:
                proc.wait(180)
            except subprocess.TimeoutExpired:
                proc.kill()
            f["probe"] = read_json(out, {}) or {}
            time.sleep(0.3)
            forget_poisoned_neighbours(bed)
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
        if self.plan["way"] == "dpdk":
            return self._gen_window(tag, overlay, c)
        return self._saturation_window(tag, overlay, c)

    def _saturation_setup(self, c: dict) -> dict:
        """The kernel ways' cost windows, as ``vnflab bench`` measures them (bench.kernel):
        trafgen on the first client (CPU 0) sends UDP to VIP:port flat out, cycling through
        ``flows`` pre-built frames (one source port each: thousands of flows, so a flow table
        that scans is seen); what the LB transmits is dropped at the switch port facing it
        (tc ingress), so neither the switch nor the backends do work on the LB's core or slow
        it down. Static neighbours and bridge entries: no ARP, no flooding mid-window."""
        from bench.kernel import DROP_PROG_PIN, trafgen_config
        from testbed.bpf import drop_at_ingress
        from testbed.frames import udp_frame

        bed = self.bed
        cfg = bed.topo_cfg
        client = cfg.client_names()[0]
        lb = bed.net["lb"]
        for b in cfg.backend_names():
            lb.cmd(
                f"ip neigh replace {cfg.host_ip(b)} lladdr {cfg.host_mac(b)} dev lb-eth0 "
                "nud permanent"
            )
        for name in cfg.host_names():
            link = bed.net[name].intf().link
            sw = link.intf2 if link.intf1.node is bed.net[name] else link.intf1
            subprocess.run(
                [
                    "bridge",
                    "fdb",
                    "replace",
                    cfg.host_mac(name),
                    "dev",
                    sw.name,
                    "master",
                    "static",
                ],
                capture_output=True,
            )
        link = lb.intf().link
        port = (link.intf2 if link.intf1.node is lb else link.intf1).name
        drop_at_ingress(port, DROP_PROG_PIN)
        payload = b"VNFLCOST".ljust(64, b".")
        frames = [
            udp_frame(
                cfg.host_mac(client),
                cfg.host_mac("lb"),
                cfg.host_ip(client),
                cfg.vip,
                10000 + i,
                SERVICE_PORT,
                payload,
            )
            for i in range(int(c.get("flows", 4096)))
        ]
        path = os.path.join(bed.workdir, "trafgen.cfg")
        with open(path, "w") as f:
            f.write(trafgen_config(frames))
        return {"port": port, "trafgen_cfg": path, "client": client}

    def _saturation_window(self, tag: str, overlay: str, c: dict) -> dict:
        """One LB (reference or submission) at saturation: its CPU time (every thread and
        worker) per frame it transmitted (lb-eth0's counter, read from outside), over
        ``seconds`` after ``warmup_s``; the LB on CPU 1, trafgen on CPU 0."""
        from bench.kernel import stop_trafgen
        from testbed.procfs import netdev

        bed, sat = self.bed, self.saturation
        assert sat is not None, "cost() sets up the saturation traffic first"
        lb = bed.start_student_lb(tag, overlay)
        w: dict[str, Any] = {
            "ready": lb.ready,
            "error": lb.error,
            "method": "saturation",
            "ns_per_packet": None,
        }
        gen = None
        try:
            if not lb.ready:
                return w
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(lb.pid)], capture_output=True)
            argv = [
                "taskset",
                "-c",
                "0",
                "trafgen",
                "-o",
                f"{sat['client']}-eth0",
                "-i",
                sat["trafgen_cfg"],
                "-P",
                "1",
                "--no-sock-mem",
                "-q",
            ]
            log_f = open(os.path.join(bed.workdir, f"gen-{tag}.log"), "wb")
            gen = bed.net[sat["client"]].popen(argv, stdout=log_f, stderr=subprocess.STDOUT)
            log_f.close()
            time.sleep(float(c.get("warmup_s", 0.5)))
            lb_ns = bed.net["lb"].pid
            tx0, c0, t0 = netdev(lb_ns)["lb-eth0"]["tx_packets"], lb.cpu(), time.monotonic()
            time.sleep(float(c["seconds"]))
            tx1, c1, t1 = netdev(lb_ns)["lb-eth0"]["tx_packets"], lb.cpu(), time.monotonic()
            fwd, cpu, wall = tx1 - tx0, c1 - c0, t1 - t0
            w.update(
                wall_s=round(wall, 3),
                cpu_s=round(cpu, 4),
                forwarded=fwd,
                mpps=round(fwd / wall / 1e6, 4) if wall > 0 else None,
                core_share=round(cpu / wall, 3) if wall > 0 else None,
                alive_after=lb.alive(),
            )
            if fwd > 0:
                w["ns_per_packet"] = round(cpu / fwd * 1e9, 1)
            return w
        except Exception as exc:  # noqa: BLE001 - the window failed
            w["busy_error"] = f"the measurement failed: {type(exc).__name__}: {exc}"
            return w
        finally:
            if gen is not None:
                stop_trafgen(gen)
            w["stop"] = {k: v for k, v in lb.stop(self.stop_timeout).items() if k != "stats"}

    def _gen_window(self, tag: str, overlay: str, c: dict) -> dict:
        """The DPDK way's cost window: the LB's port faces a DPDK generator (``vnflab bench``'s
        DPDK driver: a C loop on a net_vhost server port, CPU 0) instead of OVS, so it runs at
        saturation with full bursts, as a poll-mode LB is meant to. A poll-mode LB spins at
        100 % CPU whatever the load, so its CPU time per packet says nothing at low load; at
        saturation it is busy all the time and its busy TSC cycles (a non-empty rx_burst to its
        tx_burst, counted by the provided binding) per packet received, read from its stats
        (SIGUSR1) after a warm-up and at the end, are its cost. Cycles while the LB's core ran
        something else are taken out with the LB's share of the core (CPU time / wall time).

        The counters are the LB's own word (its stats file), so they are checked against what
        the grader knows (``busy_problem``): packets received at most what the generator sent;
        busy time (cycles / the TSC frequency) at most the wall time the two snapshots span (one
        polling lcore: its bursts do not overlap); the TSC frequency the reference's, checked
        once every window is in (``cost``). The jail's CPU time (cpuacct) bounds neither side:
        the busy timer is the TSC, wall-clock time, so a burst during which the LB was preempted
        counts the time it was off its core (that is what the share takes out): busy time above
        CPU time is what a correct LB shows under a competing process.

        From below, by behaviour (``under_reported``): the generator's own running totals are
        read at both ends of the window (``testbed.dpdkgen``: frames sent, frames back, and
        back-pressure, the share of its bursts the LB's full ring refused) with its CPU time.
        When the LB held the generator back, its ring was full at nearly every poll while the
        generator ran, so an honest LB is busy nearly all that time; busy time below
        ``BUSY_FLOOR`` of it is a count that under-reports, and the window is scored on what
        the grader counts itself: CPU time (cpuacct) while the generator ran, per frame the
        generator got back. That is close to the LB's true cost there (0.76-1.10x the honest
        busy figure, measured), so a false alarm would cost an honest LB little, and a liar
        gets its real figure. Without back-pressure (the generator the bottleneck: an honest
        LB polls an empty ring) nothing is said: few busy cycles are honest there; but the
        slower an LB really is, the surer it holds the generator back (docs/grading.md)."""
        from testbed.dpdkgen import DpdkGenerator, window

        bed = self.bed
        uid, gid = user_ids(bed.lb_user(overlay))
        bed.lb_dpdk_dir(bed.lb_user(overlay))
        sock = os.path.join(bed.vhost_dir, f"gen-{tag}.sock")
        gen = DpdkGenerator(
            sock,
            flows=int(c.get("gen_flows", 1024)),
            log_path=os.path.join(bed.workdir, f"gen-{tag}.log"),
        )
        w: dict[str, Any] = {"method": "generator", "ns_per_packet": None}
        try:
            gen.start()
        except Exception as exc:  # noqa: BLE001
            w.update(ready=False, error=f"the DPDK generator did not start: {exc}")
            return w
        lb = None
        try:
            # the LB (virtio-user client) connects to it; in a directory the student may
            # write, so only the socket the generator made is given, never what is swapped in
            chown_own_socket(sock, uid, gid)
            mac = bed.topo_cfg.host_mac("lb")
            cfg = bed.lb_config()
            cfg["io"] = {
                "vdev": f"net_virtio_user0,path={sock},queues=1,mac={mac}",
                "mac": mac,
                "cpus": [1],
                "mem_mb": bed.LB_DPDK_MEM_MB,
            }
            lb = bed.start_student_lb(tag, overlay, config=cfg)
            w.update(ready=lb.ready, error=lb.error)
            if not lb.ready:
                return w
            gen.wait_ready(timeout=30)
            warm, secs = float(c.get("warmup_s", 0.5)), float(c["seconds"])
            gen.go(warm + secs + 1.0)
            time.sleep(warm)
            asked = time.monotonic()  # the counters of ``a`` were read after this
            a, c0, t0 = lb.busy_snapshot(), lb.cpu(), time.monotonic()
            ga, gc0 = gen.counts(), gen.cpu_s()
            time.sleep(secs)
            asked_b = time.monotonic()  # ... and those of ``b`` after this
            b, c1, t1 = lb.busy_snapshot(), lb.cpu(), time.monotonic()
            gb, gc1 = gen.counts(), gen.cpu_s()
            g = gen.result()
            gw = window(ga, gb)
            w.update(
                wall_s=round(t1 - t0, 3),
                cpu_s=round(c1 - c0, 4),
                generated=g.get("tx"),
                returned=g.get("rx"),
                forwarded=g.get("rx"),
                gen_window=dict(gw, cpu_share=round((gc1 - gc0) / (t1 - t0), 3)),
            )
            if not (a and b):
                w["busy_error"] = (
                    "its stats (--stats-file, on SIGUSR1) have no busy counters "
                    "(busy.cycles, busy.rx_packets, busy.tsc_hz): do not "
                    "override the provided extra_stats()"
                )
                return w
            cycles, rx = b["cycles"] - a["cycles"], b["rx_packets"] - a["rx_packets"]
            hz, wall = b["tsc_hz"], t1 - t0
            w.update(tsc_hz=hz, spanned_s=round(t1 - asked, 3))
            problem = busy_problem(cycles, rx, hz, t1 - asked, g.get("tx") or 0)
            if not g.get("rx"):
                w["busy_error"] = "it sent nothing back to the generator"
            elif problem:
                w["busy_error"] = problem
            else:
                share = min(1.0, (c1 - c0) / wall) if wall > 0 else 1.0
                w.update(
                    busy_cycles=cycles,
                    busy_s=round(cycles / hz, 4),
                    busy_rx=rx,
                    core_share=round(share, 3),
                    raw_ns_per_packet=round(cycles / hz / rx * 1e9, 1),
                    ns_per_packet=round(cycles / hz / rx * 1e9 * share, 1),
                    mpps=round(rx / wall / 1e6, 4),
                )
                low = under_reported(cycles / hz, asked_b - t0, w["gen_window"])
                if low and gw["returned"] > 0:
                    # its cost from what the grader counts: CPU time (cpuacct) while the
                    # generator ran (an LB polls an empty ring while it does not) per packet
                    # that came back (the generator's count, in this window)
                    ran = min(1.0, w["gen_window"]["cpu_share"])
                    w.update(
                        busy_under_reported=low,
                        busy_ns_per_packet=w["ns_per_packet"],
                        ns_per_packet=round((c1 - c0) * ran / gw["returned"] * 1e9, 1),
                    )
            return w
        except Exception as exc:  # noqa: BLE001 - the window failed
            w.setdefault("error", None)
            w["busy_error"] = f"the measurement failed: {type(exc).__name__}: {exc}"
            return w
        finally:
            if lb is not None:
                w["stop"] = {k: v for k, v in lb.stop(self.stop_timeout).items() if k != "stats"}
            gen.stop()

    def cost(self) -> None:
        """Windows alternating reference and submission in the same run, at saturation. The
        kernel ways' sink drops everything the LB sends: this phase runs last."""
        from testbed.bpf import stop_dropping

        c = self.plan["cost"]
        windows = []
        self.saturation: dict | None = None  # the kernel ways' trafgen setup
        try:
            if self.plan["way"] != "dpdk":
                self.saturation = self._saturation_setup(c)
            for r in range(int(c.get("rounds", 1))):
                for who, overlay in (
                    ("reference", self.plan["overlay_ref"]),
                    ("submission", self.plan["overlay_sub"]),
                ):
                    w = self._cost_window(f"cost-{who}-{r}", overlay, c)
                    w["who"] = who
                    windows.append(w)
        finally:
            if self.saturation:
                stop_dropping(self.saturation["port"])
        if self.plan["way"] == "dpdk":
            check_tsc_hz(windows)
        self.facts["cost"] = {
            "windows": windows,
            "seconds": c["seconds"],
            "flows": c.get("flows", c.get("gen_flows")),
        }

    def scenario(self, s: dict) -> None:
        """A hidden scenario: its own LB config and traffic. ``table_bounded`` (the eviction
        scenario) starts the LB without the last backend and with a control file, so that the
        eviction probe can grow the pool afterwards (``grader.eviction_phase``)."""
        from testbed.poolchange import write_control

        bed = self.bed
        bed.restart_backends()
        over = {k: s[k] for k in ("policy", "flow_capacity", "backends", "idle_timeout") if k in s}
        control = None
        if "table_bounded" in s.get("checks", []):
            over["backends"] = bed.topo_cfg.backend_names()[:-1]
            control_dir = os.path.join(bed.workdir, f"control-hidden-{s['id']}")
            os.makedirs(control_dir, mode=0o755, exist_ok=True)
            control = os.path.join(control_dir, "pool.json")
            write_control(control, {})
        lb = bed.start_student_lb(
            f"hidden-{s['id']}", self.plan["overlay_sub"], control_file=control, **over
        )
        f: dict[str, Any] = {"ready": lb.ready, "error": lb.error}
        if lb.ready:
            recs = self._drive(
                f"hidden-{s['id']}",
                int(s.get("udp_flows", 300)),
                int(s.get("packets_per_flow", 3)),
                int(s.get("rate_pps", 3000)),
                int(s.get("http_conns", 10)),
            )
            f["alive_after"] = lb.alive()
            f["check"] = self._check(recs)
            if control and f["alive_after"]:
                from grader.eviction_phase import run_eviction_probe

                try:
                    f["eviction"] = run_eviction_probe(bed, lb, s, recs, control)
                except Exception as exc:  # noqa: BLE001 - the grader's own fault
                    f["eviction"] = {"grader_error": f"{type(exc).__name__}: {exc}"}
                f["alive_after"] = lb.alive()
        f["stop"] = lb.stop(self.stop_timeout)
        self.facts.setdefault("hidden", {})[s["id"]] = f


BUSY_SLACK = 1.05, 0.02  # busy time <= wall x 1.05 + 20 ms (the snapshots' own timing)
TSC_HZ_SLACK = 0.02  # a submission's TSC frequency within 2 % of the reference's


def busy_problem(cycles: int, rx: int, hz, spanned_s: float, generated: int) -> str | None:
    """What is impossible in one DPDK window's busy counters (their difference between the two
    snapshots, read from the LB's stats), or None: no packet received, more than the generator
    sent, negative cycles, no TSC frequency, or more busy time than the ``spanned_s`` seconds
    the two snapshots span (the grader's clock, from asking for the first to reading the
    second: one polling lcore is busy with one burst at a time)."""
    if not isinstance(hz, (int, float)) or isinstance(hz, bool) or not hz > 0:
        return f"its stats give no TSC frequency (busy.tsc_hz {hz!r})"
    if rx <= 0 or rx > generated or cycles < 0:
        return (
            f"its busy counters ({cycles} cycles, {rx} packets received in "
            f"{spanned_s:.1f} s) do not agree with the generator's {generated} packets sent"
        )
    slack, extra = BUSY_SLACK
    if cycles / hz > spanned_s * slack + extra:
        return (
            f"its busy counters claim {cycles / hz:.2f} s busy in a window of "
            f"{spanned_s:.2f} s ({cycles} cycles at {hz} Hz): more than the time there was"
        )
    return None


# The LB, not the generator, sets the pace when its full ring refuses at least this share of
# the generator's bursts. Then, while the generator runs, a poll-mode LB has work at nearly
# every poll: its busy time is at least BUSY_FLOOR x the time the generator was on its core.
# Measured (docs/grading.md, "Cost"): the reference's styles, 96 windows of 1 s, quiet and
# beside a busy loop on each core (nice 19) or on one (nice 0): busy / (window x generator's
# share) >= 0.915 everywhere (vector 0.915, fused 0.96, per-packet 0.972).
SATURATED_BACK_PRESSURE = 0.5
BUSY_FLOOR = 0.7  # 0.915 / 0.7: 30 % margin; half the cycles of any honest window fall below


def under_reported(busy_s: float, span_s: float, gen: dict) -> str | None:
    """Why one DPDK window's busy time is too LOW to be true, or None: the LB held the
    generator back (back-pressure >= ``SATURATED_BACK_PRESSURE``, from the generator's own
    counts over the window: ``gen`` as ``testbed.dpdkgen.window`` gives them, plus its
    ``cpu_share``, CPU time / wall time) and yet claims busy for less than ``BUSY_FLOOR`` of the
    time the generator ran within the ``span_s`` seconds its snapshots at least spanned (the
    grader's clock, from reading the first to asking for the second). Without back-pressure
    nothing is said: the generator is the bottleneck and the LB may honestly poll an empty
    ring; while the generator is off its core, too (hence its share)."""
    bp, gen_share = gen.get("back_pressure"), gen.get("cpu_share")
    if bp is None or gen_share is None or bp < SATURATED_BACK_PRESSURE or span_s <= 0:
        return None
    expected = BUSY_FLOOR * min(1.0, gen_share) * span_s
    if busy_s >= expected:
        return None
    return (
        f"its busy counters claim {busy_s:.2f} s busy in {span_s:.2f} s while it held the "
        f"generator back ({bp:.0%} of the generator's bursts refused; the generator on its "
        f"core {min(1.0, gen_share):.0%} of the time): a poll-mode LB that holds the generator "
        f"back is busy nearly all that time (at least {expected:.2f} s expected)"
    )


def check_tsc_hz(windows: list[dict]) -> None:
    """A submission's busy cycles are turned into time with the TSC frequency its own stats
    give: it must be the machine's, which the reference's windows (same machine, same run)
    report. A window that claims another is a measurement error (no figure), never a gain."""
    ref = sorted(
        w["tsc_hz"]
        for w in windows
        if w["who"] == "reference" and w.get("ns_per_packet") and w.get("tsc_hz")
    )
    if not ref:
        return  # no reference figure: scoring reports a grader error anyway
    machine = ref[len(ref) // 2]
    for w in windows:
        hz = w.get("tsc_hz")
        if w["who"] != "submission" or not isinstance(hz, (int, float)) or w.get("busy_error"):
            continue
        if abs(hz / machine - 1) > TSC_HZ_SLACK:
            w["busy_error"] = (
                f"its stats claim a TSC of {hz} Hz; this machine's is {machine} Hz (the "
                "reference's, same run): its busy cycles cannot be turned into time"
            )
            w["ns_per_packet"] = None


def _udp_flows_seen(check: dict) -> int:
    """UDP flows the backends saw, from a checker report."""
    return sum(b.get("udp_flows", 0) for b in (check.get("per_backend") or {}).values())


def main(argv: list[str]) -> int:
    from testbed import sandbox

    plan_path, facts_path = argv
    sandbox.setup_inside()
    with open(plan_path) as f:
        plan = json.load(f)
    g = Grading(plan, facts_path)
    g.save()
    g.unit()
    try:
        g.run_network()
    except Exception as exc:  # noqa: BLE001 - recorded, graded as not run
        import traceback

        g.facts["grader_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
    g.facts["finished"] = time.time()
    g.save("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
