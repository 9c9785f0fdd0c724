"""Way 2: the load balancer on raw AF_PACKET rings, in batches (the reference for lab 2).

What changes from way 1 (kernel sockets):

* **No socket layer, no per-packet syscall.** The kernel writes raw frames into a TPACKET_V3
  ring that this process has mapped once (pre-allocated buffers). We read a whole *block* of
  frames per wake-up; ``poll()`` is only called when the ring is empty. Batching amortises the
  system call over hundreds of packets.
* **We forward frames, not payloads.** Direct server return (how Maglev and Katran work, minus
  the encapsulation): the frame keeps its IP header (destination: the VIP, which every backend
  also owns on loopback); we only rewrite the destination MAC to the chosen backend's. The
  backend answers the client directly, so replies never cost the LB anything.
* **One system call per batch.** The chosen frames are copied and rewritten in C and one
  ``send()`` kick transmits the whole batch.

What still costs per packet here, and where: the kernel still allocates an skb per received
frame and copies it into the ring. Two styles of the per-block work (io ``style``):

* ``perpacket`` (default; what lab 2 writes): the C layer parses each frame and builds one
  ``FiveTuple`` (a Python object); the flow-table lookup is a Python dict access. That loop,
  ``for flow in batch.flows()``, is the per-packet Python left.
* ``vector`` (DSR only): *vectorisation*, as the DPDK way does it: no Python per packet at all.
  ``lb.backends_for_batch`` reads the parsed records in place (numpy columns, zero copy) and
  decides for the whole block in one C call; only a new flow takes Python.

This file is what lab 2 hands out: the hot loop and the two styles. The rest of the program
(options, the rewrite, NAT's return path, worker processes, stats) is
``vnf.ways.afpacket_program.AfPacketProgram``. Measured costs of the styles and transmit
kinds: ``docs/results.md`` (``vnflab bench`` writes it).
"""

from __future__ import annotations

import time

from vnf.afpacket.ring import DROP
from vnf.lb import NOT_FOR_VIP
from vnf.ways.afpacket_program import AfPacketProgram

EXPIRE_EVERY_S = 1.0


class AfPacketLB(AfPacketProgram):
    """Way 2's LB program: the provided rig plus the hot loop and the per-block work."""

    # --- the hot loop ------------------------------------------------------------------------
    def run(self) -> None:
        rx, lb = self.rx, self.lb
        forward = self.forward_vector if self.style == "vector" else self.forward_perpacket
        next_expire = time.monotonic() + EXPIRE_EVERY_S
        try:
            while not self.stopping:
                batch = rx.next_batch(timeout_ms=100)  # one TPACKET_V3 block, parsed in C
                if batch is None:
                    continue
                now = time.monotonic()
                self.sent += forward(batch, now)  # decide, copy + rewrite, send() kick
                batch.release()  # the block goes back to the kernel
                self.batches += 1
                if now >= next_expire:
                    lb.expire(now)
                    next_expire = now + EXPIRE_EVERY_S
        finally:
            self.close_rings()  # keeps their counters for the stats

    # --- one block: the two styles of the lab ------------------------------------------------
    def forward_perpacket(self, batch, now: float) -> int:
        """Batching: a whole block per wake-up and one send() kick for it, but a Python loop
        over its packets (one FiveTuple object and one flow-table lookup each). The readable
        version, and the one a student writes first. Returns frames sent."""
        lb, index, tx = self.lb, self.backend_index, self.tx
        # BEGIN SOLUTION lab2: one choice per packet of the batch: DROP for unparsed (None) or flows not lb.is_for_service(flow) (lb.count_drop(NOT_FOR_VIP)), else index[lb.backend_for(flow, now).name]; count_drops(batch); return what one tx.send_batch(batch, choices, self.rewrite, kick_every=self.kick_every) sent (NAT: learn clients, queue replies, add nat.send_replies(tx))
        choices = []
        for i, flow in enumerate(batch.flows()):  # a FiveTuple, or None: unparseable
            if flow is None:  # counted per reason below
                choices.append(DROP)
            elif lb.is_for_service(flow):  # VIP, port and a served protocol
                backend = lb.backend_for(flow, now)  # THE decision, shared by all ways
                choices.append(DROP if backend is None else index[backend.name])
                if self.nat:
                    self.nat.learn_client(flow, batch.frame(i))
            elif self.nat and self.nat.is_reply(flow):
                self.nat.queue_reply(batch.frame(i))  # sent below, rewritten
                choices.append(DROP)
            else:
                lb.count_drop(NOT_FOR_VIP)
                choices.append(DROP)
        self.count_drops(batch)
        sent = tx.send_batch(
            batch,
            choices,
            self.rewrite,  # one send() kick
            kick_every=self.kick_every,
        )
        if self.nat:
            sent += self.nat.send_replies(tx)
        return sent
        # END SOLUTION

    def forward_vector(self, batch, now: float) -> int:
        """Vectorisation and zero copy: no Python per packet. The ring layer parsed the block
        into numpy records in C; ``lb.backends_for_batch`` reads their columns in place (strided
        views, no copy) and decides for the whole block in one C call (VIP check, flow cache,
        drop counters; only new flows take Python); the TX copy and MAC rewrite are C too.
        DSR only: NAT's return path is Python per packet anyway. Returns frames sent."""
        # BEGIN SOLUTION lab2-vector: optional (io style "vector"): choices = self.lb.backends_for_batch(batch.packets, len(batch), now) (one call for the block: VIP check, flow cache, drop counters); return what tx.send_batch(batch, choices, self.rewrite, kick_every=self.kick_every) sent
        choices = self.lb.backends_for_batch(batch.packets, len(batch), now)  # C, whole block
        return self.tx.send_batch(
            batch,
            choices,
            self.rewrite,  # C copy + rewrite, one kick
            kick_every=self.kick_every,
        )
        # END SOLUTION


if __name__ == "__main__":
    AfPacketLB.main()
