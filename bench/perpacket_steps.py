"""Where the per-packet style's time goes: its loop timed step by step.

``forward_perpacket`` (lab 3) pays Python for every packet. This module runs that loop five
times over, each variant adding one step to the previous one, and reports the difference as the
cost of the step:

    rx/tx      rx_burst -> tx_burst, no per-packet work (the binding's I/O, per packet)
    loop       + ``for i in range(len(burst))`` doing nothing
    parse      + ``flow = burst.flow(i)`` (the C parser, a plain 5-tuple)
    check      + ``lb.is_for_service(flow)``
    lookup     + ``backend = lb.backend_for(flow, now)`` (a flow-table hit)
    rewrite    + ``burst.set_macs_at(i, backend.mac_bytes, src)``, ``keep[i] = 1``, ``burst.keep``

The port is ``net_ring`` (transmit loops back to receive, in this process): the frames circulate
with no generator and no other core, so what is timed is the CPU work of the loop itself. The
figure per variant is busy cycles per packet (``vnf.dpdk.busy_stats``, as the LB reports them)
over short chunks of bursts, the best chunk of many: on a shared machine interference only ever
slows a chunk down, so the fastest chunk is the closest to the code's own cost.

    python -m bench.perpacket_steps BURST CPU FLOWS

prints ``STEPS {json}``: ``variants`` (ns/packet each) and ``steps`` (the differences).
"""

from __future__ import annotations

import json
import sys
from typing import Any

MEM_MB = 64
CHUNK_BURSTS = 64  # bursts per timed chunk
CHUNKS = 200  # chunks per variant per round; the best one counts
ROUNDS = 3  # variants interleaved round by round, best of all rounds
STEPS = ("rx/tx", "loop", "parse", "check", "lookup", "rewrite")


def variants(lb, src_mac: bytes, now: float) -> dict:
    """The loop bodies, each one step more than the previous (see the module docstring)."""

    def rx_tx(burst):
        return len(burst)

    def loop(burst):
        for _i in range(len(burst)):
            pass
        return len(burst)

    def parse(burst):
        for i in range(len(burst)):
            burst.flow(i)
        return len(burst)

    def check(burst):
        for i in range(len(burst)):
            flow = burst.flow(i)
            if flow is None or not lb.is_for_service(flow):
                raise RuntimeError("the bench's frames are all for the service")
        return len(burst)

    def lookup(burst):
        for i in range(len(burst)):
            flow = burst.flow(i)
            if flow is None or not lb.is_for_service(flow):
                raise RuntimeError("the bench's frames are all for the service")
            lb.backend_for(flow, now)
        return len(burst)

    def rewrite(burst):
        keep = bytearray(len(burst))
        for i in range(len(burst)):
            flow = burst.flow(i)
            if flow is None or not lb.is_for_service(flow):
                raise RuntimeError("the bench's frames are all for the service")
            backend = lb.backend_for(flow, now)
            if backend is not None:
                burst.set_macs_at(i, backend.mac_bytes, src_mac)
                keep[i] = 1
        return burst.keep(keep)

    return dict(zip(STEPS, (rx_tx, loop, parse, check, lookup, rewrite)))


def measure(burst_size: int, cpu: int, flows: int) -> dict:
    from testbed.dpdkgen import flow_frames
    from vnf import dpdk
    from vnf.addresses import SERVICE_PORT, VIP
    from vnf.backends import Backend
    from vnf.lb import LBConfig, LoadBalancer

    dpdk.init(cores=[cpu], mem_mb=MEM_MB, reserve_hugepages=True)
    pool = dpdk.pool(n=4095)
    port = dpdk.Port.open("net_ring0", pool)
    frames = flow_frames(flows, 18)
    for i in range(0, len(frames), 32):  # the frames circulate from now on
        sent = port.tx(dpdk.burst_from_frames(pool, frames[i : i + 32]))
        if sent != len(frames[i : i + 32]):
            raise RuntimeError("net_ring took fewer frames than offered: use fewer flows")
    backends = [
        Backend(f"b{i}", f"10.0.0.{100 + i}", f"02:00:00:00:02:{i:02x}", SERVICE_PORT)
        for i in (1, 2, 3)
    ]
    lb = LoadBalancer(LBConfig(vip=VIP, port=SERVICE_PORT, backends=backends))
    bodies = variants(lb, bytes(port.mac), 1.0)
    pid, buf = port.id, dpdk.Burst(burst_size)
    rx, tx = dpdk.rx_burst, dpdk.tx_burst

    def chunk(body) -> float | None:
        dpdk.busy_reset()
        for _ in range(CHUNK_BURSTS):
            burst = rx(pid, 0, burst_size, buf)
            if burst:
                body(burst)
                tx(pid, 0, burst)
        return dpdk.busy_stats()["ns_per_packet"]

    for _ in range(3):  # warm up: flow table, caches
        chunk(bodies["rewrite"])
    best = {name: float("inf") for name in STEPS}
    for _ in range(ROUNDS):
        for name, body in bodies.items():
            for _ in range(CHUNKS):
                ns = chunk(body)
                if ns is not None and ns < best[name]:
                    best[name] = ns
    out: dict[str, Any] = {"variants": {k: round(v, 1) for k, v in best.items()}}
    prev = 0.0
    steps = {}
    for name in STEPS:
        steps[name] = round(best[name] - prev, 1)
        prev = best[name]
    out["steps"] = steps
    out["total"] = round(best[STEPS[-1]], 1)
    return out


def main(argv: list[str]) -> int:
    burst, cpu, flows = int(argv[0]), int(argv[1]), int(argv[2])
    print("STEPS " + json.dumps(measure(burst, cpu, flows)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
