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
* **One ``send()`` per batch.** Frames are copied into TX ring slots (in C, with the MAC rewrite)
  and one ``send()`` tells the kernel to transmit them all.
* **Software RSS.** With ``workers > 1`` each worker process opens its own ring in one
  ``PACKET_FANOUT_HASH`` group: the kernel hashes every packet's flow to one worker, so each
  worker keeps its own flow table and no flow state is shared between cores.

What still costs per packet here, and where: the kernel still allocates an skb per received
frame and copies it into the ring; the C layer parses each frame and builds one ``FiveTuple``
(a Python object, ~60-90 ns); the flow-table lookup below is a Python dict access. That loop,
``for flow in batch.flows()``, is the one line of per-packet Python left — the DPDK way will
vectorise even that.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np

from vnf.afpacket.ring import DROP, REASON_NAMES, Rewrite, RxRing, TxRing, interface_mac
from vnf.lb import NOT_FOR_VIP
from vnf.ways.common import LBProgram, fail

FANOUT_GROUP = 0x564E     # any 16-bit id shared by the workers of one LB ("VN")
EXPIRE_EVERY_S = 1.0


class AfPacketLB(LBProgram):
    way = "afpacket"

    def setup(self) -> None:
        self.iface = self.io.get("iface") or fail("iface", "the LB's interface is required")
        self.workers = int(self.io.get("workers", 1))
        if not 1 <= self.workers <= 64:
            fail("workers", f"must be 1..64, got {self.workers}")
        self.mode = self.io.get("mode", "dsr")
        if self.mode != "dsr":
            fail("mode", f"only 'dsr' (direct server return) is implemented, got {self.mode!r}")
        backends = self.config.backends
        self.backend_index = {b.name: i for i, b in enumerate(backends)}
        try:
            self.rewrite = Rewrite.dsr(src_mac=interface_mac(self.iface),
                                       backend_macs=[b.mac for b in backends])
        except OSError as exc:
            fail("iface", f"{self.iface}: {exc.strerror}")
        self.sent = 0
        self.batches = 0
        self.children: list[int] = []
        self.worker_id = 0

    # --- the hot loop ------------------------------------------------------------------------
    def run(self) -> None:
        if self.workers > 1:
            self.fork_workers()
        rx = RxRing(self.iface, fanout_group=FANOUT_GROUP if self.workers > 1 else None)
        tx = TxRing(self.iface)
        lb, index = self.lb, self.backend_index
        vip, port = lb.vip, lb.port
        next_expire = time.monotonic() + EXPIRE_EVERY_S
        try:
            while not self.stopping:
                batch = rx.next_batch(timeout_ms=100)      # one TPACKET_V3 block, parsed in C
                if batch is None:
                    continue
                now = time.monotonic()
                choices = []
                for flow in batch.flows():                 # a FiveTuple, or None: unparseable
                    if flow is None:                       # counted per reason below
                        choices.append(DROP)
                        continue
                    if flow.dst_ip != vip or flow.dst_port != port:
                        lb.count_drop(NOT_FOR_VIP)
                        choices.append(DROP)
                        continue
                    backend = lb.backend_for(flow, now)    # THE decision, shared by all ways
                    choices.append(DROP if backend is None else index[backend.name])
                self.count_drops(batch)
                self.sent += tx.send_batch(batch, choices, self.rewrite)   # one send() kick
                batch.release()                            # the block goes back to the kernel
                self.batches += 1
                if now >= next_expire:
                    lb.expire(now)
                    next_expire = now + EXPIRE_EVERY_S
        finally:
            self.rx_stats = rx.stats()
            rx.close()
            tx.close()

    def count_drops(self, batch) -> None:
        """Per-reason drop counters, once per batch with numpy instead of once per packet."""
        counts = np.bincount(batch.reason, minlength=len(REASON_NAMES))
        for code in np.flatnonzero(counts[1:]) + 1:
            self.lb.count_drop(REASON_NAMES[code], int(counts[code]))

    # --- workers (software RSS) -----------------------------------------------------------
    def fork_workers(self) -> None:
        """Become worker 0; fork workers 1..N-1. Each has its own ring, TX ring and flow table."""
        for worker_id in range(1, self.workers):
            pid = os.fork()
            if pid == 0:
                self.worker_id, self.children = worker_id, []
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
                return
            self.children.append(pid)

    def close(self) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def stats_path(self, path: str) -> str:
        return path if self.worker_id == 0 else f"{path}.worker{self.worker_id}"

    def extra_stats(self) -> dict:
        rx = getattr(self, "rx_stats", None)
        return {"sent": self.sent, "batches": self.batches, "workers": self.workers,
                "worker_id": self.worker_id,
                "ring_drops": rx.drops if rx else None}


if __name__ == "__main__":
    AfPacketLB.main()
