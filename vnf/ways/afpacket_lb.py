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
* **One system call per batch.** Frames are copied into TX ring slots (in C, with the MAC
  rewrite) and one ``send()`` tells the kernel to transmit them all (io ``tx: "ring"``, the
  default). Or (``tx: "sendmmsg"``) they are rewritten in place in the RX ring and one
  ``sendmmsg()`` hands the whole batch over: on veth that is cheaper, because a TX-ring frame
  enters the kernel as pages of the ring, which veth must copy into new pages
  (``skb_copy_ubufs``); see ``vnf.afpacket.MmsgTx``.
* **Software RSS.** With ``workers > 1`` each worker process opens its own ring in one
  ``PACKET_FANOUT_HASH`` group: the kernel hashes every packet's flow to one worker, so each
  worker keeps its own flow table and no flow state is shared between cores.

What still costs per packet here, and where: the kernel still allocates an skb per received
frame and copies it into the ring. Two styles of the per-block work (io ``style``):

* ``perpacket`` (default; what lab 2 writes): the C layer parses each frame and builds one
  ``FiveTuple`` (a Python object, ~60-90 ns); the flow-table lookup is a Python dict access.
  That loop, ``for flow in batch.flows()``, is the per-packet Python left.
* ``vector`` (DSR only): *vectorisation*, as the DPDK way does it: no Python per packet at all.
  ``lb.backends_for_batch`` reads the parsed records in place (numpy columns, zero copy) and
  decides for the whole block in one C call; only a new flow takes Python.

Measured 2026-11-30 (``vnflab bench --way afpacket --runs 3 --seconds 2``, quiet 2-core machine,
the switch's work on the LB's transmit steered off the LB core as the bench does), style
vector: 1,244 ns/packet of LB process CPU with ``tx: "sendmmsg"`` (73 user + 1,136 sys) against
1,403 with the TX ring (37 + 1,364). Python is well under 0.1 us/packet; the rest is the
kernel: an skb per packet on receive (charged to the sender's core) and on transmit, the
copy, the veth hop.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np

from vnf.afpacket.ring import (DROP, REASON_NAMES, MmsgTx, Rewrite, RxRing, TxRing,
                               interface_mac)
from vnf.lb import NOT_FOR_VIP
from vnf.packet import ip_to_int, parse_frame
from vnf.rewrite import nat_rewrite_src, set_macs
from vnf.ways.common import LBProgram, fail

FANOUT_GROUP = 0x564E     # any 16-bit id shared by the workers of one LB ("VN")
EXPIRE_EVERY_S = 1.0
STYLES = ("perpacket", "vector")


class NatReturnPath:
    """NAT mode's way back: replies from a backend to a client leave the LB from the VIP again.

    In NAT mode the forward path rewrites the destination (VIP:port -> backend ip:port) in C, in
    the TX copy. The backends route replies to the clients through the LB; here the source is
    rewritten back to VIP:port (RFC 1624 incremental checksums in ``vnf.rewrite``) and the frame
    is addressed to the client's MAC, learnt from its own packets. This path is plain Python per
    packet (about 2 µs): DSR, where replies bypass the LB entirely, is the fast mode.
    """

    def __init__(self, vip: int, port: int, lb_mac: bytes, backends):
        self.vip, self.port, self.lb_mac = vip, port, bytes(lb_mac)
        self.backend_addrs = {(ip_to_int(b.ip), b.port) for b in backends}
        self.client_mac: dict[int, bytes] = {}
        self.pending: list[bytearray] = []
        self.unknown_client = 0

    def learn_client(self, flow, frame) -> None:
        self.client_mac[flow.src_ip] = bytes(frame[6:12])

    def is_reply(self, flow) -> bool:
        return (flow.src_ip, flow.src_port) in self.backend_addrs

    def queue_reply(self, frame) -> None:
        reply = bytearray(frame)
        parsed = parse_frame(reply)
        client_mac = self.client_mac.get(parsed.flow.dst_ip)
        if client_mac is None:
            self.unknown_client += 1
            return
        nat_rewrite_src(reply, parsed, self.vip, self.port)
        set_macs(reply, client_mac, self.lb_mac)
        self.pending.append(reply)

    def send_replies(self, tx: TxRing) -> int:
        if not self.pending:
            return 0
        sent = tx.send_frames(self.pending)
        self.pending.clear()
        return sent


class AfPacketLB(LBProgram):
    way = "afpacket"

    def setup(self) -> None:
        self.iface = self.io.get("iface") or fail("iface", "the LB's interface is required")
        self.workers = int(self.io.get("workers", 1))
        if not 1 <= self.workers <= 64:
            fail("workers", f"must be 1..64, got {self.workers}")
        # io "batch": packets per send() kick (0 = a whole RX block per kick, the default).
        self.kick_every = int(self.io.get("batch", 0) or 0)
        if self.kick_every < 0:
            fail("batch", f"must be >= 0, got {self.kick_every}")
        self.mode = self.io.get("mode", "dsr")
        if self.mode not in ("dsr", "nat"):
            fail("mode", f"must be 'dsr' (direct server return) or 'nat', got {self.mode!r}")
        # io "style": "perpacket" (default: the loop lab 2 writes) or "vector" (DSR only).
        self.style = self.io.get("style", "perpacket")
        if self.style not in STYLES:
            fail("style", f"must be one of {', '.join(STYLES)}, got {self.style!r}")
        if self.style == "vector" and self.mode != "dsr":
            fail("style", "'vector' forwards in DSR mode only (NAT's return path is per packet)")
        # io "tx": "ring" (default: the TPACKET TX ring, one send() kick per batch) or
        # "sendmmsg" (one sendmmsg() per batch from the RX ring: see vnf.afpacket.MmsgTx)
        self.tx_kind = self.io.get("tx", "ring")
        if self.tx_kind not in ("ring", "sendmmsg"):
            fail("tx", f"must be 'ring' or 'sendmmsg', got {self.tx_kind!r}")
        backends = self.config.backends
        self.backend_index = {b.name: i for i, b in enumerate(backends)}
        try:
            lb_mac = interface_mac(self.iface)
        except OSError as exc:
            fail("iface", f"{self.iface}: {exc.strerror}")
        self.lb_mac = lb_mac
        self.rewrite = self.rewrite_for(backends)
        self.nat = (NatReturnPath(self.lb.vip, self.lb.port, lb_mac, backends)
                    if self.mode == "nat" else None)
        self.sent = 0
        self.batches = 0
        self.children: list[int] = []
        self.worker_id = 0
        if self.workers > 1:
            self.fork_workers()
        self.open_rings()

    def rewrite_for(self, backends) -> Rewrite:
        """The C rewrite's per-backend table: entry i for backend number i."""
        macs = [b.mac for b in backends]
        if self.mode == "dsr":
            return Rewrite.dsr(src_mac=self.lb_mac, backend_macs=macs)
        return Rewrite.nat(src_mac=self.lb_mac, backend_macs=macs,
                           backend_ips=[b.ip for b in backends],
                           backend_ports=[b.port for b in backends])

    def prepare_for_pool(self, pool) -> None:
        """A pool change (control plane): a backend that joins needs its number, its rewrite
        entry and (NAT) its replies recognised before the pool that may pick it goes live."""
        backends = pool.by_number()
        for number, backend in enumerate(backends):
            self.backend_index[backend.name] = number   # in place: the loop holds this dict
        if self.nat:
            self.nat.backend_addrs |= {(ip_to_int(b.ip), b.port) for b in backends}
        self.rewrite = self.rewrite_for(backends)

    # --- the hot loop ------------------------------------------------------------------------
    def open_rings(self) -> None:
        """Map the rings before we report ready, so no packet arrives before there is a ring."""
        self.rx = RxRing(self.iface, fanout_group=FANOUT_GROUP if self.workers > 1 else None)
        self.tx = TxRing(self.iface) if self.tx_kind == "ring" else MmsgTx(self.iface)

    def run(self) -> None:
        rx, lb = self.rx, self.lb
        forward = self.forward_vector if self.style == "vector" else self.forward_perpacket
        next_expire = time.monotonic() + EXPIRE_EVERY_S
        try:
            while not self.stopping:
                batch = rx.next_batch(timeout_ms=100)      # one TPACKET_V3 block, parsed in C
                if batch is None:
                    continue
                now = time.monotonic()
                self.sent += forward(batch, now)           # decide, copy + rewrite, send() kick
                batch.release()                            # the block goes back to the kernel
                self.batches += 1
                if now >= next_expire:
                    lb.expire(now)
                    next_expire = now + EXPIRE_EVERY_S
        finally:
            self.rx_stats = rx.stats()
            self.tx_kicks = self.tx.stats().kicks
            rx.close()
            self.tx.close()

    def forward_perpacket(self, batch, now: float) -> int:
        """Batching: a whole block per wake-up and one send() kick for it, but a Python loop
        over its packets (one FiveTuple object and one flow-table lookup each). The readable
        version, and the one a student writes first. Returns frames sent."""
        lb, index, tx = self.lb, self.backend_index, self.tx
        vip, port = lb.vip, lb.port
        # BEGIN SOLUTION lab2: one choice per packet of the batch: DROP for unparsed (None) or not-for-VIP flows (lb.count_drop(NOT_FOR_VIP)), else index[lb.backend_for(flow, now).name]; count_drops(batch); return what one tx.send_batch(batch, choices, self.rewrite, kick_every=self.kick_every) sent (NAT: learn clients, queue replies, add nat.send_replies(tx))
        choices = []
        for i, flow in enumerate(batch.flows()):   # a FiveTuple, or None: unparseable
            if flow is None:                       # counted per reason below
                choices.append(DROP)
            elif flow.dst_ip == vip and flow.dst_port == port:
                backend = lb.backend_for(flow, now)    # THE decision, shared by all ways
                choices.append(DROP if backend is None else index[backend.name])
                if self.nat:
                    self.nat.learn_client(flow, batch.frame(i))
            elif self.nat and self.nat.is_reply(flow):
                self.nat.queue_reply(batch.frame(i))   # sent below, rewritten
                choices.append(DROP)
            else:
                lb.count_drop(NOT_FOR_VIP)
                choices.append(DROP)
        self.count_drops(batch)
        sent = tx.send_batch(batch, choices, self.rewrite,     # one send() kick
                             kick_every=self.kick_every)
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
        choices = self.lb.backends_for_batch(batch.packets, len(batch), now)   # C, whole block
        return self.tx.send_batch(batch, choices, self.rewrite,      # C copy + rewrite, one kick
                                  kick_every=self.kick_every)
        # END SOLUTION

    def count_drops(self, batch) -> None:
        """Per-reason drop counters, once per batch with numpy instead of once per packet."""
        counts = np.bincount(batch.reason, minlength=len(REASON_NAMES))
        for code in np.flatnonzero(counts[1:]) + 1:
            self.lb.count_drop(REASON_NAMES[code], int(counts[code]))

    # --- workers (software RSS) -----------------------------------------------------------
    def fork_workers(self) -> None:
        """Fork workers 1..N-1 (this process is worker 0). Each maps its own rings and keeps its
        own flow table. All of them join the fanout group *before* the LB reports ready: the
        kernel spreads flows by hash modulo the group size, so a late joiner would move flows."""
        ready_r, ready_w = os.pipe()
        for worker_id in range(1, self.workers):
            pid = os.fork()
            if pid == 0:                                   # a worker: rings, loop, stats, exit
                os.close(ready_r)
                self.worker_id, self.children = worker_id, []
                code = 0
                try:
                    self.open_rings()
                    os.write(ready_w, b"r")
                    os.close(ready_w)
                    self.start_control()                   # its own pool, from the file
                    self.run()
                except BaseException:                      # noqa: BLE001 - report, then exit
                    import traceback
                    traceback.print_exc()
                    code = 1
                finally:
                    self.write_stats(self.stats_file)
                    os._exit(code)
            self.children.append(pid)
        os.close(ready_w)
        joined = 0
        while joined < self.workers - 1:
            chunk = os.read(ready_r, 64)
            if not chunk:
                fail("workers", "a worker process died while opening its rings")
            joined += len(chunk)
        os.close(ready_r)

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
                "mode": self.mode, "style": self.style, "batch": self.kick_every,
                "tx": self.tx_kind,
                "packets_per_kick": round(self.sent / max(1, tx_kicks), 1) if (tx_kicks := getattr(self, "tx_kicks", 0)) else None,
                "nat_unknown_client": self.nat.unknown_client if self.nat else None,
                "worker_id": self.worker_id,
                "ring_drops": rx.drops if rx else None}


if __name__ == "__main__":
    AfPacketLB.main()
