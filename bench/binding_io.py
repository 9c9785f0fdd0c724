"""The binding's io-forward in a Python loop: rx_burst -> tx_burst per burst, nothing else.

``vnflab bench --way dpdk --baseline testpmd`` runs it on the same vdevs as the LB, so the table
can say what the NF adds on top of merely moving the packets through the binding.

    python -m bench.binding_io VDEV BURST CPU

prints ``ready`` once the port is open, forwards until SIGTERM, then prints
``IO {"ns_per_packet": ..., "packets": ...}`` (busy cycles per packet, ``vnf.dpdk.busy_stats``).
"""

from __future__ import annotations

import json
import signal
import sys

MEM_MB = 128


def command(vdev: str, burst: int, cpu: int) -> list[str]:
    """The command line that runs this loop on ``cpu`` (pinned with taskset) on ``vdev``."""
    pinned = ["taskset", "-c", str(cpu), sys.executable, "-m", "bench.binding_io"]
    return pinned + [vdev, str(burst), str(cpu)]


def main(argv: list[str]) -> int:
    from vnf import dpdk

    vdev, burst, cpu = argv[0], int(argv[1]), int(argv[2])
    dpdk.init(cores=[cpu], mem_mb=MEM_MB, reserve_hugepages=True)
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
    print(
        "IO " + json.dumps({"ns_per_packet": b["ns_per_packet"], "packets": b["busy_packets"]}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
