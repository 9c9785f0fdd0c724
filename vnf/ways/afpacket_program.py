"""The provided part of way 2's LB program (``vnf/ways/afpacket_lb.py``, lab 2): everything
around the student's hot loop and forward functions.

:class:`AfPacketProgram` parses the io options, builds the C frame rewrite (DSR or NAT), forks
the worker processes (software RSS), maps each process's rings, and writes the stats;
:class:`NatReturnPath` is NAT mode's way back. ``vnf.ways.afpacket_lb.AfPacketLB`` adds the loop
over RX blocks and the two styles of the per-block work that lab 2 writes.

io options: ``iface`` (required), ``workers`` (1..64), ``mode`` (``dsr`` | ``nat``), ``style``
(``perpacket`` | ``vector``, DSR only), ``tx`` (``ring`` | ``sendmmsg``), ``batch`` (packets
per ``send()`` kick; 0 = a whole RX block per kick), ``block_timeout_ms`` (how long the kernel
waits before it hands over a block that is not full: see ``vnf.afpacket.RxRing``).

* **Batching trades latency for cost.** A request that arrives at a quiet LB waits in a partly
  filled block until the block times out: with 10 ms, 50 HTTP connections cannot make more
  than about 50 / 10 ms = 5,000 requests/s, whatever the CPU (``vnflab bench --http`` shows
  it). At saturation a block holds hundreds of frames even after 2 ms, the default here, so
  the batch still amortises the wake-up; at 1 ms the batches shrink and the cost per packet
  at saturation grows (``vnflab bench --way afpacket`` shows it when this default changes).

* **Software RSS.** With ``workers > 1`` each worker process opens its own ring in one
  ``PACKET_FANOUT_HASH`` group: the kernel hashes every packet's flow to one worker, so each
  worker keeps its own flow table and no flow state is shared between cores.
* **Two ways to transmit a batch.** Frames are copied into TX ring slots (in C, with the
  rewrite) and one ``send()`` tells the kernel to transmit them all (``tx: "ring"``, the
  default). Or (``tx: "sendmmsg"``) they are rewritten in place in the RX ring and one
  ``sendmmsg()`` hands the whole batch over: on veth that is cheaper, because a TX-ring frame
  enters the kernel as pages of the ring, which veth must copy into new pages
  (``skb_copy_ubufs``); see ``vnf.afpacket.MmsgTx``.
"""

from __future__ import annotations

import os
import signal
import traceback

import numpy as np

from vnf.afpacket.ring import REASON_NAMES, MmsgTx, Rewrite, RxRing, RxStats, TxRing, interface_mac
from vnf.lb import LBConfig
from vnf.packet import ip_to_int, parse_frame
from vnf.rewrite import nat_rewrite_src, set_macs
from vnf.ways.common import LBProgram, fail

FANOUT_GROUP = 0x564E  # any 16-bit id shared by the workers of one LB ("VN")
STYLES = ("perpacket", "vector")
BLOCK_TIMEOUT_MS = 2  # the RX ring's block timeout (io "block_timeout_ms"): see above


class NatReturnPath:
    """NAT mode's way back: replies from a backend to a client leave the LB from the VIP again.

    In NAT mode the forward path rewrites the destination (VIP:port -> backend ip:port) in C, in
    the TX copy. The backends route replies to the clients through the LB; here the source is
    rewritten back to VIP:port (RFC 1624 incremental checksums in ``vnf.rewrite``) and the frame
    is addressed to the client's MAC, learnt from its own packets. This path is plain Python per
    packet: DSR, where replies bypass the LB entirely, is the fast mode.
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
        assert parsed.flow is not None  # the LB parsed this reply already
        client_mac = self.client_mac.get(parsed.flow.dst_ip)
        if client_mac is None:
            self.unknown_client += 1
            return
        nat_rewrite_src(reply, parsed, self.vip, self.port)
        set_macs(reply, client_mac, self.lb_mac)
        self.pending.append(reply)

    def send_replies(self, tx: TxRing | MmsgTx) -> int:
        if not self.pending:
            return 0
        sent = tx.send_frames(self.pending)
        self.pending.clear()
        return sent


class AfPacketProgram(LBProgram):
    """Way 2's LB program without its hot loop: a subclass writes ``run()`` (the loop over RX
    blocks), ``forward_perpacket`` and ``forward_vector`` (see ``vnf.ways.afpacket_lb``)."""

    way = "afpacket"

    def __init__(self, config: LBConfig, io: dict):
        super().__init__(config, io)
        self.sent = 0  # frames transmitted
        self.batches = 0  # RX blocks handled
        self.rx_stats: RxStats | None = None  # the RX ring's counters, taken when its loop ends
        self.tx_kicks = 0  # send() kicks, taken when its loop ends
        self.nat: NatReturnPath | None = None  # in NAT mode
        self.lb_mac = b""  # the LB interface's MAC, once setup() read it
        self.children: list[int] = []
        self.worker_id = 0
        self.read_options()

    def read_options(self) -> None:
        """The io options (see the module docstring); a bad one exits naming it."""
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
        self.block_timeout_ms = self.io.get("block_timeout_ms", BLOCK_TIMEOUT_MS)
        if type(self.block_timeout_ms) is not int or not 1 <= self.block_timeout_ms <= 1000:
            fail("block_timeout_ms", f"must be 1..1000, got {self.block_timeout_ms}")

    def setup(self) -> None:
        backends = self.config.backends
        self.backend_index = {b.name: i for i, b in enumerate(backends)}
        try:
            lb_mac = interface_mac(self.iface)
        except OSError as exc:
            fail("iface", f"{self.iface}: {exc.strerror}")
        self.lb_mac = lb_mac
        self.rewrite = self.rewrite_for(backends)
        if self.mode == "nat":
            self.nat = NatReturnPath(self.lb.vip, self.lb.port, lb_mac, backends)
        if self.workers > 1:
            self.fork_workers()
        self.open_rings()

    def rewrite_for(self, backends) -> Rewrite:
        """The C rewrite's per-backend table: entry i for backend number i."""
        macs = [b.mac for b in backends]
        if self.mode == "dsr":
            return Rewrite.dsr(src_mac=self.lb_mac, backend_macs=macs)
        return Rewrite.nat(
            src_mac=self.lb_mac,
            backend_macs=macs,
            backend_ips=[b.ip for b in backends],
            backend_ports=[b.port for b in backends],
        )

    def prepare_for_pool(self, pool) -> None:
        """A pool change (control plane): a backend that joins needs its number, its rewrite
        entry and (NAT) its replies recognised before the pool that may pick it goes live."""
        backends = pool.by_number()
        for number, backend in enumerate(backends):
            self.backend_index[backend.name] = number  # in place: the loop holds this dict
        if self.nat:
            self.nat.backend_addrs |= {(ip_to_int(b.ip), b.port) for b in backends}
        self.rewrite = self.rewrite_for(backends)

    # --- rings -------------------------------------------------------------------------------
    def open_rings(self) -> None:
        """Map the rings before we report ready, so no packet arrives before there is a ring."""
        self.rx = RxRing(
            self.iface,
            fanout_group=FANOUT_GROUP if self.workers > 1 else None,
            timeout_ms=self.block_timeout_ms,
        )
        self.tx = TxRing(self.iface) if self.tx_kind == "ring" else MmsgTx(self.iface)

    def close_rings(self) -> None:
        """When the loop ends: keep the rings' counters for the stats, then unmap the rings."""
        self.rx_stats = self.rx.stats()
        self.tx_kicks = self.tx.stats().kicks
        self.rx.close()
        self.tx.close()

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
            if pid == 0:  # a worker: rings, loop, stats, exit
                os.close(ready_r)
                self.worker_id, self.children = worker_id, []
                code = 0
                try:
                    self.open_rings()
                    os.write(ready_w, b"r")
                    os.close(ready_w)
                    self.start_control()  # its own pool, from the file
                    self.run()
                except BaseException:  # noqa: BLE001 - report, then exit
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

    # --- stats -------------------------------------------------------------------------------
    def stats_path(self, path: str) -> str:
        return path if self.worker_id == 0 else f"{path}.worker{self.worker_id}"

    def extra_stats(self) -> dict:
        return {
            "sent": self.sent,
            "batches": self.batches,
            "workers": self.workers,
            "mode": self.mode,
            "style": self.style,
            "batch": self.kick_every,
            "tx": self.tx_kind,
            "packets_per_kick": (round(self.sent / self.tx_kicks, 1) if self.tx_kicks else None),
            "nat_unknown_client": self.nat.unknown_client if self.nat else None,
            "worker_id": self.worker_id,
            "ring_drops": self.rx_stats.drops if self.rx_stats else None,
        }
