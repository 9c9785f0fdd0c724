"""The DPDK way's driver: the LB's virtio-user port facing a DPDK generator, no topology.

veth caps near 0.5 Mpps, so the DPDK LB is not measured through Mininet: ``testbed.dpdkgen``
(pinned to GEN_CPU, a C loop of the binding) owns a ``net_vhost`` server socket and the LB
(pinned to LB_CPU) connects with ``net_virtio_user``. Per run: the fused LB (the reference), the
lab's vector style and the per-packet style, and with ``--baseline testpmd`` also
``dpdk-testpmd --forward-mode=io`` and the binding's Python io-forward loop
(``bench.binding_io``), each on the same vdevs, each its own process, one after the other.
The LB's cost is its busy TSC cycles per packet received (``vnf.dpdk.busy_stats``, read by
SIGUSR1 at both ends of the window).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from bench import binding_io
from bench.perpacket_steps import STEPS
from bench.report import cv, fmt_cv, fmt_ns, median, rounded
from bench.spec import GEN_CPU, LB_CPU, BenchSpec
from testbed.dpdkgen import DpdkGenerator
from testbed.experiment import request_stats
from testbed.process import expect_line, stop_process, wait_for_file
from vnf.addresses import LB_MAC, SERVICE_PORT, VIP

DPDK_LB_MEM_MB = 128
WINDOWS = 5  # short windows per LB measurement; the best one is its figure


def busy_ns(a: dict, b: dict) -> float | None:
    """Busy ns per packet received between two stats snapshots of the LB."""
    pkts = b["busy"]["rx_packets"] - a["busy"]["rx_packets"]
    cyc = b["busy"]["cycles"] - a["busy"]["cycles"]
    return cyc / pkts / b["busy"]["tsc_hz"] * 1e9 if pkts > 0 else None


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> dict:
    """The LB and the io loop import vnf from this checkout, whatever the caller's cwd."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *sys.path]))


class DpdkDriver:
    """DPDK: the LB's virtio-user port talks to a DPDK generator on the vhost-user side."""

    def available(self, way: str) -> str | None:
        try:
            __import__(f"vnf.ways.{way}_lb")
            from vnf import dpdk
        except ImportError as exc:
            return f"not available: {exc}"
        if not dpdk.available():
            return f"not available: the DPDK binding is not built ({dpdk.IMPORT_ERROR})"
        return None

    def make_bed(self, spec: BenchSpec, workdir: str) -> None:
        """No topology: generator and LB meet on a vhost-user socket."""
        return None

    # --- pieces -------------------------------------------------------------------------------
    @staticmethod
    def vdev(sock: str, queues: int = 1) -> str:
        return f"net_virtio_user0,path={sock},queues={queues},mac={LB_MAC}"

    @staticmethod
    def start_generator(bb, sock: str, tag: str, queues: int = 1) -> DpdkGenerator:
        return DpdkGenerator(
            sock,
            queues=queues,
            flows=bb.spec.flows,
            payload=bb.spec.payload,
            cpu=GEN_CPU,
            log_path=os.path.join(bb.workdir, f"gen-{tag}.log"),
        ).start()

    @staticmethod
    def lb_queues(io: dict) -> int:
        """The queue pairs the DPDK LB opens for these io options (as vnf.ways.dpdk_lb does:
        rtc defaults to one per lcore, pipeline to 1, and never fewer than lcores, since
        pipeline workers transmit on their own TX queue); the generator must match it."""
        return max(int(io.get("queues", 1)), int(io.get("lcores", 1)))

    def lb_io(self, spec: BenchSpec, sock: str, style: str, burst: int) -> dict:
        """The LB's io: the bench's own options, with ``spec.dpdk_io`` merged in."""
        io = {"style": style, "burst": burst, "cpus": [LB_CPU], "mem_mb": DPDK_LB_MEM_MB}
        io.update(spec.dpdk_io or {})
        io["vdev"] = self.vdev(sock, self.lb_queues(io))
        return io

    def measure_lb(self, bb, style: str, burst: int, tag: str) -> dict:
        """The LB program itself: busy cycles over a window (SIGUSR1 stats at both ends)."""
        spec = bb.spec
        sock = os.path.join(bb.workdir, f"{tag}-{style}.sock")
        io = self.lb_io(spec, sock, style, burst)
        gen = self.start_generator(bb, sock, f"{tag}-{style}", self.lb_queues(io))
        cfg_path = os.path.join(bb.workdir, f"lb-{tag}-{style}.json")
        stats_path = os.path.join(bb.workdir, f"lb-{tag}-{style}-stats.json")
        ready = os.path.join(bb.workdir, f"lb-{tag}-{style}.ready")
        backends = [
            {
                "name": f"b{i}",
                "ip": f"10.0.0.{100 + i}",
                "mac": f"02:00:00:00:02:{i:02x}",
                "port": SERVICE_PORT,
            }
            for i in (1, 2, 3)
        ]
        with open(cfg_path, "w") as f:
            json.dump(
                {
                    "lb": {
                        "vip": VIP,
                        "port": SERVICE_PORT,
                        "policy": "maglev",
                        "backends": backends,
                    },
                    "io": io,
                },
                f,
            )
        log_f = open(os.path.join(bb.workdir, f"lb-{tag}-{style}.log"), "wb")
        lb = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(LB_CPU),
                sys.executable,
                "-m",
                "vnf.ways.dpdk_lb",
                "--config",
                cfg_path,
                "--ready-file",
                ready,
                "--stats-file",
                stats_path,
            ],
            stdout=log_f,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        log_f.close()
        try:
            wait_for_file(ready, lb, 60, "the DPDK LB")
            gen.wait_ready()
            total = spec.warmup_s + spec.seconds + 1.0
            gen.go(total)
            time.sleep(spec.warmup_s)
            snaps = [request_stats(lb, stats_path)]
            for _ in range(WINDOWS):  # the window, cut in WINDOWS short ones
                time.sleep(spec.seconds / WINDOWS)
                snaps.append(request_stats(lb, stats_path))
            g = gen.result()
        finally:
            stop_process(lb, 10)
            gen.stop()
        a, b = snaps[0], snaps[-1]
        windows = [busy_ns(x, y) for x, y in zip(snaps, snaps[1:])]
        cyc = b["busy"]["cycles"] - a["busy"]["cycles"]
        pkts = b["busy"]["rx_packets"] - a["busy"]["rx_packets"]
        wall = b["uptime_s"] - a["uptime_s"]
        sent = b["sent"] - a["sent"]
        cpu = (b["cpu_user_s"] + b["cpu_sys_s"]) - (a["cpu_user_s"] + a["cpu_sys_s"])
        mpps = sent / wall / 1e6 if wall > 0 else None
        look = {
            k: sum(c.get(k, 0) for c in b.get("flow_cache") or [])
            - sum(c.get(k, 0) for c in a.get("flow_cache") or [])
            for k in ("hits", "misses")
        }
        best = min((w for w in windows if w is not None), default=None)
        return {
            "ns_per_packet": best,
            "windows_ns_per_packet": windows,
            "whole_window_ns_per_packet": (
                cyc / pkts / b["busy"]["tsc_hz"] * 1e9 if pkts else None
            ),
            "mpps": mpps,
            "saturation_ns_per_packet": 1e3 / mpps if mpps else None,
            "cpu_ns_per_packet": cpu / sent * 1e9 if sent else None,
            "forwarded": sent,
            "received": pkts,
            "seconds": wall,
            "offered_mpps": g["tried"] / g["seconds"] / 1e6,
            "generated_mpps": g["tx"] / g["seconds"] / 1e6,
            "split_check": {"new_flows": b["lb"]["new_flows"], "flows": spec.flows},
            "lb_io": {k: b.get(k) for k in ("model", "lcores", "queues")},
            "busy_ns_per_forwarded": cyc / sent / b["busy"]["tsc_hz"] * 1e9 if sent else None,
            "busy_bursts": b["busy"]["bursts"] - a["busy"]["bursts"],
            "ring_drops": (b.get("ring_drops") or 0) - (a.get("ring_drops") or 0),
            # vector style: share of lookups that missed the C flow cache (Python path)
            "flow_cache_miss_rate": (
                look["misses"] / (look["hits"] + look["misses"])
                if look["hits"] + look["misses"]
                else None
            ),
            "new_flows_per_lcore": [x.get("new_flows") for x in b.get("lb_per_lcore") or []],
        }

    def measure_testpmd(self, bb, burst: int, tag: str) -> dict:
        """dpdk-testpmd --forward-mode=io on the same virtio-user vdev (busy cycles/packet
        from --record-core-cycles; forwarding rate from what the generator gets back)."""
        spec = bb.spec
        sock = os.path.join(bb.workdir, f"{tag}-tpmd.sock")
        gen = self.start_generator(bb, sock, f"{tag}-tpmd")
        argv = [
            "taskset",
            "-c",
            f"{GEN_CPU},{LB_CPU}",
            "stdbuf",
            "-oL",
            "dpdk-testpmd",
            "--no-pci",
            "--in-memory",
            "--single-file-segments",
            "-l",
            f"{GEN_CPU},{LB_CPU}",
            "--main-lcore",
            str(GEN_CPU),
            "-m",
            str(DPDK_LB_MEM_MB),
            "--file-prefix",
            f"vnfltpmd{os.getpid()}",
            "--log-level=error",
            "--vdev",
            self.vdev(sock),
            "--",
            "--forward-mode=io",
            "--port-topology=loop",
            "--nb-cores=1",
            f"--burst={burst}",
            "--record-core-cycles",
            "--total-num-mbufs=8191",
        ]
        tp = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            expect_line(tp, "Press enter to exit", "dpdk-testpmd")
            gen.wait_ready()
            gen.go(spec.warmup_s + spec.seconds)
            g = gen.result()
            assert tp.stdin is not None  # started with stdin=PIPE
            tp.stdin.write("\n")
            tp.stdin.flush()
            out = tp.communicate(timeout=20)[0]
        finally:
            stop_process(tp, 10)
            gen.stop()
        cpp = re.findall(r"CPU cycles/packet=([\d.]+)", out)
        mhz = re.findall(r"at (\d+) MHz Clock", out)
        ns = float(cpp[-1]) / float(mhz[-1]) * 1e3 if cpp and mhz else None
        mpps = g["rx"] / g["seconds"] / 1e6
        return {"ns_per_packet": ns, "mpps": mpps, "offered_mpps": g["tried"] / g["seconds"] / 1e6}

    def measure_binding_io(self, bb, burst: int, tag: str) -> dict:
        """The binding's io-forward in a Python loop (rx_burst -> tx_burst), same vdevs."""
        spec = bb.spec
        sock = os.path.join(bb.workdir, f"{tag}-bio.sock")
        gen = self.start_generator(bb, sock, f"{tag}-bio")
        io = subprocess.Popen(
            binding_io.command(self.vdev(sock), burst, LB_CPU),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        try:
            expect_line(io, "ready", "the binding io loop")
            gen.wait_ready()
            gen.go(spec.warmup_s + spec.seconds)
            g = gen.result()
            io.terminate()
            r = json.loads(expect_line(io, "IO ", "the binding io loop")[3:])
        finally:
            stop_process(io, 10)
            gen.stop()
        return {"ns_per_packet": r["ns_per_packet"], "mpps": g["rx"] / g["seconds"] / 1e6}

    def measure_perpacket_steps(self, bb, burst: int, tag: str) -> dict:
        """The per-packet style's loop timed step by step (``bench.perpacket_steps``)."""
        flows = min(bb.spec.flows, 512)  # what net_ring's ring holds
        log_f = open(os.path.join(bb.workdir, f"steps-{tag}.log"), "wb")
        p = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(LB_CPU),
                sys.executable,
                "-m",
                "bench.perpacket_steps",
                str(burst),
                str(LB_CPU),
                str(flows),
            ],
            stdout=subprocess.PIPE,
            stderr=log_f,
            text=True,
            env=_env(),
        )
        log_f.close()
        try:
            out = p.communicate(timeout=300)[0]
        finally:
            stop_process(p, 10)
        lines = [ln for ln in out.splitlines() if ln.startswith("STEPS ")]
        if not lines:
            raise RuntimeError(f"bench.perpacket_steps printed no result (rc {p.returncode})")
        return json.loads(lines[-1][6:])

    # --- one run -----------------------------------------------------------------------------
    def run(self, bb, way: str, batch: int | None, tag: str) -> dict:
        burst = batch or 32
        res: dict = {"way": way, "batch": batch, "burst": burst}
        # the reference: the fused style (one C call per burst); then the lab's vector style
        # (a C call per step) and the per-packet style, in the same run. Fused runs to
        # completion only: with --dpdk-io model=pipeline the vector style is the reference.
        pipeline = (bb.spec.dpdk_io or {}).get("model", "rtc") != "rtc"
        res["reference_style"] = "vector" if pipeline else "fused"
        ref = self.measure_lb(bb, res["reference_style"], burst, tag)
        res.update(
            {
                k: ref[k]
                for k in (
                    "ns_per_packet",
                    "mpps",
                    "saturation_ns_per_packet",
                    "cpu_ns_per_packet",
                    "offered_mpps",
                )
            }
        )
        res["fused"] = None if pipeline else ref
        vec = ref if pipeline else self.measure_lb(bb, "vector", burst, tag)
        res["vector"] = vec
        res["vector_ns_per_packet"] = vec["ns_per_packet"]
        pp = self.measure_lb(bb, "perpacket", burst, tag)
        res["perpacket"] = pp
        res["perpacket_ns_per_packet"] = pp["ns_per_packet"]
        res["perpacket_steps"] = self.measure_perpacket_steps(bb, burst, tag)
        if ref["ns_per_packet"]:  # the styles against the fused reference
            for style, r in ((("vector", vec),) if not pipeline else ()) + (("perpacket", pp),):
                if r["ns_per_packet"]:
                    res[f"{style}_over_fused"] = r["ns_per_packet"] / ref["ns_per_packet"]
        if bb.spec.baseline == "testpmd":
            tp = self.measure_testpmd(bb, burst, tag)
            bio = self.measure_binding_io(bb, burst, tag)
            res["testpmd_io"], res["binding_io"] = tp, bio
            if tp["ns_per_packet"] and ref["ns_per_packet"]:
                res["baseline_ratio"] = tp["ns_per_packet"] / ref["ns_per_packet"]
                res["fused_over_testpmd"] = ref["ns_per_packet"] / tp["ns_per_packet"]
            if tp["mpps"] and ref["mpps"]:
                res["baseline_ratio_mpps"] = ref["mpps"] / tp["mpps"]
            if bio["ns_per_packet"] and ref["ns_per_packet"]:
                # what the NF adds on top of moving the packets (the binding's io-forward)
                res["nf_ns_per_packet"] = ref["ns_per_packet"] - bio["ns_per_packet"]
            if tp["ns_per_packet"] and bio["ns_per_packet"]:
                res["binding_io_ratio"] = tp["ns_per_packet"] / bio["ns_per_packet"]
            if tp["mpps"] and bio["mpps"]:
                res["binding_io_ratio_mpps"] = bio["mpps"] / tp["mpps"]
        return res

    # --- reporting -----------------------------------------------------------------------------
    def summary(self, ok: list[dict]) -> dict:
        """Medians of the DPDK-only figures over the good runs."""

        def med(key, nd=1):
            return rounded(median([r.get(key) for r in ok]), nd)

        def sub(name, key, nd=1):
            return rounded(median([(r.get(name) or {}).get(key) for r in ok]), nd)

        return {
            "reference_style": ok[0].get("reference_style", "fused") if ok else None,
            "saturation_ns_per_packet": med("saturation_ns_per_packet"),
            "cpu_ns_per_packet": med("cpu_ns_per_packet"),
            "offered_mpps": med("offered_mpps", 4),
            "mpps_cv": rounded(cv([r.get("mpps") for r in ok]), 3),
            "vector_ns_per_packet": med("vector_ns_per_packet"),
            "vector_cv": rounded(cv([r.get("vector_ns_per_packet") for r in ok]), 3),
            "nf_ns_per_packet": med("nf_ns_per_packet"),
            "perpacket_ns_per_packet": med("perpacket_ns_per_packet"),
            "perpacket_mpps": sub("perpacket", "mpps", 4),
            "perpacket_cv": rounded(cv([r.get("perpacket_ns_per_packet") for r in ok]), 3),
            "vector_over_fused": med("vector_over_fused", 3),
            "perpacket_over_fused": med("perpacket_over_fused", 3),
            "fused_over_testpmd": med("fused_over_testpmd", 3),
            "fused_over_testpmd_cv": rounded(cv([r.get("fused_over_testpmd") for r in ok]), 3),
            "perpacket_steps": {
                k: rounded(
                    median(
                        [((r.get("perpacket_steps") or {}).get("steps") or {}).get(k) for r in ok]
                    )
                )
                for k in STEPS
            },
            "baseline": "testpmd" if any("testpmd_io" in r for r in ok) else None,
            "baseline_ratio": med("baseline_ratio", 3),
            "baseline_ratio_mpps": med("baseline_ratio_mpps", 3),
            "testpmd_io_ns_per_packet": sub("testpmd_io", "ns_per_packet"),
            "testpmd_io_mpps": sub("testpmd_io", "mpps", 4),
            "testpmd_io_cv": rounded(
                cv([(r.get("testpmd_io") or {}).get("ns_per_packet") for r in ok]), 3
            ),
            "binding_io_ns_per_packet": sub("binding_io", "ns_per_packet"),
            "binding_io_mpps": sub("binding_io", "mpps", 4),
            "binding_io_cv": rounded(
                cv([(r.get("binding_io") or {}).get("ns_per_packet") for r in ok]), 3
            ),
            "binding_io_ratio": med("binding_io_ratio", 3),
            "binding_io_ratio_mpps": med("binding_io_ratio_mpps", 3),
        }

    def detail(self, w: dict) -> str:
        """The line under the table: the three styles, and the baselines when measured."""
        ref = w.get("reference_style") or "fused"
        txt = (
            f"dpdk(burst={w.get('batch') or 32}): {ref} (reference) "
            f"{fmt_ns(w.get('ns_per_packet'))} ns/pkt busy, "
            f"{fmt_ns(w.get('saturation_ns_per_packet'))} ns/pkt at saturation; "
        )
        if ref == "fused":
            txt += (
                f"lab vector style {fmt_ns(w.get('vector_ns_per_packet'))} ns/pkt busy, "
                f"cv {fmt_cv(w.get('vector_cv'))} ({w.get('vector_over_fused')}x fused); "
            )
        txt += (
            f"per-packet style {fmt_ns(w.get('perpacket_ns_per_packet'))} ns/pkt busy, "
            f"cv {fmt_cv(w.get('perpacket_cv'))} "
            f"({w.get('perpacket_over_fused')}x {ref}; same-run ratios, median)"
        )
        steps = w.get("perpacket_steps") or {}
        if any(v is not None for v in steps.values()):
            txt += "; per-packet style, ns/pkt per step (bench.perpacket_steps): " + ", ".join(
                f"{k} {fmt_ns(v)}" for k, v in steps.items()
            )
        if w.get("baseline"):
            txt += (
                f"; testpmd io {w.get('testpmd_io_ns_per_packet')} ns/pkt, "
                f"cv {fmt_cv(w.get('testpmd_io_cv'))}, {w.get('testpmd_io_mpps')} Mpps; "
                f"binding io-forward {w.get('binding_io_ns_per_packet')} ns/pkt, "
                f"cv {fmt_cv(w.get('binding_io_cv'))} = {w.get('binding_io_ratio')}x "
                f"testpmd; fused = {w.get('fused_over_testpmd')}x testpmd io, "
                f"cv {fmt_cv(w.get('fused_over_testpmd_cv'))}; the NF adds "
                f"{fmt_ns(w.get('nf_ns_per_packet'))} ns/pkt to the binding's io-forward"
            )
        return txt

    def brief(self, spec: BenchSpec, sink: str) -> str:
        """The method in one line, for the terminal."""
        return (
            "dpdk: busy TSC cycles per packet received, a DPDK generator on vhost-user "
            "flat out; fused style in the table"
        )

    def method(self, spec: BenchSpec, sink: str) -> str:
        """The full method text (kept in the JSON, printed by ``vnflab bench --method``)."""
        return (
            f"DPDK way: generator = a DPDK process (testbed.dpdkgen: the binding's C gen_loop) on "
            f"a net_vhost server socket, pinned to CPU {GEN_CPU}: {spec.flows} UDP flows to "
            f"{VIP}:{SERVICE_PORT} (source addresses/ports vary), dst MAC {LB_MAC}, "
            f"{spec.payload}-byte payload, sent as fast as the vhost port takes them; it also "
            f"frees whatever comes back (the sink). The LB (python -m vnf.ways.dpdk_lb, "
            f"net_virtio_user client, pinned to CPU {LB_CPU}) runs with style fused (the "
            f"reference: parse, flow cache and rewrite in one C call per burst), then vector (the "
            f"lab's: one C call per step), then perpacket. ns_per_packet = busy TSC cycles "
            f"(from a non-empty rx_burst to its tx_burst, vnf.dpdk.busy_stats) / packets "
            f"received, in each of {WINDOWS} windows of {spec.seconds / WINDOWS:g} s (stats by "
            f"SIGUSR1 at their ends); a run's figure is its BEST window, because on a shared "
            f"machine interference (preemption counts as busy, a neighbour evicts the caches) "
            f"only ever slows a window down, so the fastest window is the closest to the code's "
            f"own cost (the grader's lab 3 cost uses the same statistic); "
            f"whole_window_ns_per_packet is the plain mean over the whole window; "
            f"the per-packet style's steps (rx/tx, loop, parse, check, lookup, rewrite) are "
            f"timed by bench.perpacket_steps: the same loop with one step more each time, on a "
            f"net_ring port in one process, best of many short chunks; "
            f"saturation_ns_per_packet = 1 / forwarded rate on that one core (includes empty "
            f"polls and anything else the core did); mpps = forwarded / window. With --baseline "
            f"testpmd: dpdk-testpmd --forward-mode=io --port-topology=loop on the same vdev "
            f"(busy cycles/packet from --record-core-cycles; rate = packets back at the "
            f"generator), and the binding's Python rx_burst->tx_burst loop (bench.binding_io); "
            f"baseline_ratio = testpmd io ns/pkt / LB ns/pkt (busy cycles: the fraction of "
            f"testpmd's per-core rate the LB reaches; testpmd reports one mean over its run, "
            f"not windows), fused_over_testpmd its inverse, vector_over_fused and "
            f"perpacket_over_fused the styles against the reference, all ratios of one run; "
            f"baseline_ratio_mpps the same by forwarding "
            f"rate. Median of {spec.runs} runs; cv = stdev/mean over runs. The machine is "
            f"shared: a busy LB core inflates busy cycles (preemption counts as busy)."
            + (
                f" Extra LB io options: {spec.dpdk_io} (the generator uses as many queues as the "
                f"LB; its lcores' threads are pinned to the io 'cpus')."
                if spec.dpdk_io
                else ""
            )
        )
