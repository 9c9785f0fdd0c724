"""TPACKET_V3 rings for way 2: the memory the kernel and the load balancer share.

Lecture concepts, and where they live here:

* **Pre-allocated buffers.** Both rings are ``mmap``'ed once, when the ring is created; so is the
  numpy array that receives one parsed record per packet. Nothing in the hot loop asks the
  kernel or the allocator for packet memory.
* **A ring shared with the kernel.** Ownership is a status word per block (RX) or per slot (TX).
  The kernel writes frames into an RX block and then sets ``TP_STATUS_USER``; we read them and
  set ``TP_STATUS_KERNEL``. For TX we fill a slot and set ``TP_STATUS_SEND_REQUEST``; the kernel
  sets ``TP_STATUS_AVAILABLE`` when the frame is gone. No copy through ``recv()``/``send()``.
* **Polling.** While a block belongs to us we never enter the kernel. Only when the next block is
  still the kernel's do we sleep in ``poll()`` (the kernel wakes us when a block fills or when the
  block timeout, ``timeout_ms``, retires a partly filled one).
* **Batching amortises the system call.** One RX block is one batch (hundreds or thousands of
  frames for one ``poll()``), and one ``send()`` kicks every TX slot filled for that batch.
* **Software RSS.** With ``fanout_group`` several rings (one per worker process) join a
  ``PACKET_FANOUT_HASH`` group: the kernel hashes each packet's flow and always delivers a flow
  to the same ring, so each worker's flow table sees whole flows.

The student loop (the file ``vnf/ways/afpacket_lb.py``) reads::

    rx = RxRing("lb-eth0", fanout_group=42)
    tx = TxRing("lb-eth0")
    rewrite = Rewrite.dsr(src_mac=interface_mac("lb-eth0"), backend_macs=[b.mac for b in backends])
    index = {b.name: i for i, b in enumerate(backends)}    # backend -> its row in ``rewrite``
    for batch in rx.batches():                 # one TPACKET_V3 block, parsed in C
        choices = []
        for flow in batch.flows():             # FiveTuple, or None for a frame we drop
            choices.append(DROP if flow is None else index[lb.backend_for(flow, now).name])
        tx.send_batch(batch, choices, rewrite) # C copy + MAC/NAT rewrite, one send() kick
        batch.release()                        # the block goes back to the kernel

and the "plain Python" first version uses ``batch.frames()`` (memoryviews straight into the ring)
with ``vnf.packet.parse_frame`` and ``tx.send_frames()``.
"""

from __future__ import annotations

import fcntl
import mmap
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

import vnf.afpacket._ring as _ring

# <linux/if_packet.h>, <linux/if_ether.h>: the stdlib socket module exports none of these.
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_FANOUT = 18
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
# Linux >= 6.10: the group ignores outgoing frames. PACKET_IGNORE_OUTGOING on a member socket does
# not reach the group's shared hook, so without this flag every frame a worker transmits is copied
# into some worker's ring (and skipped there). Older kernels ignore the unknown flag bit.
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
ETH_P_ALL = 0x0003
_SIOCGIFHWADDR = 0x8927

TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1

#: Send frames at a steady rate from a C loop (a few per sendmmsg every ~40 us, no catch-up
#: bursts): the bench's pacer drives its paced loads with it.
paced_send = _ring.paced_send

#: Backend index meaning "do not forward this packet".
DROP = -1

#: The drop-reason strings, indexed by ``Batch.reason`` (index 0, "ok", means parsed). Equal to
#: ``vnf.packet.REASONS[1:]`` for codes >= 1.
REASON_NAMES = _ring.REASON_NAMES

#: One row per packet, filled by ``_ring.parse_block``: the numpy mirror of ``struct ring_pkt``.
RECORD_DTYPE = np.dtype(
    {
        "names": [
            "offset",
            "length",
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "proto",
            "reason",
            "flags",
            "l3_offset",
            "l4_offset",
            "vlan",
            "hash",
            "vlan_tci",
            "vlan_tpid",
        ],
        "formats": [
            "<u4",
            "<u4",
            "<u4",
            "<u4",
            "<u2",
            "<u2",
            "u1",
            "u1",
            "u1",
            "<u2",
            "<u2",
            "<i4",
            "<u4",
            "<u2",
            "<u2",
        ],
        "offsets": [0, 4, 8, 12, 16, 18, 20, 21, 22, 24, 26, 28, 32, 36, 38],
        "itemsize": 40,
    }
)
if RECORD_DTYPE.itemsize != _ring.RECORD_SIZE:  # pragma: no cover - build mismatch
    raise ImportError(
        "vnf.afpacket._ring is out of date: rebuild with 'python setup.py build_ext --inplace'"
    )

# tpacket_req3: block size, block count, frame size, frame count, block timeout (ms),
# private area per block, feature request word.
_TPACKET_REQ3 = struct.Struct("IIIIIII")
# Header fields of a TX slot (struct tpacket3_hdr) that the plain-Python sender writes.
_TX_HDR_NEXT_OFFSET = 0
_TX_HDR_SNAPLEN = 12
_TX_HDR_LEN = 16
_TX_HDR_STATUS = 20
_U32 = struct.Struct("I")

try:  # the flow key type of the lab; plain tuples compare and hash the same if it is absent
    from vnf.packet import FiveTuple

    _DEFAULT_FLOW_TYPE: type | None = FiveTuple
except ImportError:  # pragma: no cover
    _DEFAULT_FLOW_TYPE = None


def interface_mac(ifname: str) -> bytes:
    """The 6-byte MAC address of an interface (the source MAC of what the LB sends).

    Asked with the SIOCGIFHWADDR ioctl rather than read from /sys/class/net: sysfs shows the
    namespace it was mounted in, the ioctl the one this process runs in (a Mininet host's)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        ifreq = struct.pack("16s16x", ifname.encode())
        reply = fcntl.ioctl(sock.fileno(), _SIOCGIFHWADDR, ifreq)
    return reply[18:24]  # ifr_name[16], then sockaddr: family (2 bytes), address


def mac_bytes(mac: str | bytes) -> bytes:
    """'aa:bb:cc:dd:ee:ff' or 6 raw bytes -> 6 raw bytes."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
        return bytes(mac)
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return raw


def _ip_int(ip: int | str) -> int:
    return ip if isinstance(ip, int) else int.from_bytes(socket.inet_aton(ip), "big")


def _let_go(mapping, method: str) -> None:
    """Release a ring's memoryview or close its mmap; if a caller still holds views of frames
    (BufferError), leave it to the garbage collector rather than fail a close."""
    if mapping is not None:
        try:
            getattr(mapping, method)()
        except BufferError:
            pass


class RxStats(NamedTuple):
    """PACKET_STATISTICS (reading it resets the kernel's counters)."""

    packets: int  #: frames the kernel delivered to this socket (including dropped ones)
    drops: int  #: frames lost because every block was still owned by user space
    freezes: int  #: times the ring was full ("queue frozen"): the LB fell behind


class Batch:
    """The packets of one TPACKET_V3 block: a view, not a copy.

    ``packets`` is a numpy record array (``RECORD_DTYPE``) filled in C; the column properties
    (``src_ip``, ``reason``, ...) are views of it. Both the records and this object are allocated
    once per ring and reused for every block, like an mbuf array in DPDK, so **a batch is valid
    only until release()**: after that the kernel writes new frames into the block, and the next
    batch overwrites the records.
    """

    __slots__ = ("_ring", "_records", "count", "block_index", "_released")

    def __init__(self, ring: RxRing, capacity: int):
        self._ring = ring
        self._records = np.zeros(capacity, dtype=RECORD_DTYPE)
        self.count = 0
        self.block_index = -1
        self._released = True

    def __len__(self) -> int:
        return self.count

    @property
    def packets(self) -> np.ndarray:
        """The records of this batch (a numpy view, length ``count``)."""
        return self._records[: self.count]

    def __getattr__(self, column: str) -> np.ndarray:
        # batch.src_ip, batch.reason, batch.hash, ...: one column of the records.
        if column in (RECORD_DTYPE.names or ()):
            return self._records[column][: self.count]
        raise AttributeError(column)

    def flows(self, flow_type=_DEFAULT_FLOW_TYPE) -> list:
        """One ``FiveTuple`` per packet, or ``None`` where the frame did not parse.

        Built in C in one pass; this is the only per-packet allocation the layer makes (a tuple
        and the int objects inside it), because the flow table is a Python dict keyed by the
        5-tuple: ~100 ns a packet, allocation and freeing included. ``flow_type=None`` gives
        plain tuples (~60 ns), which hash and compare equal to FiveTuples but have no field
        names. The tuples are not tracked by the cycle collector (ints cannot form cycles);
        see ``flows()`` in _ring.c for why that matters.
        """
        return _ring.flows(self._records, self.count, flow_type)

    def reasons(self) -> list[str]:
        """The drop reason of every packet as a string ("ok" when it parsed)."""
        return [REASON_NAMES[code] for code in self._records["reason"][: self.count].tolist()]

    def frame(self, i: int) -> memoryview:
        """Frame ``i`` as a memoryview straight into the RX ring (zero copy; valid until
        release()). Note: an outer VLAN tag is not in it (the kernel moved it to ``vlan``)."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        rec = self._records[i]
        off = int(rec["offset"])
        view = self._ring._view
        assert view is not None, "the ring is closed"
        return view[off : off + int(rec["length"])]

    def frames(self) -> list[memoryview]:
        """Every frame as a memoryview (for the plain-Python variant, which parses each frame
        itself). Each memoryview is a small Python object: ~100 ns per packet to create."""
        view = self._ring._view
        assert view is not None, "the ring is closed"
        offsets = self._records["offset"][: self.count].tolist()
        lengths = self._records["length"][: self.count].tolist()
        return [view[off : off + length] for off, length in zip(offsets, lengths)]

    def release(self) -> None:
        """Give the block back to the kernel. Idempotent."""
        if not self._released:
            self._released = True
            self._ring._release_block(self.block_index)


class RxRing:
    """An AF_PACKET socket with a TPACKET_V3 receive ring bound to one interface.

    ``block_size``/``block_count``: the ring is ``block_count`` blocks of ``block_size`` bytes
    (a multiple of the page size), allocated by the kernel once and mapped into this process.
    A bigger block is a bigger batch (fewer wake-ups), a longer ring absorbs longer bursts.
    1 MiB x 16 holds about 100,000 small frames: 0.2 s of a saturated veth.

    ``frame_size``: TPACKET_V3 packs frames of any size into a block, so this only has to be
    consistent with the block size (the kernel wants ``block_size % frame_size == 0``).

    ``timeout_ms``: the kernel hands over a block that is not full after this long, which bounds
    the latency a packet suffers at low rates. The rest of such a block is wasted, so at a low
    rate the ring holds only about ``block_count * timeout_ms`` of traffic if nobody reads it
    (16 x 10 ms = 160 ms by default); a reader that stalls longer loses frames (``stats().drops``).

    ``fanout_group``: join this PACKET_FANOUT group with PACKET_FANOUT_HASH (software RSS; see
    the module docstring). No rollover flag: rollover would move a flow to another worker when
    a ring is busy, breaking flow affinity.

    ``parse``: parse frames in C (5-tuple, reason, hash). Off for the plain-Python variant.
    """

    def __init__(
        self,
        ifname: str,
        block_size: int = 1 << 20,
        block_count: int = 16,
        frame_size: int = 2048,
        timeout_ms: int = 10,
        fanout_group: int | None = None,
        parse: bool = True,
    ):
        if block_size % mmap.PAGESIZE or block_size % frame_size:
            raise ValueError("block_size must be a multiple of the page size and of frame_size")
        self.ifname = ifname
        self.block_size = block_size
        self.block_count = block_count
        self.fanout_group = fanout_group
        self._parse = parse
        self._next_block = 0
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # receives nothing yet
        self._map = None
        self._view = None
        try:
            self._sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = _TPACKET_REQ3.pack(
                block_size,
                block_count,
                frame_size,
                block_size // frame_size * block_count,
                timeout_ms,
                0,
                0,
            )
            self._sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._map = mmap.mmap(
                self._sock.fileno(),
                block_size * block_count,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
            self._view = memoryview(self._map)
            # Our own TX ring's frames leave through this interface too; without this the LB
            # would receive (and forward again) everything it sends.
            self._sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self._sock.bind((ifname, ETH_P_ALL))
            if fanout_group is not None:
                mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
                self._sock.setsockopt(
                    SOL_PACKET, PACKET_FANOUT, (fanout_group & 0xFFFF) | (mode << 16)
                )
        except BaseException:
            self.close()
            raise
        self._poller = select.poll()
        self._poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR)
        # a block can hold at most one frame per 64 bytes (48-byte header + sockaddr_ll + data)
        self._batch = Batch(self, block_size // 64)

    # -- the hot path -------------------------------------------------------------------

    def next_batch(self, timeout_ms: int = 100) -> Batch | None:
        """The next block as a Batch, or None if nothing arrived within ``timeout_ms``.

        Releases the previous batch if the caller has not (only one block is held at a time,
        because its records are reused). Empty blocks (all frames filtered) are skipped.
        """
        batch = self._batch
        batch.release()
        waited = False
        while True:
            index = self._next_block
            n = _ring.parse_block(
                self._map, index * self.block_size, self.block_size, batch._records, self._parse
            )
            if n < 0:  # still the kernel's: sleep until it is handed over
                if waited or not self._poller.poll(timeout_ms):
                    return None
                waited = True
                continue
            self._next_block = (index + 1) % self.block_count
            if n == 0:  # nothing for us in it: straight back to the kernel
                _ring.release_block(self._map, index * self.block_size)
                continue
            batch.count, batch.block_index, batch._released = n, index, False
            return batch

    def batches(self, idle_timeout: float | None = None, poll_ms: int = 100) -> Iterator[Batch]:
        """Yield batches forever, or until nothing arrives for ``idle_timeout`` seconds.

        Each batch is released automatically when the next one is requested (calling
        ``batch.release()`` yourself, as soon as you are done, returns the block sooner).
        """
        idle_ms = 0
        try:
            while True:
                batch = self.next_batch(poll_ms)
                if batch is None:
                    idle_ms += poll_ms
                    if idle_timeout is not None and idle_ms >= idle_timeout * 1000:
                        return
                    continue
                idle_ms = 0
                yield batch
        finally:
            self._batch.release()

    def _release_block(self, index: int) -> None:
        if self._map is not None:  # after close() the ring (and the block) is gone
            _ring.release_block(self._map, index * self.block_size)

    # -- bookkeeping --------------------------------------------------------------------

    def stats(self) -> RxStats:
        """Kernel counters since the last call (struct tpacket_stats_v3)."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        return RxStats(*struct.unpack("III", raw))

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        """Unmap the ring and close the socket (the kernel frees the ring with the socket)."""
        _let_go(self._view, "release")
        self._view = None
        _let_go(self._map, "close")
        self._map = None
        self._sock.close()

    def __enter__(self) -> RxRing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Rewrite:
    """What happens to a frame sent to backend ``b``: packed once into flat byte arrays so the
    C copy loop can index them without touching Python objects.

    ``Rewrite.dsr(src_mac, backend_macs)``: direct server return, L2 only: dst MAC = the
    backend's, src MAC = the LB's; the IP header is untouched (the backends own the VIP).
    ``Rewrite.nat(src_mac, backend_macs, backend_ips, backend_ports)``: also rewrite the
    destination IP (and port, unless 0) with incremental checksum updates (nf_nat_dst).
    """

    def __init__(
        self,
        src_mac,
        backend_macs: Sequence,
        backend_ips: Sequence | None = None,
        backend_ports: Sequence[int] | None = None,
    ):
        self.src_mac = mac_bytes(src_mac)
        self.dst_macs = b"".join(mac_bytes(m) for m in backend_macs)
        self.nat_ips = self.nat_ports = None
        if backend_ips is not None:
            if len(backend_ips) != len(backend_macs):
                raise ValueError("one IP per backend")
            ports = backend_ports if backend_ports is not None else [0] * len(backend_ips)
            self.nat_ips = np.array([_ip_int(ip) for ip in backend_ips], dtype=np.uint32)
            self.nat_ports = np.array(ports, dtype=np.uint16)

    @classmethod
    def dsr(cls, src_mac, backend_macs: Sequence) -> Rewrite:
        return cls(src_mac, backend_macs)

    @classmethod
    def nat(
        cls,
        src_mac,
        backend_macs: Sequence,
        backend_ips: Sequence,
        backend_ports: Sequence[int] | None = None,
    ) -> Rewrite:
        return cls(src_mac, backend_macs, backend_ips, backend_ports)

    def __len__(self) -> int:
        return len(self.dst_macs) // 6


class TxStats(NamedTuple):
    sent: int  #: frames handed to the kernel (marked SEND_REQUEST and kicked)
    dropped: int  #: DROP choices, unparsed frames, frames too big for a slot, ring stalls
    kicks: int  #: send() system calls


class _Transmitter:
    """What both transmit paths share: a socket bound to the interface with protocol 0 (it never
    receives; RX is RxRing's job), the counters, and closing."""

    _sock: socket.socket
    _sent: int
    _dropped: int
    _kicks: int

    def stats(self) -> TxStats:
        return TxStats(self._sent, self._dropped, self._kicks)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TxRing(_Transmitter):
    """An AF_PACKET socket with a TX ring of ``frame_count`` fixed slots of ``frame_size`` bytes.

    TPACKET_V3 for TX (kernel >= 4.11) is the V2 slot ring with the V3 header: the kernel
    rejects variable-sized slots (``tp_next_offset`` must be 0), so there is no "block" batching
    on this side; the batching is ours: fill many slots, then one ``send()``. V3 is used so both
    rings share one header layout; V2 would work the same.

    The socket is bound with protocol 0, so it never receives anything (RX is RxRing's job).
    ``qdisc_bypass``: hand frames straight to the driver, skipping the queueing discipline, like
    a DPDK port does (veth has no queue anyway). ``PACKET_LOSS`` makes the kernel skip a
    malformed slot instead of stopping the whole ring at it.
    """

    def __init__(
        self,
        ifname: str,
        frame_size: int = 2048,
        frame_count: int = 8192,
        qdisc_bypass: bool = True,
    ):
        if frame_size & (frame_size - 1) or not 128 <= frame_size <= 1 << 16:
            # a power of two divides a 64 KiB block exactly, so slot i is at i * frame_size
            raise ValueError("TX frame_size must be a power of two between 128 and 65536")
        self.ifname = ifname
        self.frame_size = frame_size
        block_size = 1 << 16
        per_block = block_size // frame_size
        block_count = -(-frame_count // per_block)
        self.frame_count = per_block * block_count
        self._slot = 0
        self._sent = self._dropped = self._kicks = 0
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._map = None
        try:
            self._sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            self._sock.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
            if qdisc_bypass:
                self._sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            req = _TPACKET_REQ3.pack(
                block_size, block_count, frame_size, self.frame_count, 0, 0, 0
            )  # TX: no block timeout, no private area
            self._sock.setsockopt(SOL_PACKET, PACKET_TX_RING, req)
            self._map = mmap.mmap(
                self._sock.fileno(),
                block_size * block_count,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
            self._sock.bind((ifname, 0))
        except BaseException:
            self.close()
            raise
        self._poller = select.poll()
        self._poller.register(self._sock.fileno(), select.POLLOUT | select.POLLERR)

    # -- the hot path -------------------------------------------------------------------

    def send_batch(
        self,
        batch: Batch,
        choices,
        rewrite: Rewrite,
        stall_timeout_ms: int = 200,
        kick_every: int = 0,
    ) -> int:
        """Forward the packets of ``batch``: ``choices[i]`` is the backend index for packet
        ``i`` (``DROP``/-1/None: not forwarded). Copy + rewrite happen in C; one ``send()``
        kicks the kernel for the whole batch (more only if the batch outgrows the free slots).
        ``kick_every=k`` kicks after every ``k`` packets instead: the knob of the batch-size
        sweep (k=1 is one system call per packet, like the socket way).
        Returns the number of frames sent.
        """
        n = batch.count
        i = sent_total = 0
        deadline = None
        while True:
            stop = n if kick_every <= 0 else min(n, i + kick_every)
            i, self._slot, sent, dropped = _ring.tx_fill(
                self._map,
                self.frame_size,
                self.frame_count,
                self._slot,
                batch._ring._map,
                batch._records,
                stop,
                i,
                choices,
                rewrite.src_mac,
                rewrite.dst_macs,
                rewrite.nat_ips,
                rewrite.nat_ports,
            )
            sent_total += sent
            self._dropped += dropped
            if sent:
                self.kick()
            if i >= n:
                break
            if i >= stop:  # a chunk done: kicked; on to the next one
                continue
            # The next slot is still in flight: wait for the kernel to hand slots back. Bounded
            # by the clock, not by poll() results: poll() can report POLLOUT/POLLERR at once
            # while our slot is still busy (e.g. the link is down and nothing drains).
            now = time.monotonic()
            if deadline is None:
                deadline = now + stall_timeout_ms / 1000
            elif now >= deadline:
                self._dropped += n - i  # give up on the rest rather than livelock
                break
            if self._poller.poll(1):  # "ready" yet our slot is busy: do not spin
                time.sleep(0.0005)
        self._sent += sent_total
        return sent_total

    def send_frames(self, frames: Sequence) -> int:
        """Plain-Python TX: copy each bytes-like frame into the next free slot, then one kick.

        The same protocol as the C path, written out: check the slot is ours
        (TP_STATUS_AVAILABLE), copy the frame after the header, set the lengths, and set the
        status to TP_STATUS_SEND_REQUEST last (on x86 stores become visible in program order,
        so the kernel never sees the status before the data). Frames that do not fit a slot,
        or that find the ring full, are dropped and counted.
        """
        m, fs, data_off = self._map, self.frame_size, _ring.TX_DATA_OFFSET
        assert m is not None, "the ring is closed"
        sent = 0
        for frame in frames:
            length = len(frame)
            base = self._slot * fs
            if (
                length > fs - data_off
                or _U32.unpack_from(m, base + _TX_HDR_STATUS)[0] != TP_STATUS_AVAILABLE
            ):
                self._dropped += 1
                continue
            m[base + data_off : base + data_off + length] = frame
            _U32.pack_into(m, base + _TX_HDR_NEXT_OFFSET, 0)
            _U32.pack_into(m, base + _TX_HDR_SNAPLEN, length)
            _U32.pack_into(m, base + _TX_HDR_LEN, length)
            _U32.pack_into(m, base + _TX_HDR_STATUS, TP_STATUS_SEND_REQUEST)
            self._slot = (self._slot + 1) % self.frame_count
            sent += 1
        if sent:
            self.kick()
        self._sent += sent
        return sent

    def kick(self) -> None:
        """One send(): the kernel transmits every slot marked SEND_REQUEST. MSG_DONTWAIT: do
        not wait for the frames to complete; their slots come back as the driver frees them."""
        self._kicks += 1
        try:
            self._sock.send(b"", socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass  # the kernel will take the slots on the next kick
        except OSError as e:  # ENOBUFS: device busy; same remedy
            if e.errno != 105:
                raise

    def pending(self) -> int:
        """Slots the kernel has not given back yet."""
        return _ring.tx_pending(self._map, self.frame_size, self.frame_count)

    def wait_idle(self, timeout_ms: int = 1000) -> bool:
        """Kick and wait until every slot is back (used before closing and in tests)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            self.kick()
            self._poller.poll(5)
        return True

    def close(self) -> None:
        _let_go(self._map, "close")
        self._map = None
        super().close()


class MmsgTx(_Transmitter):
    """Batched transmit without a TX ring: ``sendmmsg(2)`` straight from the RX ring.

    Same interface as :class:`TxRing` (``send_batch``, ``send_frames``, ``stats``). The frames
    are rewritten in place in the RX ring (they are ours until the block is released) and one
    ``sendmmsg`` hands up to 256 of them to the kernel, iovecs pointing into the ring. Why it can
    beat the TX ring on veth: a TX-ring frame enters the kernel as page fragments of the ring
    (zero-copy), and veth, which must not let a user page travel on, copies them into freshly
    allocated pages (``skb_copy_ubufs``: a page allocation and a copy per packet); here the
    kernel copies each small frame once into a linear skb. Both are one system call per batch.
    ``io.tx`` picks this (``sendmmsg``) or the TX ring (``ring``); ``vnflab bench`` measures
    both.
    """

    def __init__(self, ifname: str, qdisc_bypass: bool = True):
        self.ifname = ifname
        self._sent = self._dropped = self._kicks = 0
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            if qdisc_bypass:
                self._sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            self._sock.bind((ifname, 0))
        except BaseException:
            self._sock.close()
            raise

    def send_batch(
        self,
        batch: Batch,
        choices,
        rewrite: Rewrite,
        stall_timeout_ms: int = 200,
        kick_every: int = 0,
    ) -> int:
        """As :meth:`TxRing.send_batch`; ``kick_every=k``: one sendmmsg per ``k`` packets."""
        chunk = kick_every if kick_every > 0 else 0
        n = batch.count
        sent, dropped = _ring.tx_sendmmsg(
            self._sock.fileno(),
            batch._ring._map,
            batch._records,
            n,
            choices,
            rewrite.src_mac,
            rewrite.dst_macs,
            rewrite.nat_ips,
            rewrite.nat_ports,
            chunk,
        )
        self._kicks += -(-n // (chunk or 256)) if n else 0
        self._sent += sent
        self._dropped += dropped
        return sent

    def send_frames(self, frames: Sequence) -> int:
        """Plain-Python TX: one send() per frame (the NAT return path)."""
        sent = 0
        for frame in frames:
            try:
                self._sock.send(frame, socket.MSG_DONTWAIT)
                sent += 1
            except OSError:
                self._dropped += 1
            self._kicks += 1
        self._sent += sent
        return sent

    def kick(self) -> None:
        """Nothing waits in a ring: every send_batch has handed its frames over already."""

    def pending(self) -> int:
        return 0

    def wait_idle(self, timeout_ms: int = 1000) -> bool:
        return True
