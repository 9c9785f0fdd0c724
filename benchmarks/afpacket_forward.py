"""Per-packet CPU cost of way 2's ring layer: RX ring -> parse -> (flow lookup) -> TX ring.

    sudo .venv/bin/python benchmarks/afpacket_forward.py [--packets 400000] [--rate 200000]

Method (see /work/shared/README.md "Gotchas" for why):
* Everything runs in a vnflab sandbox: two veth pairs, gen0 <-> lbin and lbout <-> sink0.
* The generator is trafgen (its own TX ring) pinned to CPU 0, paced at ``--rate`` packets/s,
  1024 UDP flows of 64-byte frames. The forwarder (this process) is pinned to CPU 1.
* The sink drops frames in XDP (a two-instruction BPF program attached with bpf(2)), so the
  peer's receive work, which veth runs on the *sender's* core, bills as little as possible to
  the forwarder. Without XDP (``--no-xdp``) the sink is a bare interface that drops frames
  early in its IP layer (wrong destination MAC).
* With ``--rps`` receive processing of lbin is steered to CPU 1 (RPS), so the kernel's copy into
  the RX ring runs on the forwarder's core too (else it lands on the generator's core).
* Cost = (user + system CPU time of this process, getrusage) / packets forwarded, counted from
  the first batch to the last. Three loops are measured:
    rx     - RX blocks parsed in C and released, nothing sent (the receive side alone)
    io     - RX block -> TX slots, no per-packet Python at all (the layer's floor)
    lb     - C parse, batch.flows() (a FiveTuple per packet) and a dict flow table in Python
    plain  - memoryview per frame, vnf.packet.parse_frame, bytes rewrite, send_frames (the
             "plain Python" first version of the lab)
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GEN_MAC = "02:00:00:00:01:01"
LBIN_MAC = "02:00:00:00:01:02"
LBOUT_MAC = "02:00:00:00:02:01"
SINK_MAC = "02:00:00:00:02:02"
BACKENDS = ["02:00:00:00:03:01", "02:00:00:00:03:02", "02:00:00:00:03:03"]


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


# -- an XDP_DROP program, loaded with the bpf(2) system call --------------------------------

_SYS_BPF = 321                 # x86_64
_BPF_PROG_LOAD, _BPF_LINK_CREATE = 5, 28
_BPF_PROG_TYPE_XDP, _BPF_XDP = 6, 37


def attach_xdp_drop(ifname):
    """r0 = XDP_DROP; exit. Returns the link fd (the program stays attached while it is open)."""
    libc = ctypes.CDLL(None, use_errno=True)
    insns = bytes([0xb7, 0, 0, 0, 1, 0, 0, 0,      # BPF_MOV64_IMM(R0, XDP_DROP=1)
                   0x95, 0, 0, 0, 0, 0, 0, 0])     # BPF_EXIT
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    ctypes.memmove(attr, (ctypes.c_uint32 * 2)(_BPF_PROG_TYPE_XDP, 2), 8)
    ctypes.memmove(ctypes.addressof(attr) + 8, (ctypes.c_uint64 * 2)(
        ctypes.addressof(insn_buf), ctypes.addressof(license_)), 16)
    # expected_attach_type sits after log_level/size/buf, kern_version, prog_flags, name, ifindex
    ctypes.memmove(ctypes.addressof(attr) + 68, (ctypes.c_uint32 * 1)(_BPF_XDP), 4)
    prog_fd = libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, attr, 128)
    if prog_fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_PROG_LOAD")
    link = ctypes.create_string_buffer(64)
    ifindex = int(open(f"/sys/class/net/{ifname}/ifindex").read())
    ctypes.memmove(link, (ctypes.c_uint32 * 4)(prog_fd, ifindex, _BPF_XDP, 0), 16)
    link_fd = libc.syscall(_SYS_BPF, _BPF_LINK_CREATE, link, 64)
    os.close(prog_fd)
    if link_fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_LINK_CREATE")
    return link_fd


# -- the three forwarding loops -------------------------------------------------------------

def loop_rx(rx, tx, rewrite, total):
    done = 0
    for batch in rx.batches(idle_timeout=1.0):
        done += batch.count
        batch.release()
        yield done


def loop_io(rx, tx, rewrite, total):
    done = 0
    for batch in rx.batches(idle_timeout=1.0):
        done += tx.send_batch(batch, [0] * batch.count, rewrite)
        batch.release()
        yield done


def loop_lb(rx, tx, rewrite, total):
    table = {}                                  # stand-in for vnf.flowtable / LoadBalancer
    n_backends = len(rewrite)
    done = 0
    for batch in rx.batches(idle_timeout=1.0):
        choices = []
        for flow, h in zip(batch.flows(), batch.hash.tolist()):
            if flow is None:
                choices.append(-1)
                continue
            backend = table.get(flow)
            if backend is None:
                backend = table[flow] = h % n_backends
            choices.append(backend)
        done += tx.send_batch(batch, choices, rewrite)
        batch.release()
        yield done


def loop_plain(rx, tx, rewrite, total):
    from vnf.hashing import flow_hash
    from vnf.packet import parse_frame
    table = {}
    macs = [rewrite.dst_macs[6 * i:6 * i + 6] + rewrite.src_mac for i in range(len(rewrite))]
    done = 0
    for batch in rx.batches(idle_timeout=1.0):
        out = []
        for frame in batch.frames():
            parsed = parse_frame(frame)
            if parsed.flow is None:
                continue
            backend = table.get(parsed.flow)
            if backend is None:
                backend = table[parsed.flow] = flow_hash(parsed.flow) % len(macs)
            out.append(macs[backend] + frame[12:])
        done += tx.send_frames(out)
        batch.release()
        yield done


LOOPS = {"rx": loop_rx, "io": loop_io, "lb": loop_lb, "plain": loop_plain}


def trafgen_config(path, flows):
    with open(path, "w") as f:
        f.write("{\n  eth(da=%s, sa=%s),\n  ipv4(saddr=10.0.0.1, daddr=10.0.0.100, ttl=64),\n"
                "  udp(sp=dinc(1024, %d), dp=80),\n  fill(0x41, 18)\n}\n"
                % (LBIN_MAC, GEN_MAC, 1024 + flows - 1))


def run_one(name, args):
    from vnf.afpacket import Rewrite, RxRing, TxRing, interface_mac
    os.sched_setaffinity(0, {1})
    rx = RxRing("lbin", block_count=args.blocks, timeout_ms=args.timeout_ms)
    tx = TxRing("lbout", qdisc_bypass=not args.no_bypass)
    rewrite = Rewrite.dsr(interface_mac("lbout"), BACKENDS)
    cfg = os.path.join(tempfile.mkdtemp(), "udp.cfg")
    trafgen_config(cfg, args.flows)
    gen = subprocess.Popen(["taskset", "-c", "0", "trafgen", "--dev", "gen0", "--conf", cfg,
                            "-P", "1", "-n", str(args.packets), "-b", f"{args.rate}pps",
                            "--no-sock-mem", "-Q", "-C", "-q"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        start = end = None
        done = start_done = 0
        t0 = t1 = 0.0
        for done in LOOPS[name](rx, tx, rewrite, args.packets):
            now = resource.getrusage(resource.RUSAGE_SELF)
            if start is None:
                start, start_done, t0 = now, done, time.perf_counter()
            end, t1 = now, time.perf_counter()
            if done >= args.packets:
                break
        gen.wait(timeout=60)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    if gen.returncode:
        raise RuntimeError(f"trafgen failed: {gen.stderr.read().decode()}")
    if start is None:
        raise RuntimeError("no packet reached the forwarder")
    tx.wait_idle()
    counted = done - start_done
    user = end.ru_utime - start.ru_utime
    system = end.ru_stime - start.ru_stime
    rx_stats, tx_stats = rx.stats(), tx.stats()
    rx.close()
    tx.close()
    return {
        "loop": name, "forwarded": done, "counted": counted,
        "ns_per_packet": round((user + system) * 1e9 / max(counted, 1)),
        "user_ns": round(user * 1e9 / max(counted, 1)),
        "sys_ns": round(system * 1e9 / max(counted, 1)),
        "rate_pps": round(counted / max(t1 - t0, 1e-9)),
        "rx_drops": rx_stats.drops, "tx_dropped": tx_stats.dropped,
        "kicks": tx_stats.kicks, "pkts_per_kick": round(tx_stats.sent / max(tx_stats.kicks, 1)),
    }


def inside(args):
    sh("mount -t sysfs sysfs /sys")          # this namespace's interfaces (for RPS and XDP)
    sh("ip link set lo up")
    sh(f"ip link add gen0 address {GEN_MAC} type veth peer name lbin address {LBIN_MAC}")
    sh(f"ip link add lbout address {LBOUT_MAC} type veth peer name sink0 address {SINK_MAC}")
    for ifname in ("gen0", "lbin", "lbout", "sink0"):
        sh(f"ip link set {ifname} up")
    if args.rps:
        with open("/sys/class/net/lbin/queues/rx-0/rps_cpus", "w") as f:
            f.write("2")
    link_fd = None
    if not args.no_xdp:
        link_fd = attach_xdp_drop("sink0")
    results = []
    for name in args.loops.split(","):
        results.append(run_one(name, args))
        print(json.dumps(results[-1]), flush=True)
    if link_fd is not None:
        os.close(link_fd)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=400_000)
    ap.add_argument("--rate", type=int, default=200_000, help="generator packets/s")
    ap.add_argument("--flows", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=64, help="RX ring blocks of 1 MiB")
    ap.add_argument("--timeout-ms", type=int, default=10, help="RX block timeout")
    ap.add_argument("--loops", default="io,lb,plain")
    ap.add_argument("--rps", action="store_true", help="steer lbin receive work to CPU 1")
    ap.add_argument("--no-xdp", action="store_true", help="sink without an XDP_DROP program")
    ap.add_argument("--no-bypass", action="store_true", help="TX through the qdisc layer")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args)
        return 0
    from vnflab import sandbox
    return sandbox.run([sys.executable, os.path.abspath(__file__), "--inside", *sys.argv[1:]],
                       timeout=600, env=dict(os.environ, PYTHONPATH=ROOT)).returncode


if __name__ == "__main__":
    sys.exit(main())
