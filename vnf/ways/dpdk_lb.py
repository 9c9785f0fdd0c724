"""Way 3: the load balancer on DPDK, attached like a VNF in a VM (the reference for lab 3).

What changes from way 2 (AF_PACKET rings):

* **No kernel in the data path at all.** The LB's port is a ``net_virtio_user`` device: the
  virtio rings a VM's NIC would have, shared through huge pages with the vhost-user port of
  Open vSwitch with DPDK, whose userspace bridge the Mininet hosts join. No interrupt, no
  system call, no skb: ``rx_burst`` reads descriptors from memory.
* **We poll.** An lcore spins on ``rx_burst``; an empty poll costs next to nothing. DPDK's
  "busy cycles" count only the work from a non-empty poll to its ``tx_burst``, so ns/packet
  is measured on the data path itself.
* **Bursts.** Every fixed cost (a Python call, a numpy operation) is divided by the packets of
  a burst: ``forward_perpacket`` pays Python per packet, ``forward_vector`` per burst.
* **Same NF, same DSR.** Every packet's backend comes from the shared ``LoadBalancer``; only the
  destination MAC changes (source: our MAC), as in way 2.

This file is what lab 3 hands out: the poll loop and the two per-burst styles. The rest of the
program (options, EAL and port set-up, the pipeline model and several lcores, the provided
``fused`` style, stats) is ``vnf.ways.dpdk_program.DpdkProgram``. Measured costs of the styles:
``docs/results.md`` (``vnflab bench`` writes it).
"""

from __future__ import annotations

import time

from vnf import dpdk
from vnf.lb import NOT_FOR_VIP, LoadBalancer
from vnf.ways.dpdk_program import EXPIRE_EVERY_S, DpdkProgram


class DpdkLB(DpdkProgram):
    """Way 3's LB program: the provided rig plus the poll loop and the per-burst work."""

    # --- the hot loop ------------------------------------------------------------------------
    def poll_loop(self, lcore: int) -> None:
        """Run to completion: poll this lcore's RX queues, decide, rewrite, transmit."""
        port, lb, n = self.port.id, self.lbs[lcore], self.burst
        queues = list(range(lcore, self.queues, self.lcores))
        forward = self.forward_vector if self.style == "vector" else self.forward_perpacket
        arrays = dpdk.ParseArrays(n)
        buf = dpdk.Burst(n)
        rx_burst = dpdk.rx_burst
        next_expire = time.monotonic() + EXPIRE_EVERY_S
        polls = 0
        while not self.stopping:
            for q in queues:
                burst = rx_burst(port, q, n, buf)
                if burst:
                    now = time.monotonic()
                    self.sent[lcore] += forward(burst, lb, arrays, lcore, now)
                    self.bursts[lcore] += 1
            polls += 1
            if polls & 0x3FF == 0:
                next_expire = self.now_and_then(lb, next_expire)

    # --- one burst: the two styles of the lab ----------------------------------------------
    def forward_perpacket(self, burst, lb: LoadBalancer, arrays, txq: int, now: float) -> int:
        """The straightforward style: Python for every packet. Returns packets sent."""
        # BEGIN SOLUTION lab3-perpacket: for each packet i: flow = burst.flow(i) (C parse: a plain 5-tuple, None if it did not parse: lb.count_drop(burst.reason(i))); drop flows not lb.is_for_service(flow) (NOT_FOR_VIP); backend = lb.backend_for(flow, now); burst.set_macs_at(i, backend.mac_bytes, self.src_mac); burst.keep(mask of kept); tx on txq
        src_mac = self.src_mac
        keep = bytearray(len(burst))
        for i in range(len(burst)):
            flow = burst.flow(i)  # C parse: (src_ip, dst_ip, sport, dport, proto)
            if flow is None:
                lb.count_drop(burst.reason(i))
                continue
            if not lb.is_for_service(flow):  # VIP, port and a served protocol
                lb.count_drop(NOT_FOR_VIP)
                continue
            backend = lb.backend_for(flow, now)  # THE decision, shared by all ways
            if backend is not None:
                burst.set_macs_at(i, backend.mac_bytes, src_mac)  # in the mbuf, no copy
                keep[i] = 1
        burst.keep(keep)  # frees the dropped ones
        return dpdk.tx_burst(self.port.id, txq, burst)
        # END SOLUTION

    def forward_vector(self, burst, lb: LoadBalancer, arrays, txq: int, now: float) -> int:
        """Vectorisation: one C call per step for the whole burst, no Python per packet.

        Parse (C, into ``arrays``), decide (``lb.backends_for_batch``: the VIP check and the
        flow-cache lookup in one C call; only new flows take Python), rewrite the MACs in place
        (C, zero copy), transmit. Returns packets sent."""
        # BEGIN SOLUTION lab3-vector: forwarded = lb.forwarded; n = burst.parse(arrays); choice = lb.backends_for_batch(arrays, n, now) (one call: VIP check, flow cache, drop counters); burst.set_macs(choice, self.mac_table, self.src_mac); burst.keep(choice >= 0) when lb.forwarded grew by less than n; tx on txq
        forwarded = lb.forwarded
        n = burst.parse(arrays)  # C: 5-tuples + flow hashes into numpy
        choice = lb.backends_for_batch(arrays, n, now)  # C: VIP check + flow cache
        burst.set_macs(choice, self.mac_table, self.src_mac)  # C, in place; skips choice < 0
        if lb.forwarded - forwarded != n:  # some were dropped: free them
            burst.keep(choice >= 0)
        return dpdk.tx_burst(self.port.id, txq, burst)
        # END SOLUTION


if __name__ == "__main__":
    DpdkLB.main()
