"""io-forward through the vnf.dpdk binding vs dpdk-testpmd --forward-mode=io, on net_null.

Both forward net_null0 <-> net_null1 on one core with bursts of 32; each run is a separate
process in vnf.dpdk.sandbox. net_null makes the "wire" nearly free, so the numbers are the cost
of the forwarding loop itself:

  testpmd io          C loop in testpmd (the reference)
  binding C loop      vnf.dpdk.io_forward (C loop inside the binding, GIL released)
  binding Python      a Python while-loop: rx_burst / tx_burst per burst of 32
  binding Python LB   real UDP frames looping through net_ring0: rx, C batch parse + hash,
                      numpy backend choice, C MAC rewrite, tx (per burst of 32)

    python benchmarks/dpdk_ioforward.py [--seconds 3] [--core 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from vnf.dpdk import hugepages, sandbox  # noqa: E402

BINDING = r"""
import json, sys, time
import numpy as np
from vnf import dpdk
mode, seconds, core = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
dpdk.init(cores=[core], mem_mb=128, reserve_hugepages=True)
pool = dpdk.pool(n=8191)
a = dpdk.Port.open("net_null0", pool)
b = dpdk.Port.open("net_null1", pool)
if mode == "c":
    r = dpdk.io_forward(a, b, burst=32, seconds=seconds, bidirectional=True)
    pkts, secs = r["rx"], r["seconds"]
else:
    rx, tx = dpdk.rx_burst, dpdk.tx_burst
    pa, pb = a.id, b.id
    buf = dpdk.Burst(32)
    arrays = dpdk.ParseArrays(32)
    macs = bytes(range(6 * 4))
    pkts = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    if mode == "py":
        while time.perf_counter() < end:
            for _ in range(100):
                pkts += tx(pb, 0, rx(pa, 0, 32, buf))
                pkts += tx(pa, 0, rx(pb, 0, 32, buf))
    else:  # "lb": real UDP frames circulating through net_ring0 (TX loops back to RX):
        #        C parse + hash, numpy backend choice, C MAC rewrite, tx
        from scapy.layers.inet import IP, UDP
        from scapy.layers.l2 import Ether
        r = dpdk.Port.open("net_ring0", pool)
        frames = [bytes(Ether() / IP(src=f"10.0.{i // 250}.{i % 250 + 1}", dst="10.0.9.1") /
                        UDP(sport=1024 + i, dport=80) / bytes(18)) for i in range(512)]
        for k in range(0, 512, 32):
            r.tx(dpdk._dpdk.burst_from_frames(pool, frames[k:k + 32]))
        smac, pr = r.mac, r.id
        dpdk.busy_reset()
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            for _ in range(100):
                burst = rx(pr, 0, 32, buf)
                burst.parse(arrays)
                idx = arrays.hash % 4
                burst.set_macs(idx, macs, smac)
                pkts += tx(pr, 0, burst)
    secs = time.perf_counter() - t0
bs = dpdk.busy_stats()
print("RESULT " + json.dumps({"pkts": pkts, "seconds": secs,
                              "busy_ns_per_packet": bs["ns_per_packet"]}))
"""


def run_binding(mode: str, seconds: float, core: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), *sys.path]))
    r = sandbox.run([sys.executable, "-c", BINDING, mode, str(seconds), str(core)],
                    timeout=seconds + 60, env=env)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode or not line:
        raise RuntimeError(f"binding run {mode} failed:\n{r.stderr[-3000:]}")
    d = json.loads(line[-1][7:])
    d["mpps"] = d["pkts"] / d["seconds"] / 1e6
    d["ns_per_packet"] = 1e3 / d["mpps"]
    return d


def run_testpmd(seconds: float, core: int) -> dict:
    other = 1 - core if core in (0, 1) else 0
    hugepages.require(256, reserve_if_missing=True)
    argv = ["timeout", "-s", "INT", str(int(seconds) + 4), "dpdk-testpmd", "--no-pci",
            "--in-memory", "--vdev", "net_null0", "--vdev", "net_null1",
            "-l", f"{other},{core}", "--main-lcore", str(other), "-m", "256",
            "--file-prefix", f"vnflbench{os.getpid()}", "--log-level=error", "--",
            "--forward-mode=io", "--nb-cores=1", "--burst=32", "--stats-period", "1",
            "--total-num-mbufs=8191"]
    r = sandbox.run(argv, timeout=seconds + 60)
    # per-port "Rx-pps: N" lines, printed once per second for port 0 then port 1
    pps = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", r.stdout)]
    pairs = [pps[i] + pps[i + 1] for i in range(0, len(pps) - 1, 2)]
    steady = pairs[1:] if len(pairs) > 2 else pairs
    if not steady:
        raise RuntimeError(f"testpmd printed no rates:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    mpps = statistics.median(steady) / 1e6
    return {"mpps": mpps, "ns_per_packet": 1e3 / mpps, "samples": steady}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--core", type=int, default=1, help="forwarding core")
    ap.add_argument("--json")
    a = ap.parse_args()
    res = {"testpmd io": run_testpmd(a.seconds + 1, a.core)}
    for name, mode in (("binding C loop", "c"), ("binding Python", "py"),
                       ("binding Python LB", "lb")):
        res[name] = run_binding(mode, a.seconds, a.core)
    ref = res["testpmd io"]["ns_per_packet"]
    print(f"{'path':<20} {'Mpps':>8} {'ns/pkt':>8} {'x testpmd':>10}")
    for name, d in res.items():
        d["ratio_vs_testpmd"] = d["ns_per_packet"] / ref
        print(f"{name:<20} {d['mpps']:8.2f} {d['ns_per_packet']:8.1f} "
              f"{d['ratio_vs_testpmd']:10.2f}")
    print("leftovers:", sandbox.leftovers())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
