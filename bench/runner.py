"""``vnflab bench``: per-packet cost of a load-balancer way, measured the same way for every way.

One invocation = one sandbox (fresh net/pid/mount namespaces, see ``testbed.sandbox``) holding one
Testbed topology (``testbed.experiment.Testbed``, no backend servers). Runs of the ways being
compared are interleaved (a, b, a, b, ...) so machine drift hits them all alike.

One run of one way (``KernelPathDriver``, used by the socket and AF_PACKET ways):

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
   socket way's receive buffer at any average rate); CPU 1's busy time (window minus its idle time from
   /proc/stat: with NO_HZ the idle time is measured at idle entry/exit, not sampled by the tick)
   divided by forwarded frames, taken at the highest offered load the LB still kept up with.
   If forwarding collapses as offered load rises further (receive livelock: the softirq starves
   the LB), ``livelock`` is true and ``livelock_at`` says where; the figure below it stands.

Sink: the switch's port facing the LB drops every frame the LB transmits, on arrival, with a
two-instruction BPF program (``return TC_ACT_SHOT``, loaded with bpf(2) from Python, no compiler
needed) at its tc ingress hook: the end of the LB's wire. A veth transmit runs the receiving
side's first steps in the sender's softirq, so what the LB pays per frame is its transmit plus
that hand-off (a backlog enqueue and one BPF run), much like writing a NIC's TX descriptor; the
switch's forwarding and the backends' stacks, which are not the LB's work, never run. (Earlier
versions forwarded to XDP sinks on the backends and steered the switch's work to the generator's
core with RPS: that charged the LB a flow hash and a cross-core enqueue per frame, starved the
generator's core, and left the LB half idle with 2-3x swings in the offered rate between runs.)
Without tc/BPF the backends' kernels drop the UDP instead and the switch's work lands on the LB's
core (``sink: "backends"``, said in the method). The LB host gets static neighbour entries for
the backends, and the bridge static FDB entries, so no ARP or flooding happens mid-window.

The DPDK way needs a generator on the vhost side instead of trafgen over veth (veth caps near
0.5 Mpps): ``DRIVERS`` maps each way to its driver; ``DpdkDriver`` (no topology: a DPDK generator
process on a net_vhost socket, the LB on net_virtio_user) measures busy cycles per packet, and
with ``baseline="testpmd"`` also dpdk-testpmd io and the binding's io-forward on the same vdevs.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import platform
import re
import resource
import signal
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from vnf.addresses import LB_MAC, VIP
from vnf.checksum import internet_checksum
from testbed.experiment import SERVICE_PORT, ExperimentSpec, cpu_times, log, read_json, stop_process

GEN_CPU, LB_CPU = 0, 1
BPFFS = "/sys/fs/bpf"
DROP_PROG_PIN = f"{BPFFS}/vnflab_drop"
WHOLE_CORE_FRACTIONS = (0.3, 0.6, 0.9, 1.2)   # offered load, relative to the saturation rate
KEPT_UP = 0.95          # forwarded >= 95 % of offered: the LB keeps up at that load
MAX_FOREIGN_BUSY = 0.25  # LB core busier than this with no traffic: no whole-core figure
COLLAPSE = 0.7          # forwarded falls below 70 % of an earlier, lower load's: livelock


@dataclass
class BenchSpec:
    ways: list[str] = field(default_factory=lambda: ["socket"])
    runs: int = 5
    seconds: float = 3.0
    batches: list[int] | None = None       # io "batch" sweep (afpacket, dpdk)
    flows: int = 1024
    payload: int = 18                       # UDP payload bytes (60-byte frames)
    whole_core: bool = True
    warmup_s: float = 0.5
    timeout_s: float = 1800.0
    baseline: str | None = None            # "testpmd": dpdk-testpmd io on the same vdevs (dpdk)
    style: str = "vector"                   # AF_PACKET style: "vector" (reference) or "perpacket"
    tx: str = "sendmmsg"                    # AF_PACKET transmit: "sendmmsg" (reference) or "ring"
    dpdk_io: dict | None = None            # extra io options of the DPDK LB (model, lcores, queues)

    def variants(self) -> list[tuple[str, int | None]]:
        out = []
        for way in self.ways:
            if self.batches and way != "socket":
                out += [(way, b) for b in self.batches]
            else:
                out.append((way, None))
        return out

    def validate(self) -> "BenchSpec":
        if self.style not in ("vector", "perpacket"):
            raise ValueError(f"style: must be vector or perpacket, got {self.style!r}")
        if self.tx not in ("sendmmsg", "ring"):
            raise ValueError(f"tx: must be sendmmsg or ring, got {self.tx!r}")
        for w in self.ways:
            if w not in DRIVERS:
                raise ValueError(f"way: must be one of {', '.join(DRIVERS)}, got {w!r}")
        if len(set(self.ways)) != len(self.ways):
            raise ValueError(f"way: listed twice in {self.ways}")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise ValueError(f"runs: need at least 1, got {self.runs!r}")
        if not self.seconds > 0:
            raise ValueError(f"seconds: must be > 0, got {self.seconds!r}")
        if self.batches is not None and any((not isinstance(b, int)) or b < 1 for b in self.batches):
            raise ValueError(f"batch: whole numbers >= 1, got {self.batches!r}")
        if not 1 <= self.flows <= 60000:
            raise ValueError(f"flows: 1..60000, got {self.flows!r}")
        if self.baseline not in (None, "testpmd"):
            raise ValueError(f"baseline: only 'testpmd' is known, got {self.baseline!r}")
        if self.dpdk_io is not None:
            if not isinstance(self.dpdk_io, dict):
                raise ValueError(f"dpdk_io: a dict of io options, got {self.dpdk_io!r}")
            owned = sorted(set(self.dpdk_io) & set(DPDK_IO_OWNED))
            if owned:
                raise ValueError(f"dpdk_io: {', '.join(owned)} set by the bench itself "
                                 f"(burst: use batches; both styles are measured)")
            if self.dpdk_io.get("model", "rtc") not in ("rtc", "pipeline"):
                raise ValueError(f"dpdk_io: model must be rtc or pipeline, "
                                 f"got {self.dpdk_io['model']!r}")
            for k in ("lcores", "queues"):
                v = self.dpdk_io.get(k, 1)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"dpdk_io: {k} must be a whole number >= 1, got {v!r}")
        return self


# io options of the DPDK LB that the bench sets itself (not overridable through dpdk_io)
DPDK_IO_OWNED = ("vdev", "vhost_socket", "style", "burst", "batch")


def parse_io_options(text: str) -> dict:
    """``"model=pipeline,lcores=2,queues=2"`` -> ``{"model": "pipeline", "lcores": 2,
    "queues": 2}`` (``vnflab bench --dpdk-io``): key=value pairs, whole numbers as ints."""
    out: dict = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ValueError(f"dpdk-io: expected key=value, got {item!r}")
        if key in out:
            raise ValueError(f"dpdk-io: {key} given twice")
        out[key] = int(value) if re.fullmatch(r"[+-]?\d+", value) else value
    return out


# ------------------------------------------------------------------------------------------
# packets: the generator's frames, built here with correct checksums
# ------------------------------------------------------------------------------------------

def _ip4(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int,
              payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP with correct header and UDP checksums."""
    udp_len = 8 + len(payload)
    src, dst = _ip4(src_ip), _ip4(dst_ip)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, sport & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    c = internet_checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + ip + udp


def trafgen_config(frames: list[bytes]) -> str:
    """trafgen's packet config: one ``{ ... }`` per frame; trafgen cycles through them."""
    return "\n".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }" for f in frames) + "\n"


# ------------------------------------------------------------------------------------------
# the sink: "return TC_ACT_SHOT" loaded with bpf(2), pinned, attached with tc(8)
# ------------------------------------------------------------------------------------------

BPF_PROG_TYPE_SCHED_CLS, TC_ACT_SHOT = 3, 2


def load_tc_drop(pin_path: str = DROP_PROG_PIN) -> None:
    """Load ``r0 = TC_ACT_SHOT; exit`` as a tc classifier (direct action) and pin it."""
    libc = ctypes.CDLL(None, use_errno=True)
    nr_bpf = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
    if nr_bpf is None:
        raise OSError(f"bpf(2) syscall number unknown for {platform.machine()}")
    # BPF_MOV64_IMM(R0, TC_ACT_SHOT); BPF_EXIT
    insns = struct.pack("<BBhi", 0xB7, 0x00, 0, TC_ACT_SHOT) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log_buf = ctypes.create_string_buffer(4096)
    attr = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_SCHED_CLS, 2, ctypes.addressof(insn_buf),
                       ctypes.addressof(lic), 1, len(log_buf), ctypes.addressof(log_buf), 0, 0,
                       b"vnflab_drop")
    attr_buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    fd = libc.syscall(nr_bpf, 5, attr_buf, 128)          # BPF_PROG_LOAD
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_LOAD: {os.strerror(err)} {log_buf.value.decode(errors='replace')}")
    try:
        path = ctypes.create_string_buffer(pin_path.encode())
        pin = struct.pack("<QII", ctypes.addressof(path), fd, 0).ljust(128, b"\0")
        pin_buf = ctypes.create_string_buffer(pin, 128)
        if libc.syscall(nr_bpf, 6, pin_buf, 128) < 0:    # BPF_OBJ_PIN
            err = ctypes.get_errno()
            raise OSError(err, f"BPF_OBJ_PIN {pin_path}: {os.strerror(err)}")
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# counters
# ------------------------------------------------------------------------------------------

def netdev(pid: int | str = "self") -> dict[str, dict[str, int]]:
    """Interface counters of the network namespace of ``pid`` (/proc/PID/net/dev)."""
    out = {}
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f.readlines()[2:]:
            name, rest = line.split(":", 1)
            v = [int(x) for x in rest.split()]
            out[name.strip()] = {"rx_packets": v[1], "rx_dropped": v[3], "tx_packets": v[9],
                                 "tx_dropped": v[11]}
    return out


def calibrate(cpu: int = LB_CPU) -> float:
    """How fast the LB's core is right now: CPU milliseconds for a FIXED memory-bound workload
    (20 passes of random cache-line updates over 16 MiB, the size of an RX ring) pinned on
    ``cpu``, run between the ways' runs while that core is free. On a shared VM the answer
    drifts (measured: CV 11-13 % for this very workload, whatever runs on the other core), and
    no packet path that touches memory can be steadier than the machine under it: the bench
    prints this CV next to the ways'."""
    import numpy as np
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        buf = np.zeros(16 << 20, dtype=np.uint8)
        lines = np.random.default_rng(1).integers(0, len(buf) // 64, 200_000) * 64
        buf[lines] += 1                                  # fault the pages in: not timed
        t0 = time.thread_time_ns()
        for _ in range(20):
            buf[lines] += 1
        return (time.thread_time_ns() - t0) / 1e6
    finally:
        os.sched_setaffinity(0, before)


def cpu_idle_s(cpu: int) -> float:
    """Idle + iowait seconds of one CPU (/proc/stat; NO_HZ measures these at idle entry/exit)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return (v[3] + v[4]) / tick
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


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
        self.bed = Testbed(ExperimentSpec(way=first_dsr if first_dsr != "dpdk" else "afpacket",
                                          clients=1, backends=3), workdir, start_servers=False)
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
        frames = [udp_frame(self.cfg.host_mac("c1"), self.cfg.host_mac("lb"), self.cfg.host_ip("c1"),
                            self.cfg.vip, 10000 + i, SERVICE_PORT, payload) for i in range(spec.flows)]
        self.frame_len = len(frames[0])
        with open(self.cfg_path, "w") as f:
            f.write(trafgen_config(frames))
        self.frames_path = os.path.join(workdir, "frames.bin")      # the same, for the pacer
        with open(self.frames_path, "wb") as f:
            f.write(b"".join(frames))
        self.vip_local = self.bed.vip_mode == "local"
        self.set_rps(False)

    def _static_l2(self) -> None:
        for b in self.cfg.backend_names():
            self.lb.cmd(f"ip neigh replace {self.cfg.host_ip(b)} lladdr {self.cfg.host_mac(b)} "
                        f"dev lb-eth0 nud permanent")
        for name in self.cfg.host_names():
            port = self.net[name].intf().link
            sw_intf = port.intf2 if port.intf1.node is self.net[name] else port.intf1
            subprocess.run(["bridge", "fdb", "replace", self.cfg.host_mac(name), "dev", sw_intf.name,
                            "master", "static"], check=True)

    def _install_sink(self) -> str:
        """Drop what the LB transmits at the switch port's tc ingress (see the module docstring).
        The port lives in the sandbox's own network namespace: plain tc reaches it."""
        port = self.lb_switch_port
        try:
            os.makedirs(BPFFS, exist_ok=True)
            subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=True, capture_output=True)
            load_tc_drop()
            for argv in (["tc", "qdisc", "add", "dev", port, "clsact"],
                         ["tc", "filter", "add", "dev", port, "ingress", "bpf", "direct-action",
                          "object-pinned", DROP_PROG_PIN]):
                out = subprocess.run(argv, capture_output=True, text=True)
                if out.returncode:
                    raise OSError(f"{' '.join(argv)}: {(out.stdout + out.stderr).strip()[:300]}")
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
            argv = ["taskset", "-c", str(GEN_CPU), sys.executable, "-m", "testbed.pacer",
                    "c1-eth0", self.frames_path, "--frame-len", str(self.frame_len),
                    "--rate", str(int(rate_pps))]
        else:
            argv = ["taskset", "-c", str(GEN_CPU), "trafgen", "-o", "c1-eth0", "-i", self.cfg_path,
                    "-P", "1", "--no-sock-mem", "-q"]
        out = open(os.path.join(self.workdir, f"gen-{tag}.log"), "wb")
        return self.gen.popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def stop_gen(self, proc: subprocess.Popen) -> None:
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

    def snapshot(self, lb_pid: int) -> dict:
        lbdev = netdev(self.lb.pid)["lb-eth0"]
        gendev = netdev(self.gen.pid)["c1-eth0"]
        return {"t": time.monotonic(), "cpu": cpu_times(lb_pid), "idle": cpu_idle_s(LB_CPU),
                "lb_tx": lbdev["tx_packets"], "lb_rx_dropped": lbdev["rx_dropped"],
                "offered": gendev["tx_packets"]}

    def window(self, lb_pid: int, seconds: float) -> dict:
        a = self.snapshot(lb_pid)
        time.sleep(seconds)
        b = self.snapshot(lb_pid)
        user, sys_, _ = b.pop("cpu").since(a.pop("cpu"))
        d = {k: b[k] - a[k] for k in a}
        wall = d.pop("t")
        fwd = d["lb_tx"]
        out = {"seconds": round(wall, 3), "forwarded": fwd, "offered": d["offered"],
               "lb_rx_dropped": d["lb_rx_dropped"],
               "user_s": round(user, 4), "sys_s": round(sys_, 4),
               "core_busy_s": round(max(0.0, wall - d["idle"]), 3),
               "fwd_pps": round(fwd / wall), "offered_pps": round(d["offered"] / wall)}
        return out

    def close(self) -> None:
        self.bed.close()


# ------------------------------------------------------------------------------------------
# drivers: one per way
# ------------------------------------------------------------------------------------------

class KernelPathDriver:
    """Socket and AF_PACKET ways: trafgen over veth on the Testbed, LB on CPU 1."""

    def available(self, way: str) -> str | None:
        try:
            __import__(f"vnf.ways.{way}_lb")
        except ImportError as exc:
            return f"not available: {exc}"
        return None

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
        bb.set_vip_local(way == "socket")    # socket: a proxy that owns the VIP; others: DSR
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
            time.sleep(0.1)         # let the backlog drain between levels
        return judge_whole_core(levels, base_frac)


def judge_whole_core(levels: list[dict], base_frac: float = 0.0) -> dict:
    """The whole-core figure from the paced levels, and whether overload caused receive livelock.

    The figure comes from the highest load the LB kept up with, below any collapse. Livelock is
    judged on its own: forwarding that FALLS as offered load rises past the core's capacity (the
    receive softirq, which runs first, takes the core from the LB). Both can be true of one run:
    the LB costs X per packet where it keeps up, and livelocks when overloaded."""
    collapse, livelock = len(levels), None
    for i, hi in enumerate(levels):
        lo = max((lo for lo in levels[:i] if hi["offered"] > lo["offered"]
                  and hi["forwarded"] < COLLAPSE * lo["forwarded"]),
                 key=lambda lo: lo["forwarded"], default=None)      # the peak it fell from
        if lo is not None:
            collapse = i
            livelock = {"forwarded_pps": round(lo["forwarded"] / lo["seconds"]),
                        "then_offered_pps": round(hi["offered"] / hi["seconds"]),
                        "fell_to_pps": round(hi["forwarded"] / hi["seconds"])}
            break
    kept = [w for w in levels[:collapse] if w["forwarded"] > 0 and w["offered"] > 0
            and w["forwarded"] >= KEPT_UP * w["offered"]]
    out: dict = {"whole_core": levels, "livelock": livelock is not None, "livelock_at": livelock,
                 "whole_core_ns_per_packet": None, "whole_core_at_pps": None,
                 "lb_core_busy_without_traffic": round(base_frac, 3)}
    if base_frac > MAX_FOREIGN_BUSY:
        out["whole_core_note"] = (f"the LB core was {base_frac:.0%} busy with other work before any "
                                  f"traffic: no whole-core figure (and livelock cannot be judged)")
        out["livelock"], out["livelock_at"] = False, None
        return out
    if livelock:
        out["whole_core_note"] = ("receive livelock: forwarding fell as the offered load rose past "
                                  "what the core could take")
    if not kept:
        out.setdefault("whole_core_note", "the LB kept up with none of the paced loads")
    else:
        best = max(kept, key=lambda w: w["offered"])
        out["whole_core_ns_per_packet"] = best["core_busy_ours_s"] / best["forwarded"] * 1e9
        out["whole_core_lb_process_ns"] = (best["user_s"] + best["sys_s"]) / best["forwarded"] * 1e9
        out["whole_core_at_pps"] = best["offered_pps"]
    return out


class PlainBed:
    """What the DPDK driver needs of a bench bed when no kernel-path way runs (no topology)."""

    sink = "none"

    def __init__(self, spec: BenchSpec, workdir: str):
        self.spec, self.workdir = spec, workdir

    def close(self) -> None:
        pass


DPDK_GEN_MEM_MB = 128
DPDK_LB_MEM_MB = 128

# The generator: a DPDK process on the vhost side (net_vhost, server), pinned to GEN_CPU. It
# waits for its peer, then runs vnf.dpdk's C gen_loop: copies of the prebuilt frames (flow i on
# queue i % queues) as fast as the port takes them, and frees what comes back (the sink).
_DPDK_GEN = r"""
import json, sys, time
from vnf import dpdk
from vnf.dpdk import _dpdk
sock, queues, nflows, payload, core = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
from bench.runner import udp_frame
dpdk.init(cores=[core], mem_mb=%(mem)d, reserve_hugepages=True)
pool = dpdk.pool(n=16383)
port = dpdk.Port.open("net_vhost0,iface=%%s,queues=%%d" %% (sock, queues), pool, queues, queues)
frames = [udp_frame("02:00:00:00:01:01", "%(mac)s", "10.1.%%d.%%d" %% (i // 250, i %% 250 + 1),
                    "%(vip)s", 10000 + i %% 50000, 8080, b"VNFLBENCH".ljust(payload, b"."))
          for i in range(nflows)]
print("listening", flush=True)
deadline = time.monotonic() + 60
while not port.link()["up"]:
    if time.monotonic() > deadline:
        raise SystemExit("no peer on the vhost socket")
    time.sleep(0.02)
print("up", flush=True)
seconds = float(sys.stdin.readline())
r = _dpdk.gen_loop(port.id, pool, frames, queues, 32, seconds)
print("GEN " + json.dumps(r), flush=True)
""" % {"mem": DPDK_GEN_MEM_MB, "mac": LB_MAC, "vip": VIP}

# io-forward through the binding, in Python: rx_burst -> tx_burst per burst, nothing else.
_DPDK_BINDING_IO = r"""
import json, os, signal, sys, time
from vnf import dpdk
vdev, burst, core = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dpdk.init(cores=[core], mem_mb=%(mem)d, reserve_hugepages=True)
pool = dpdk.pool(n=8191)
port = dpdk.Port.open(vdev, pool)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("ready", flush=True)
rx, tx, pid, buf = dpdk.rx_burst, dpdk.tx_burst, port.id, dpdk.Burst(burst)
while not stop:
    for _ in range(1000):
        tx(pid, 0, rx(pid, 0, burst, buf))
b = dpdk.busy_stats()
print("IO " + json.dumps({"ns_per_packet": b["ns_per_packet"], "packets": b["busy_packets"]}), flush=True)
""" % {"mem": DPDK_LB_MEM_MB}


class DpdkDriver:
    """DPDK: the LB's virtio-user port talks to a DPDK generator on the vhost-user side.

    No Mininet, no veth (veth caps near 0.5 Mpps): a generator process (pinned to GEN_CPU, a C
    loop of the binding) owns a ``net_vhost`` server socket; the LB (pinned to LB_CPU) connects
    with ``net_virtio_user``. Per run: the vectorised LB, the per-packet LB, and with
    ``--baseline testpmd`` also ``dpdk-testpmd --forward-mode=io`` and the binding's Python
    io-forward loop, each on the same vdevs, each its own process, interleaved.
    """

    def available(self, way: str) -> str | None:
        try:
            __import__(f"vnf.ways.{way}_lb")
            from vnf import dpdk
        except ImportError as exc:
            return f"not available: {exc}"
        if not dpdk.available():
            return f"not available: the DPDK binding is not built ({dpdk.IMPORT_ERROR})"
        return None

    # --- pieces -------------------------------------------------------------------------------
    @staticmethod
    def _env() -> dict:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return dict(os.environ, PYTHONPATH=os.pathsep.join([here, *sys.path]))

    def _start_gen(self, bb, sock: str, tag: str, queues: int = 1) -> subprocess.Popen:
        spec = bb.spec
        argv = ["taskset", "-c", str(GEN_CPU), sys.executable, "-c", _DPDK_GEN, sock, str(queues),
                str(spec.flows), str(spec.payload), str(GEN_CPU)]
        err = open(os.path.join(bb.workdir, f"gen-{tag}.log"), "wb")
        gen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                               text=True, env=self._env())
        self._expect(gen, "listening", "the DPDK generator")
        return gen

    @staticmethod
    def _expect(proc: subprocess.Popen, word: str, what: str, timeout: float = 60) -> str:
        """The first line of proc's stdout starting with word (proc is killed on timeout)."""
        import threading
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                if line.startswith(word):
                    return line
        finally:
            timer.cancel()
        proc.kill()
        raise RuntimeError(f"{what} did not say {word!r} within {timeout:.0f} s "
                           f"(exit {proc.wait()})")

    def _gen_result(self, gen: subprocess.Popen, seconds: float) -> dict:
        line = self._expect(gen, "GEN ", "the DPDK generator", timeout=seconds + 30)
        gen.wait(10)
        return json.loads(line[4:])

    def _vdev(self, sock: str, queues: int = 1) -> str:
        return f"net_virtio_user0,path={sock},queues={queues},mac={LB_MAC}"

    @staticmethod
    def lb_queues(io: dict) -> int:
        """The queue pairs the DPDK LB opens for these io options (as vnf.ways.dpdk_lb does:
        rtc defaults to one per lcore, pipeline to 1, and never fewer than lcores, since
        pipeline workers transmit on their own TX queue); the generator must match it."""
        return max(int(io.get("queues", 1)), int(io.get("lcores", 1)))

    def lb_io(self, spec: BenchSpec, sock: str, style: str, burst: int) -> dict:
        """The LB's io: the bench's own options, with ``spec.dpdk_io`` merged in."""
        extra = dict(spec.dpdk_io or {})
        io = {"style": style, "burst": burst, "cpus": [LB_CPU], "mem_mb": DPDK_LB_MEM_MB}
        io.update(extra)
        io["vdev"] = self._vdev(sock, self.lb_queues(io))
        return io

    def measure_lb(self, bb, style: str, burst: int, tag: str) -> dict:
        """The LB program itself: busy cycles over a window (SIGUSR1 stats at both ends)."""
        spec = bb.spec
        sock = os.path.join(bb.workdir, f"{tag}-{style}.sock")
        io = self.lb_io(spec, sock, style, burst)
        gen = self._start_gen(bb, sock, f"{tag}-{style}", self.lb_queues(io))
        cfg_path = os.path.join(bb.workdir, f"lb-{tag}-{style}.json")
        stats_path = os.path.join(bb.workdir, f"lb-{tag}-{style}-stats.json")
        ready = os.path.join(bb.workdir, f"lb-{tag}-{style}.ready")
        backends = [{"name": f"b{i}", "ip": f"10.0.0.{100 + i}", "mac": f"02:00:00:00:02:{i:02x}",
                     "port": SERVICE_PORT} for i in (1, 2, 3)]
        with open(cfg_path, "w") as f:
            json.dump({"lb": {"vip": VIP, "port": SERVICE_PORT, "policy": "maglev",
                              "backends": backends},
                       "io": io}, f)
        log_f = open(os.path.join(bb.workdir, f"lb-{tag}-{style}.log"), "wb")
        lb = subprocess.Popen(["taskset", "-c", str(LB_CPU), sys.executable, "-m",
                               "vnf.ways.dpdk_lb", "--config", cfg_path, "--ready-file", ready,
                               "--stats-file", stats_path], stdout=log_f,
                              stderr=subprocess.STDOUT, env=self._env())
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(ready):
                if lb.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the DPDK LB did not get ready (exit {lb.poll()})")
                time.sleep(0.05)
            self._expect(gen, "up", "the DPDK generator")
            total = spec.warmup_s + spec.seconds + 1.0
            gen.stdin.write(f"{total}\n")
            gen.stdin.flush()
            time.sleep(spec.warmup_s)
            a = self._snapshot(lb, stats_path)
            time.sleep(spec.seconds)
            b = self._snapshot(lb, stats_path)
            g = self._gen_result(gen, total)
        finally:
            stop_process(lb, 10)
            stop_process(gen, 10)
        cyc = b["busy"]["cycles"] - a["busy"]["cycles"]
        pkts = b["busy"]["rx_packets"] - a["busy"]["rx_packets"]
        wall = b["uptime_s"] - a["uptime_s"]
        sent = b["sent"] - a["sent"]
        cpu = (b["cpu_user_s"] + b["cpu_sys_s"]) - (a["cpu_user_s"] + a["cpu_sys_s"])
        mpps = sent / wall / 1e6 if wall > 0 else None
        look = {k: sum(c.get(k, 0) for c in b.get("flow_cache") or []) -
                sum(c.get(k, 0) for c in a.get("flow_cache") or []) for k in ("hits", "misses")}
        return {"ns_per_packet": cyc / pkts / b["busy"]["tsc_hz"] * 1e9 if pkts else None,
                "mpps": mpps, "saturation_ns_per_packet": 1e3 / mpps if mpps else None,
                "cpu_ns_per_packet": cpu / sent * 1e9 if sent else None,
                "forwarded": sent, "received": pkts, "seconds": wall,
                "offered_mpps": g["tried"] / g["seconds"] / 1e6,
                "generated_mpps": g["tx"] / g["seconds"] / 1e6,
                "split_check": {"new_flows": b["lb"]["new_flows"], "flows": spec.flows},
                "lb_io": {k: b.get(k) for k in ("model", "lcores", "queues")},
                "busy_ns_per_forwarded": cyc / sent / b["busy"]["tsc_hz"] * 1e9 if sent else None,
                "busy_bursts": b["busy"]["bursts"] - a["busy"]["bursts"],
                "ring_drops": (b.get("ring_drops") or 0) - (a.get("ring_drops") or 0),
                # vector style: share of lookups that missed the C flow cache (Python path)
                "flow_cache_miss_rate": (look["misses"] / (look["hits"] + look["misses"])
                                         if look["hits"] + look["misses"] else None),
                "new_flows_per_lcore": [x.get("new_flows") for x in b.get("lb_per_lcore") or []]}

    @staticmethod
    def _snapshot(lb: subprocess.Popen, path: str) -> dict:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        lb.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = read_json(path)
            if data is not None:
                return data
            if lb.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError("the DPDK LB wrote no stats")

    def measure_testpmd(self, bb, burst: int, tag: str) -> dict:
        """dpdk-testpmd --forward-mode=io on the same virtio-user vdev (busy cycles/packet
        from --record-core-cycles; forwarding rate from what the generator gets back)."""
        spec = bb.spec
        sock = os.path.join(bb.workdir, f"{tag}-tpmd.sock")
        gen = self._start_gen(bb, sock, f"{tag}-tpmd")
        argv = ["taskset", "-c", f"{GEN_CPU},{LB_CPU}", "stdbuf", "-oL", "dpdk-testpmd",
                "--no-pci", "--in-memory", "--single-file-segments", "-l", f"{GEN_CPU},{LB_CPU}",
                "--main-lcore", str(GEN_CPU), "-m", str(DPDK_LB_MEM_MB),
                "--file-prefix", f"vnfltpmd{os.getpid()}", "--log-level=error",
                "--vdev", self._vdev(sock), "--", "--forward-mode=io", "--port-topology=loop",
                "--nb-cores=1", f"--burst={burst}", "--record-core-cycles",
                "--total-num-mbufs=8191"]
        tp = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        try:
            self._expect(tp, "Press enter to exit", "dpdk-testpmd")
            self._expect(gen, "up", "the DPDK generator")
            total = spec.warmup_s + spec.seconds
            gen.stdin.write(f"{total}\n")
            gen.stdin.flush()
            g = self._gen_result(gen, total)
            tp.stdin.write("\n")
            tp.stdin.flush()
            out = tp.communicate(timeout=20)[0]
        finally:
            stop_process(tp, 10)
            stop_process(gen, 10)
        import re
        cpp = re.findall(r"CPU cycles/packet=([\d.]+)", out)
        mhz = re.findall(r"at (\d+) MHz Clock", out)
        ns = float(cpp[-1]) / float(mhz[-1]) * 1e3 if cpp and mhz else None
        mpps = g["rx"] / g["seconds"] / 1e6
        return {"ns_per_packet": ns, "mpps": mpps, "offered_mpps": g["tried"] / g["seconds"] / 1e6}

    def measure_binding_io(self, bb, burst: int, tag: str) -> dict:
        """The binding's io-forward in a Python loop (rx_burst -> tx_burst), same vdevs."""
        spec = bb.spec
        sock = os.path.join(bb.workdir, f"{tag}-bio.sock")
        gen = self._start_gen(bb, sock, f"{tag}-bio")
        io = subprocess.Popen(["taskset", "-c", str(LB_CPU), sys.executable, "-c",
                               _DPDK_BINDING_IO, self._vdev(sock), str(burst), str(LB_CPU)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=self._env())
        try:
            self._expect(io, "ready", "the binding io loop")
            self._expect(gen, "up", "the DPDK generator")
            total = spec.warmup_s + spec.seconds
            gen.stdin.write(f"{total}\n")
            gen.stdin.flush()
            g = self._gen_result(gen, total)
            io.terminate()
            r = json.loads(self._expect(io, "IO ", "the binding io loop")[3:])
        finally:
            stop_process(io, 10)
            stop_process(gen, 10)
        return {"ns_per_packet": r["ns_per_packet"], "mpps": g["rx"] / g["seconds"] / 1e6}

    # --- one run -----------------------------------------------------------------------------
    def run(self, bb, way: str, batch: int | None, tag: str) -> dict:
        burst = batch or 32
        res: dict = {"way": way, "batch": batch, "burst": burst}
        # the reference: the fused style (one C call per burst); then the lab's vector style
        # (a C call per step) and the per-packet style, in the same run
        ref = self.measure_lb(bb, "fused", burst, tag)
        res.update({k: ref[k] for k in ("ns_per_packet", "mpps", "saturation_ns_per_packet",
                                        "cpu_ns_per_packet", "offered_mpps")})
        res["fused"] = ref
        vec = self.measure_lb(bb, "vector", burst, tag)
        res["vector"] = vec
        res["vector_ns_per_packet"] = vec["ns_per_packet"]
        pp = self.measure_lb(bb, "perpacket", burst, tag)
        res["perpacket"] = pp
        res["perpacket_ns_per_packet"] = pp["ns_per_packet"]
        if bb.spec.baseline == "testpmd":
            tp = self.measure_testpmd(bb, burst, tag)
            bio = self.measure_binding_io(bb, burst, tag)
            res["testpmd_io"], res["binding_io"] = tp, bio
            if tp["ns_per_packet"] and ref["ns_per_packet"]:
                res["baseline_ratio"] = tp["ns_per_packet"] / ref["ns_per_packet"]
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
    @staticmethod
    def summary(ok: list[dict]) -> dict:
        def med(key, nd=1):
            return _r(_median([r.get(key) for r in ok]), nd)

        def sub(name, key, nd=1):
            return _r(_median([(r.get(name) or {}).get(key) for r in ok]), nd)
        return {"saturation_ns_per_packet": med("saturation_ns_per_packet"),
                "cpu_ns_per_packet": med("cpu_ns_per_packet"),
                "offered_mpps": med("offered_mpps", 4),
                "mpps_cv": _r(_cv([r.get("mpps") for r in ok]), 3),
                "vector_ns_per_packet": med("vector_ns_per_packet"),
                "vector_cv": _r(_cv([r.get("vector_ns_per_packet") for r in ok]), 3),
                "nf_ns_per_packet": med("nf_ns_per_packet"),
                "perpacket_ns_per_packet": med("perpacket_ns_per_packet"),
                "perpacket_mpps": sub("perpacket", "mpps", 4),
                "perpacket_cv": _r(_cv([r.get("perpacket_ns_per_packet") for r in ok]), 3),
                "baseline": "testpmd" if any("testpmd_io" in r for r in ok) else None,
                "baseline_ratio": med("baseline_ratio", 3),
                "baseline_ratio_mpps": med("baseline_ratio_mpps", 3),
                "testpmd_io_ns_per_packet": sub("testpmd_io", "ns_per_packet"),
                "testpmd_io_mpps": sub("testpmd_io", "mpps", 4),
                "binding_io_ns_per_packet": sub("binding_io", "ns_per_packet"),
                "binding_io_mpps": sub("binding_io", "mpps", 4),
                "binding_io_ratio": med("binding_io_ratio", 3),
                "binding_io_ratio_mpps": med("binding_io_ratio_mpps", 3)}

    @staticmethod
    def table_line(w: dict) -> str:
        txt = (f"dpdk(burst={w.get('batch') or 32}): fused (reference) "
               f"{_f(w.get('ns_per_packet'))} ns/pkt busy, "
               f"{_f(w.get('saturation_ns_per_packet'))} ns/pkt at saturation; lab vector style "
               f"{_f(w.get('vector_ns_per_packet'))} ns/pkt busy; per-packet style "
               f"{_f(w.get('perpacket_ns_per_packet'))} ns/pkt busy")
        if w.get("baseline"):
            txt += (f"; testpmd io {w.get('testpmd_io_ns_per_packet')} ns/pkt, "
                    f"{w.get('testpmd_io_mpps')} Mpps; binding io-forward "
                    f"{w.get('binding_io_ns_per_packet')} ns/pkt = {w.get('binding_io_ratio')}x "
                    f"testpmd; LB = {w.get('baseline_ratio')}x testpmd io; the NF adds "
                    f"{_f(w.get('nf_ns_per_packet'))} ns/pkt to the binding's io-forward")
        return txt

    @staticmethod
    def method(spec: BenchSpec) -> str:
        return (
            f"generator = a DPDK process (the binding's C gen_loop) on a net_vhost server socket, "
            f"pinned to CPU {GEN_CPU}: {spec.flows} UDP flows to {VIP}:{SERVICE_PORT} "
            f"(source addresses/ports vary), dst MAC {LB_MAC}, {spec.payload}-byte payload, "
            f"sent as fast as the vhost port takes them; it also frees whatever comes back (the "
            f"sink). The LB (python -m vnf.ways.dpdk_lb, net_virtio_user client, pinned to CPU "
            f"{LB_CPU}) runs with style fused (the reference: parse, flow cache and rewrite in one C "
            f"call per burst), then vector (the lab's: one C call per step), then perpacket. "
            f"ns_per_packet = busy TSC cycles "
            f"(from a non-empty rx_burst to its tx_burst, vnf.dpdk.busy_stats) / packets "
            f"received, over a {spec.seconds:g} s window (stats by SIGUSR1 at both ends); "
            f"saturation_ns_per_packet = 1 / forwarded rate on that one core (includes empty "
            f"polls and anything else the core did); mpps = forwarded / window. With --baseline "
            f"testpmd: dpdk-testpmd --forward-mode=io --port-topology=loop on the same vdev "
            f"(busy cycles/packet from --record-core-cycles; rate = packets back at the "
            f"generator), and the binding's Python rx_burst->tx_burst loop; baseline_ratio = "
            f"testpmd io ns/pkt / LB ns/pkt (busy cycles: the fraction of testpmd's per-core "
            f"rate the LB reaches), baseline_ratio_mpps the same by forwarding rate. Median of "
            f"{spec.runs} runs; cv = stdev/mean over runs. The machine is shared: a busy LB core "
            f"inflates busy cycles (preemption counts as busy)."
            + (f" Extra LB io options: {spec.dpdk_io} (the generator uses as many queues as the "
               f"LB; its lcores' threads are pinned to the io 'cpus')." if spec.dpdk_io else ""))


DRIVERS = {"socket": KernelPathDriver(), "afpacket": KernelPathDriver(), "dpdk": DpdkDriver()}


# ------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------

def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _cv(xs):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return 0.0 if xs else None
    mean = statistics.fmean(xs)
    return statistics.stdev(xs) / mean if mean else None


def _label(way: str, batch) -> str:
    return way if batch is None else f"{way}(batch={batch})"


def method_text(sink: str, spec: BenchSpec) -> str:
    sink_txt = {
        "port-drop": "a BPF program (return TC_ACT_SHOT, 2 instructions, loaded with bpf(2)) at the "
                     "tc ingress of the switch port facing the LB drops each frame the LB "
                     "transmits on arrival; the LB pays its transmit and that hand-off (run in "
                     "its own softirq, as veth does), not the switch's forwarding",
        "backends": "tc/BPF was unavailable: the switch forwards to the backends, whose kernels "
                    "drop the UDP (no listener); with veth that work runs on the LB core and "
                    "inflates its figures by ~1.5 us/packet",
        "none": "none (no way could run)",
    }[sink]
    return (
        f"ns_per_packet: CPU time of the LB process and its workers (exact on-CPU ns from schedstat; "
        f"user/sys split as /proc/PID/stat's ticks sampled it) "
        f"divided by the frames the LB transmitted (lb-eth0 tx_packets) over a {spec.seconds:g} s "
        f"window at saturation; mpps = those frames / window. Generator: trafgen on c1 pinned to "
        f"CPU {GEN_CPU}, UDP to VIP:{SERVICE_PORT} over {spec.flows} flows (source ports), "
        f"correct IP/UDP checksums, {spec.payload}-byte payload; LB pinned to CPU {LB_CPU}. "
        f"Socket way: the LB is a proxy owning the VIP; AF_PACKET way: direct server return, "
        f"style {spec.style}, transmit by {spec.tx}. "
        f"Sink: {sink_txt}. NOT measured in ns_per_packet: the kernel's receive work for the "
        f"LB's interface (with veth it runs on the sender's core, CPU {GEN_CPU}). "
        f"whole_core_ns_per_packet: RPS steers lb-eth0's receive softirq onto CPU {LB_CPU}, "
        f"the same frames paced by testbed.pacer (a sendmmsg of a few frames every ~40 us; "
        f"trafgen's --rate bursts each second's frames at full speed) at {', '.join(f'{f:g}' for f in WHOLE_CORE_FRACTIONS)} x the saturation "
        f"rate; CPU {LB_CPU}'s busy time (window minus its NO_HZ idle time from /proc/stat, less "
        f"the busy fraction measured with no traffic just before: other work on that core) per "
        f"forwarded frame at the highest "
        f"load where forwarded >= {KEPT_UP:.0%} of offered (below any collapse); if forwarding "
        f"falls below {COLLAPSE:.0%} of a lower load's as offered load rises, that is receive "
        f"livelock, said as such (the table adds '(livelock)'); if the core is over {MAX_FOREIGN_BUSY:.0%} busy with no traffic, "
        f"no number is given either. Median of {spec.runs} runs, interleaved across ways; cv = stdev/mean "
        f"of ns_per_packet. Compare ways by ratio; absolute numbers on shared machines drift.")


def summarize(spec: BenchSpec, runs: dict[str, list[dict]], unavailable: dict, sink: str) -> dict:
    ways = []
    for way, batch in spec.variants():
        label = _label(way, batch)
        if way in unavailable:
            ways.append({"way": way, "batch": batch, "ns_per_packet": None, "user_ns": None,
                         "sys_ns": None, "mpps": None, "cv": None, "runs": [],
                         "whole_core_ns_per_packet": None, "livelock": False,
                         "error": unavailable[way]})
            continue
        rs = runs.get(label, [])
        ok = [r for r in rs if "error" not in r]
        ns = [r.get("ns_per_packet") for r in ok]
        wc = [r.get("whole_core_ns_per_packet") for r in ok]
        entry = {
            "way": way, "batch": batch,
            "ns_per_packet": _r(_median(ns)), "user_ns": _r(_median([r.get("user_ns") for r in ok])),
            "sys_ns": _r(_median([r.get("sys_ns") for r in ok])),
            "mpps": _r(_median([r.get("mpps") for r in ok]), 4), "cv": _r(_cv(ns), 3),
            "whole_core_ns_per_packet": _r(_median(wc)),
            "whole_core_cv": _r(_cv(wc), 3),
            "machine_cv": _r(_cv([r.get("machine_ms") for r in ok]), 3),
            "livelock": any(r.get("livelock") for r in ok),
            "livelock_runs": sum(1 for r in ok if r.get("livelock")),
            "whole_core_notes": [f"{note} ({n} of {len(ok)} runs)" for note, n in sorted(
                collections.Counter(r["whole_core_note"] for r in ok
                                    if r.get("whole_core_note")).items())],
            "runs": rs,
        }
        if way == "dpdk":
            entry.update(DpdkDriver.summary(ok))
        if len(ok) < len(rs):
            entry["errors"] = [r["error"] for r in rs if "error" in r]
        ways.append(entry)
    method = method_text(sink, spec) if any(w != "dpdk" for w in spec.ways) else ""
    if "dpdk" in spec.ways:
        method = (method + " DPDK way: " if method else "") + DpdkDriver.method(spec)
    cal = [r.get("machine_ms") for rs in runs.values() for r in rs if "error" not in r]
    drift = {"calibration_ms": _r(_median(cal), 2), "calibration_cv": _r(_cv(cal), 3),
             "calibration": "CPU ms of a fixed memory-bound workload (20 passes of random "
                            "cache-line updates over 16 MiB) on the LB core before each run"}
    return {"method": method, "sink": sink, "machine": {**machine(), **drift},
            "spec": asdict(spec), "ways": ways, "ratios": ratios(ways)}


def _r(x, nd=1):
    return None if x is None else round(x, nd)


def ratios(ways: list[dict]) -> dict:
    """Every variant against the first way listed (the baseline): how many times cheaper."""
    good = [w for w in ways if w.get("ns_per_packet")]
    if len(good) < 2:
        return {}
    base = good[0]
    bl = _label(base["way"], base["batch"])
    out = {}
    for w in good[1:]:
        label = _label(w["way"], w["batch"])
        r = base["ns_per_packet"] / w["ns_per_packet"]
        entry = {"ns_per_packet": round(r, 2),
                 "mpps": round(w["mpps"] / base["mpps"], 2) if w.get("mpps") and base.get("mpps") else None,
                 "text": (f"{label} is {r:.1f}x cheaper per packet than {bl}" if r >= 1 else
                          f"{label} is {1 / r:.1f}x more expensive per packet than {bl}")}
        if w.get("whole_core_ns_per_packet") and base.get("whole_core_ns_per_packet"):
            entry["whole_core"] = round(base["whole_core_ns_per_packet"] / w["whole_core_ns_per_packet"], 2)
        out[f"{label}/{bl}"] = entry
    return out


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "kernel": platform.release(), "cpu_model": model,
            "python": platform.python_version(), "gen_cpu": GEN_CPU, "lb_cpu": LB_CPU}


def table(result: dict) -> str:
    rows = [("way", "batch", "ns/pkt", "user ns", "sys ns", "cv", "Mpps(sat)", "whole-core ns/pkt")]
    for w in result["ways"]:
        if w.get("error"):
            rows.append((w["way"], "-", w["error"], "", "", "", "", ""))
            continue
        ns_wc = w.get("whole_core_ns_per_packet")
        wc = f"{ns_wc:.0f}" if ns_wc else "-"
        if w.get("livelock"):
            wc = f"{wc} (livelock)" if ns_wc else "LIVELOCK"
        rows.append((w["way"], str(w["batch"] if w["batch"] is not None else "-"),
                     _f(w["ns_per_packet"]), _f(w["user_ns"]), _f(w["sys_ns"]),
                     f"{w['cv']:.1%}" if w.get("cv") is not None else "-",
                     f"{w['mpps']:.3f}" if w.get("mpps") else "-", wc))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(wd) if i > 1 else c.ljust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    lines += [f"  {v['text']}" for v in result.get("ratios", {}).values()]
    m = result.get("machine") or {}
    if m.get("calibration_cv") is not None:
        lines.append(f"  machine drift: a fixed memory-bound workload on the LB core took "
                     f"{m['calibration_ms']:.1f} ms (median), cv {m['calibration_cv']:.1%} across "
                     f"the runs; a way's cv near that is the machine's, not the way's")
    for w in result["ways"]:
        if w.get("way") == "dpdk" and not w.get("error"):
            lines.append("  " + DpdkDriver.table_line(w))
    for w in result["ways"]:
        for note in w.get("whole_core_notes") or []:
            lines.append(f"  whole-core, {_label(w['way'], w['batch'])}: {note}")
        for err in w.get("errors") or []:
            lines.append(f"  error, {_label(w['way'], w['batch'])}: {err}")
    return "\n".join(lines)


def _f(x):
    return f"{x:.0f}" if x else "-"


# ------------------------------------------------------------------------------------------
# inside the sandbox
# ------------------------------------------------------------------------------------------

def run_inside(spec: BenchSpec, workdir: str) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)   # the socket LB: a socket per flow
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    unavailable = {w: why for w in spec.ways if (why := DRIVERS[w].available(w))}
    runnable = [(w, b) for w, b in spec.variants() if w not in unavailable]
    runs: dict[str, list[dict]] = {}
    sink = "none"
    if runnable:
        # the DPDK driver needs no topology (generator and LB meet on a vhost-user socket)
        bb = BenchBed(spec, workdir) if any(w != "dpdk" for w, _ in runnable) else \
            PlainBed(spec, workdir)
        sink = bb.sink
        try:
            for i in range(spec.runs):
                for way, batch in runnable:              # interleaved: a, b, a, b, ...
                    label = _label(way, batch)
                    log(f"run {i + 1}/{spec.runs}: {label}")
                    try:
                        machine_ms = calibrate()
                        r = DRIVERS[way].run(bb, way, batch, f"{way}-{batch}-{i}")
                        r["run"] = i
                        r["machine_ms"] = machine_ms
                    except Exception as exc:            # one bad run must not lose the others
                        r = {"run": i, "error": f"{type(exc).__name__}: {exc}"}
                        log(f"{label}: {r['error']}")
                    runs.setdefault(label, []).append(_round_run(r))
        finally:
            bb.close()
    return summarize(spec, runs, unavailable, sink)


def _round_run(r: dict) -> dict:
    def rnd(k, v):
        if not isinstance(v, float):
            return v
        return round(v, 4) if k == "mpps" or "ratio" in k or k.endswith("_mpps") else round(v, 1)
    return {k: rnd(k, v) for k, v in r.items()}


def inside_main(spec_path: str, result_path: str) -> int:
    from testbed import sandbox
    return sandbox.serve_module([spec_path, result_path],
                                lambda spec, workdir: run_inside(BenchSpec(**spec), workdir))


# ------------------------------------------------------------------------------------------
# outside: the entry point for the CLI and tests
# ------------------------------------------------------------------------------------------

def run_bench(spec: BenchSpec, keep_workdir: str | None = None) -> dict:
    """Run the whole bench in one fresh sandbox; return the result dict (or {"error": ...})."""
    from testbed import sandbox
    spec.validate()
    return sandbox.run_module_in_sandbox("bench.runner", asdict(spec), spec.timeout_s,
                                         keep_workdir, what="bench", keep=bool(keep_workdir),
                                         prefix="vnflab-bench-", name="bench-")


def estimate_seconds(spec: BenchSpec) -> float:
    per_run = spec.warmup_s + spec.seconds + 3.0
    if spec.whole_core:
        per_run += len(WHOLE_CORE_FRACTIONS) * (spec.seconds + 0.5)
    return 15 + per_run * spec.runs * len(spec.variants())


if __name__ == "__main__":
    sys.exit(inside_main(*sys.argv[1:]))
