"""The kernel ways (socket, AF_PACKET): their bench bed and their driver.

One run of one way (``KernelPathDriver``):

1. **Saturation** (``ns_per_packet``, ``mpps``). trafgen on client c1, pinned to CPU 0, sends UDP
   to VIP:8080 flat out, cycling through ``flows`` pre-built frames (one source port per flow,
   correct IPv4 and UDP checksums). The LB runs pinned to CPU 1. Over a fixed window: the LB's CPU
   time (exact on-CPU nanoseconds of every thread of the LB and its workers, from
   /proc/PID/task/TID/schedstat, split into user and sys in the proportion /proc/PID/stat's
   10 ms ticks sampled) divided by the frames the LB transmitted (``lb-eth0`` tx_packets)
   => ns/packet and the user/sys split; transmitted frames per second => Mpps.
2. **Whole core** (``whole_core_ns_per_packet``). RPS steers lb-eth0's receive softirq onto the
   LB core (CPU 1), so the kernel's receive work is on the same core as the LB. The same frames
   are sent at fractions of the saturation rate by ``testbed.pacer`` (a few frames every ~40 us;
   trafgen's own --rate sends each second's frames in one full-speed burst, which overflowed the
   socket way's receive buffer at any average rate); CPU 1's busy time (window minus its idle
   time from /proc/stat: with NO_HZ the idle time is measured at idle entry/exit, not sampled by
   the tick) divided by forwarded frames, taken at the highest offered load the LB still kept up
   with. If forwarding collapses as offered load rises further (receive livelock: the softirq
   starves the LB), ``livelock`` is true and ``livelock_at`` says where; the figure below it
   stands.

Sink: the switch's port facing the LB drops every frame the LB transmits, on arrival, with a
two-instruction BPF program (``return TC_ACT_SHOT``, ``testbed.bpf``) at its tc ingress hook: the
end of the LB's wire. A veth transmit runs the receiving side's first steps in the sender's
softirq, so what the LB pays per frame is its transmit plus that hand-off (a backlog enqueue and
one BPF run), much like writing a NIC's TX descriptor; the switch's forwarding and the backends'
stacks, which are not the LB's work, never run. (Earlier versions forwarded to XDP sinks on the
backends and steered the switch's work to the generator's core with RPS: that charged the LB a
flow hash and a cross-core enqueue per frame, starved the generator's core, and left the LB half
idle with 2-3x swings in the offered rate between runs.) Without tc/BPF the backends' kernels
drop the UDP instead and the switch's work lands on the LB's core (``sink: "backends"``, said in
the method). The LB host gets static neighbour entries for the backends, and the bridge static
FDB entries, so no ARP or flooding happens mid-window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench.spec import GEN_CPU, LB_CPU, WHOLE_CORE_FRACTIONS, BenchSpec
from testbed.bpf import BPFFS, drop_at_ingress
from testbed.experiment import ExperimentSpec, log
from testbed.frames import udp_frame
from testbed.procfs import cpu_idle_s, cpu_times, netdev
from vnf.addresses import SERVICE_PORT

DROP_PROG_PIN = f"{BPFFS}/vnflab_drop"
KEPT_UP = 0.95  # forwarded >= 95 % of offered: the LB keeps up at that load
MAX_FOREIGN_BUSY = 0.25  # LB core busier than this with no traffic: no whole-core figure
COLLAPSE = 0.7  # forwarded falls below 70 % of an earlier, lower load's: livelock


def trafgen_config(frames: list[bytes]) -> str:
    """trafgen's packet config: one ``{ ... }`` per frame; trafgen cycles through them."""
    return "\n".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }" for f in frames) + "\n"


def stop_trafgen(proc: subprocess.Popen) -> None:
    """trafgen forks its workers: signal the whole group (mnexec -d made it a session)."""
    for sig, wait in ((signal.SIGINT, 3), (signal.SIGKILL, 3)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            # the parent may go before its workers: make sure the group is empty
            os.killpg(proc.pid, 0)
            time.sleep(0.05)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------------------
# the bench bed: a Testbed with sinks, static L2 state, a generator
# ------------------------------------------------------------------------------------------


class BenchBed:
    def __init__(self, spec: BenchSpec, workdir: str):
        from testbed.experiment import Testbed

        first_dsr = next((w for w in spec.ways if w != "socket"), "afpacket")
        # DSR addressing on the backends (VIP on lo); the LB's VIP is switched per way below.
        self.spec = spec
        self.workdir = workdir
        self.bed = Testbed(
            ExperimentSpec(
                way=first_dsr if first_dsr != "dpdk" else "afpacket", clients=1, backends=3
            ),
            workdir,
            start_servers=False,
        )
        self.cfg = self.bed.topo_cfg
        self.net = self.bed.net
        self.lb = self.net["lb"]
        self.gen = self.net["c1"]
        link = self.lb.intf().link
        self.lb_switch_port = (link.intf2 if link.intf1.node is self.lb else link.intf1).name
        self._static_l2()
        self.sink = self._install_sink()
        self.cfg_path = os.path.join(workdir, "trafgen.cfg")
        payload = b"VNFLBENCH".ljust(spec.payload, b".")
        frames = [
            udp_frame(
                self.cfg.host_mac("c1"),
                self.cfg.host_mac("lb"),
                self.cfg.host_ip("c1"),
                self.cfg.vip,
                10000 + i,
                SERVICE_PORT,
                payload,
            )
            for i in range(spec.flows)
        ]
        self.frame_len = len(frames[0])
        with open(self.cfg_path, "w") as f:
            f.write(trafgen_config(frames))
        self.frames_path = os.path.join(workdir, "frames.bin")  # the same, for the pacer
        with open(self.frames_path, "wb") as f:
            f.write(b"".join(frames))
        self.vip_local = self.bed.vip_mode == "local"
        self.set_rps(False)

    def _static_l2(self) -> None:
        for b in self.cfg.backend_names():
            self.lb.cmd(
                f"ip neigh replace {self.cfg.host_ip(b)} lladdr {self.cfg.host_mac(b)} "
                f"dev lb-eth0 nud permanent"
            )
        for name in self.cfg.host_names():
            port = self.net[name].intf().link
            sw_intf = port.intf2 if port.intf1.node is self.net[name] else port.intf1
            subprocess.run(
                [
                    "bridge",
                    "fdb",
                    "replace",
                    self.cfg.host_mac(name),
                    "dev",
                    sw_intf.name,
                    "master",
                    "static",
                ],
                check=True,
            )

    def _install_sink(self) -> str:
        """Drop what the LB transmits at the switch port's tc ingress (see the module docstring).
        The port lives in the sandbox's own network namespace: plain tc reaches it."""
        try:
            drop_at_ingress(self.lb_switch_port, DROP_PROG_PIN)
            return "port-drop"
        except (OSError, subprocess.CalledProcessError) as exc:
            log(f"tc/BPF sink unavailable ({exc}); the backends' kernels drop the UDP instead")
            return "backends"

    # --- per way state ----------------------------------------------------------------------
    def set_vip_local(self, local: bool) -> None:
        if local == self.vip_local:
            return
        verb = "add" if local else "del"
        self.lb.cmd(f"ip addr {verb} {self.cfg.vip}/{self.cfg.prefixlen} dev lb-eth0")
        self.vip_local = local
        self.bed.vip_mode = "local" if local else "dsr"

    def set_rps(self, on: bool) -> None:
        mask = format(1 << LB_CPU, "x") if on else "0"
        # Mininet hosts have their own mount namespace with a sysfs of their own netns.
        path = "/sys/class/net/lb-eth0/queues/rx-0/rps_cpus"
        out = self.lb.cmd(f"echo {mask} > {path}; cat {path}")
        last = (out.strip().splitlines() or ["?"])[-1].replace(",", "")
        if not all(c in "0123456789abcdef" for c in last) or int(last, 16) != int(mask, 16):
            raise RuntimeError(f"could not set RPS on lb-eth0: {out.strip()}")

    def start_lb(self, way: str, io: dict, tag: str):
        spec = self.bed.spec
        spec.way = way
        spec.lb_extra = io
        spec.lb_command = ["taskset", "-c", str(LB_CPU), sys.executable, "-m", f"vnf.ways.{way}_lb"]
        return self.bed.start_lb(tag)

    def start_gen(self, rate_pps: int | None, tag: str) -> subprocess.Popen:
        """Flat out: trafgen (its TX ring is the fastest sender). At a rate: testbed.pacer, whose
        batches leave every ~40 us; trafgen's --rate sends each second's frames in one burst."""
        if rate_pps:
            argv = [
                "taskset",
                "-c",
                str(GEN_CPU),
                sys.executable,
                "-m",
                "testbed.pacer",
                "c1-eth0",
                self.frames_path,
                "--frame-len",
                str(self.frame_len),
                "--rate",
                str(int(rate_pps)),
            ]
        else:
            argv = [
                "taskset",
                "-c",
                str(GEN_CPU),
                "trafgen",
                "-o",
                "c1-eth0",
                "-i",
                self.cfg_path,
                "-P",
                "1",
                "--no-sock-mem",
                "-q",
            ]
        out = open(os.path.join(self.workdir, f"gen-{tag}.log"), "wb")
        return self.gen.popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def stop_gen(self, proc: subprocess.Popen) -> None:
        stop_trafgen(proc)

    def snapshot(self, lb_pid: int) -> dict:
        lbdev = netdev(self.lb.pid)["lb-eth0"]
        gendev = netdev(self.gen.pid)["c1-eth0"]
        return {
            "t": time.monotonic(),
            "cpu": cpu_times(lb_pid),
            "idle": cpu_idle_s(LB_CPU),
            "lb_tx": lbdev["tx_packets"],
            "lb_rx_dropped": lbdev["rx_dropped"],
            "offered": gendev["tx_packets"],
        }

    def window(self, lb_pid: int, seconds: float) -> dict:
        a = self.snapshot(lb_pid)
        time.sleep(seconds)
        b = self.snapshot(lb_pid)
        user, sys_, _ = b.pop("cpu").since(a.pop("cpu"))
        d = {k: b[k] - a[k] for k in a}
        wall = d.pop("t")
        fwd = d["lb_tx"]
        return {
            "seconds": round(wall, 3),
            "forwarded": fwd,
            "offered": d["offered"],
            "lb_rx_dropped": d["lb_rx_dropped"],
            "user_s": round(user, 4),
            "sys_s": round(sys_, 4),
            "core_busy_s": round(max(0.0, wall - d["idle"]), 3),
            "fwd_pps": round(fwd / wall),
            "offered_pps": round(d["offered"] / wall),
        }

    def close(self) -> None:
        self.bed.close()


# ------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------


class KernelPathDriver:
    """Socket and AF_PACKET ways: trafgen over veth on the Testbed, LB on CPU 1."""

    def available(self, way: str) -> str | None:
        try:
            __import__(f"vnf.ways.{way}_lb")
        except ImportError as exc:
            return f"not available: {exc}"
        return None

    def make_bed(self, spec: BenchSpec, workdir: str) -> BenchBed:
        """The kernel ways run on a Mininet topology (see ``BenchBed``)."""
        return BenchBed(spec, workdir)

    def io(self, way: str, batch: int | None, style: str = "vector", tx: str = "sendmmsg") -> dict:
        if way == "socket":
            return {}
        # AF_PACKET: the reference fast path by default (C parse + one decision call per
        # block); --style perpacket measures the lab 2 loop (Python per packet) instead.
        io = {"workers": 1, "mode": "dsr", "style": style, "tx": tx}
        if batch is not None:
            io["batch"] = batch
        return io

    def run(self, bb: BenchBed, way: str, batch: int | None, tag: str) -> dict:
        spec = bb.spec
        bb.set_vip_local(way == "socket")  # socket: a proxy that owns the VIP; others: DSR
        bb.set_rps(False)
        lb = bb.start_lb(way, self.io(way, batch, spec.style, spec.tx), tag)
        res: dict = {"way": way, "batch": batch}
        try:
            gen = bb.start_gen(None, f"{tag}-sat")
            try:
                time.sleep(spec.warmup_s)
                w = bb.window(lb.proc.pid, spec.seconds)
            finally:
                bb.stop_gen(gen)
            if not lb.alive():
                raise RuntimeError(f"the LB exited during the run: {lb.log_tail()}")
            res["saturation"] = w
            fwd = w["forwarded"]
            if fwd > 0:
                res["ns_per_packet"] = (w["user_s"] + w["sys_s"]) / fwd * 1e9
                res["user_ns"] = w["user_s"] / fwd * 1e9
                res["sys_ns"] = w["sys_s"] / fwd * 1e9
                res["mpps"] = fwd / w["seconds"] / 1e6
            if spec.whole_core and fwd > 0:
                res.update(self.whole_core(bb, lb, w["fwd_pps"], tag))
        finally:
            bb.set_rps(False)
            res["lb_stats"] = lb.stop()
        return res

    def whole_core(self, bb: BenchBed, lb, sat_pps: int, tag: str) -> dict:
        """RPS onto the LB core, paced generator; CPU-1 busy time per forwarded packet."""
        bb.set_rps(True)
        levels = []
        seconds = bb.spec.seconds
        # Whatever else runs on the LB core (shared machines) shows in its busy time: measure it
        # with no traffic first and subtract it; if the core is mostly busy anyway, say so.
        time.sleep(0.2)
        base = bb.window(lb.proc.pid, min(1.0, seconds))
        base_frac = base["core_busy_s"] / base["seconds"]
        for frac in WHOLE_CORE_FRACTIONS:
            rate = max(1000, int(sat_pps * frac))
            gen = bb.start_gen(rate, f"{tag}-rps{frac}")
            try:
                time.sleep(min(0.3, bb.spec.warmup_s))
                w = bb.window(lb.proc.pid, seconds)
            finally:
                bb.stop_gen(gen)
            w["target_pps"] = rate
            w["core_busy_ours_s"] = round(max(0.0, w["core_busy_s"] - base_frac * w["seconds"]), 3)
            levels.append(w)
            time.sleep(0.1)  # let the backlog drain between levels
        return judge_whole_core(levels, base_frac)

    # --- reporting -----------------------------------------------------------------------------
    def summary(self, ok: list[dict]) -> dict:
        """Way-specific figures for the summary (the common ones are the report's)."""
        return {}

    def detail(self, way: dict) -> str | None:
        """A line under the table for this way (none: the table's columns say it all)."""
        return None

    def brief(self, spec: BenchSpec, sink: str) -> str:
        """The method in one line, for the terminal."""
        return (
            f"socket, afpacket: the LB's CPU time per frame sent, trafgen flat out "
            f"(sink {sink}); whole-core: CPU {LB_CPU} busy per frame, RPS, paced"
        )

    def method(self, spec: BenchSpec, sink: str) -> str:
        """The full method text (kept in the JSON, printed by ``vnflab bench --method``)."""
        sink_txt = {
            "port-drop": "a BPF program (return TC_ACT_SHOT, 2 instructions, loaded with bpf(2)) "
            "at the tc ingress of the switch port facing the LB drops each frame "
            "the LB transmits on arrival; the LB pays its transmit and that hand-off "
            "(run in its own softirq, as veth does), not the switch's forwarding",
            "backends": "tc/BPF was unavailable: the switch forwards to the backends, whose "
            "kernels drop the UDP (no listener); with veth that work runs on the LB "
            "core and inflates its figures by ~1.5 us/packet",
            "none": "none (no way could run)",
        }[sink]
        levels = ", ".join(f"{f:g}" for f in WHOLE_CORE_FRACTIONS)
        return (
            f"ns_per_packet: CPU time of the LB process and its workers (exact on-CPU ns from "
            f"schedstat; user/sys split as /proc/PID/stat's ticks sampled it) "
            f"divided by the frames the LB transmitted (lb-eth0 tx_packets) over a "
            f"{spec.seconds:g} s window at saturation; mpps = those frames / window. Generator: "
            f"trafgen on c1 pinned to CPU {GEN_CPU}, UDP to VIP:{SERVICE_PORT} over {spec.flows} "
            f"flows (source ports), correct IP/UDP checksums, {spec.payload}-byte payload; LB "
            f"pinned to CPU {LB_CPU}. Socket way: the LB is a proxy owning the VIP; AF_PACKET "
            f"way: direct server return, style {spec.style}, transmit by {spec.tx}. "
            f"Sink: {sink_txt}. NOT measured in ns_per_packet: the kernel's receive work for the "
            f"LB's interface (with veth it runs on the sender's core, CPU {GEN_CPU}). "
            f"whole_core_ns_per_packet: RPS steers lb-eth0's receive softirq onto CPU {LB_CPU}, "
            f"the same frames paced by testbed.pacer (a sendmmsg of a few frames every ~40 us; "
            f"trafgen's --rate bursts each second's frames at full speed) at {levels} x the "
            f"saturation rate; CPU {LB_CPU}'s busy time (window minus its NO_HZ idle time from "
            f"/proc/stat, less the busy fraction measured with no traffic just before: other work "
            f"on that core) per forwarded frame at the highest load where forwarded >= "
            f"{KEPT_UP:.0%} of offered (below any collapse); if forwarding falls below "
            f"{COLLAPSE:.0%} of a lower load's as offered load rises, that is receive livelock, "
            f"said as such (the table adds '(livelock)'); if the core is over "
            f"{MAX_FOREIGN_BUSY:.0%} busy with no traffic, no number is given either. Median of "
            f"{spec.runs} runs, interleaved across ways; cv = stdev/mean of ns_per_packet. "
            f"Compare ways by ratio; absolute numbers on shared machines drift."
        )


def judge_whole_core(levels: list[dict], base_frac: float = 0.0) -> dict:
    """The whole-core figure from the paced levels, and whether overload caused receive livelock.

    The figure comes from the highest load the LB kept up with, below any collapse. Livelock is
    judged on its own: forwarding that FALLS as offered load rises past the core's capacity (the
    receive softirq, which runs first, takes the core from the LB). Both can be true of one run:
    the LB costs X per packet where it keeps up, and livelocks when overloaded."""
    collapse, livelock = len(levels), None
    for i, hi in enumerate(levels):
        lo = max(
            (
                lo
                for lo in levels[:i]
                if hi["offered"] > lo["offered"] and hi["forwarded"] < COLLAPSE * lo["forwarded"]
            ),
            key=lambda lo: lo["forwarded"],
            default=None,
        )  # the peak it fell from
        if lo is not None:
            collapse = i
            livelock = {
                "forwarded_pps": round(lo["forwarded"] / lo["seconds"]),
                "then_offered_pps": round(hi["offered"] / hi["seconds"]),
                "fell_to_pps": round(hi["forwarded"] / hi["seconds"]),
            }
            break
    kept = [
        w
        for w in levels[:collapse]
        if w["forwarded"] > 0 and w["offered"] > 0 and w["forwarded"] >= KEPT_UP * w["offered"]
    ]
    out: dict = {
        "whole_core": levels,
        "livelock": livelock is not None,
        "livelock_at": livelock,
        "whole_core_ns_per_packet": None,
        "whole_core_at_pps": None,
        "lb_core_busy_without_traffic": round(base_frac, 3),
    }
    if base_frac > MAX_FOREIGN_BUSY:
        out["whole_core_note"] = (
            f"the LB core was {base_frac:.0%} busy with other work before "
            f"any traffic: no whole-core figure (and livelock cannot be "
            f"judged)"
        )
        out["livelock"], out["livelock_at"] = False, None
        return out
    if livelock:
        out["whole_core_note"] = (
            "receive livelock: forwarding fell as the offered load rose past "
            "what the core could take"
        )
    if not kept:
        out.setdefault("whole_core_note", "the LB kept up with none of the paced loads")
    else:
        best = max(kept, key=lambda w: w["offered"])
        out["whole_core_ns_per_packet"] = best["core_busy_ours_s"] / best["forwarded"] * 1e9
        out["whole_core_lb_process_ns"] = (best["user_s"] + best["sys_s"]) / best["forwarded"] * 1e9
        out["whole_core_at_pps"] = best["offered_pps"]
    return out
