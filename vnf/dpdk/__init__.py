"""vnf.dpdk: the DPDK binding way 3 is built on (the C part is ``_dpdk.c``).

Typical use (one LB core, one port pair)::

    from vnf import dpdk
    eal = dpdk.init(vdevs=["net_null0"], cores=[0], mem_mb=128)   # once per process
    pool = dpdk.pool(n=8191)
    rx = dpdk.Port.open("net_virtio_user0,path=/tmp/vhost.sock", pool)
    arrays = dpdk.ParseArrays(32)
    while running:
        burst = rx.rx()                 # Burst: up to 32 mbufs, burst[i] = writable memoryview
        if not burst:
            continue
        burst.parse(arrays)             # C: 5-tuples, flow hashes, drop reasons into numpy
        burst.set_macs(index, mac_table, rx.mac)
        burst.keep()                    # free what failed to parse
        rx.tx(burst)                    # unsent mbufs are freed; the burst ends empty

Rules
* **EAL initialises once per process** (a DPDK limit). :func:`init` is a singleton: calling it
  again with the same arguments returns the same :class:`EAL`; different arguments raise.
  It always adds ``--no-pci``, a unique ``--file-prefix``, a memory cap (``-m`` and
  ``--socket-limit``), ``--single-file-segments`` (virtio-user needs it), ``--no-telemetry`` and
  ``--in-memory`` (memfd-backed huge pages, no files anywhere: nothing to clean up). Cleanup
  (stop/close all ports, ``rte_eal_cleanup``) is registered with atexit.
* **Ownership.** A :class:`Burst` owns its mbufs until :meth:`Port.tx` / ``tx_burst`` /
  ``Ring.enqueue`` / ``free`` / ``keep``. mbufs the driver or ring does not take are **freed**
  (counted by the caller as drops: ``sent < n``). A memoryview from ``burst[i]`` is only valid
  until then: using it later reads or writes some other packet.
* **Busy cycles.** ``rx_burst`` reads the TSC before polling; if it returns packets, the burst
  carries that start and its first tx/enqueue/free adds the elapsed cycles and the packet count
  to the queue's counters. :func:`busy_stats` turns them into ns/packet (empty polls excluded,
  like the busy percentage of DPDK telemetry).
* **Threads.** Several Python threads may each poll their own queue (:func:`run_workers` pins
  them and registers them as EAL threads so mempool caches work), but the GIL lets only one run
  Python at a time: extra threads help only while one is inside a C call that drops the GIL
  (``io_forward``). For real parallel Python, run one process per queue (separate file
  prefixes, e.g. one vdev per process).
* Every DPDK error becomes :class:`DpdkError` (an OSError: ``errno`` and ``rte_strerror`` text).

Each DPDK process should run inside :mod:`testbed.dpdk_sandbox` so nothing survives it.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import hugepages
from .hugepages import HugePagesError

try:
    from . import _dpdk
    from ._dpdk import (
        Burst,
        DpdkError,
        Mempool,
        Ring,
        burst_from_frames,  # a Burst of mbufs holding these frames (tests, bench)
        gen_loop,  # a C generator + sink loop, for the bench's DPDK generator
        rx_burst,
        tx_burst,
    )

    IMPORT_ERROR: BaseException | None = None
except ImportError as e:  # built without libdpdk-dev
    _dpdk = None
    IMPORT_ERROR = e

    class DpdkError(OSError):  # type: ignore[no-redef]
        pass


try:
    from vnf.packet import REASONS as _PACKET_REASONS

    REASONS: tuple[str | None, ...] = _PACKET_REASONS
except ImportError:  # pragma: no cover
    REASONS = (None,)
if _dpdk is not None:
    _dpdk.use_reason_names(tuple(REASONS))  # Burst.reason(i) speaks vnf.packet's names

__all__ = [
    "init",
    "eal",
    "EAL",
    "Port",
    "pool",
    "ParseArrays",
    "Burst",
    "Ring",
    "Mempool",
    "DpdkError",
    "HugePagesError",
    "rx_burst",
    "tx_burst",
    "ring",
    "busy_stats",
    "busy_reset",
    "io_forward",
    "run_workers",
    "REASONS",
    "available",
    "FusedForward",
    "gen_loop",
    "burst_from_frames",
]


def available() -> bool:
    """True when the compiled binding could be imported."""
    return _dpdk is not None


def _need_binding():
    if _dpdk is None:
        raise ImportError(
            f"vnf.dpdk._dpdk is not built ({IMPORT_ERROR}); install libdpdk-dev "
            "and run: python setup.py build_ext --inplace"
        )


# ----------------------------------------------------------------------------------- EAL
@dataclass
class EAL:
    """The process's one EAL. Made by :func:`init`; holds its arguments and the ports."""

    args: list
    key: tuple
    file_prefix: str
    tsc_hz: int = 0
    ports: dict = field(default_factory=dict)

    def cleanup(self) -> None:
        """Stop and close every port, then rte_eal_cleanup(). After this no DPDK call works
        in this process (EAL cannot be initialised again)."""
        if _dpdk is not None and _dpdk.eal_state() == 1:
            _dpdk.eal_cleanup()
            # rte_eal_cleanup empties EAL's runtime directory but (22.11) leaves it behind:
            # one empty /var/run/dpdk/<prefix> per run would pile up on a student's VM.
            base = os.environ.get("RUNTIME_DIRECTORY") or (
                "/var/run/dpdk"
                if os.geteuid() == 0
                else os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/tmp"), "dpdk")
            )
            try:
                os.rmdir(os.path.join(base, self.file_prefix))
            except OSError:
                pass  # not there, or not empty: not ours to force
        self.ports.clear()


_eal: EAL | None = None
_lock = threading.Lock()
_names = itertools.count()


def eal() -> EAL | None:
    """The EAL of this process, or None before :func:`init`."""
    return _eal


def init(
    vdevs: Sequence[str] = (),
    cores: Sequence[int] | None = None,
    mem_mb: int = 128,
    file_prefix: str | None = None,
    in_memory: bool = True,
    log_level: str = "error",
    extra_args: Sequence[str] = (),
    reserve_hugepages: bool = False,
) -> EAL:
    """Initialise EAL (once per process; see the module notes).

    vdevs: ``--vdev`` strings probed at start-up (ports can also be added later with
    :meth:`Port.open`). cores: lcores, the first is the main lcore and EAL pins this thread to
    it (default: the first CPU this process may use). mem_mb: huge-page memory to preallocate
    and the cap. Raises HugePagesError when huge pages are missing (reserve_hugepages=True
    reserves them), DpdkError when rte_eal_init fails.
    """
    global _eal
    _need_binding()
    key = (
        tuple(vdevs),
        tuple(cores) if cores else None,
        mem_mb,
        file_prefix,
        in_memory,
        log_level,
        tuple(extra_args),
    )
    with _lock:
        if _eal is not None:
            if key != _eal.key:
                raise DpdkError(
                    0,
                    "EAL is already initialised in this process with other "
                    f"arguments ({_eal.args}); EAL can only init once per "
                    "process",
                )
            return _eal
        if _dpdk.eal_state() != 0:
            raise DpdkError(
                0, "EAL init already failed or was cleaned up in this process; start a new process"
            )
        hugepages.require(mem_mb, reserve_if_missing=reserve_hugepages)
        if cores is None:
            cores = [min(os.sched_getaffinity(0))]
        prefix = file_prefix or f"vnfl{os.getpid()}_{os.urandom(3).hex()}"
        args = [
            "-l",
            ",".join(str(c) for c in cores),
            "--no-pci",
            "--file-prefix",
            prefix,
            "-m",
            str(mem_mb),
            "--socket-limit",
            str(mem_mb),
            "--single-file-segments",
            "--no-telemetry",
            f"--log-level={log_level}",
        ]
        if in_memory:
            args.append("--in-memory")
        elif os.environ.get("VNFL_DPDK_HUGE_DIR"):
            args += ["--huge-dir", os.environ["VNFL_DPDK_HUGE_DIR"]]
        for v in vdevs:
            args += ["--vdev", v]
        args += list(extra_args)
        _dpdk.eal_init(args)
        _eal = EAL(args=args, key=key, file_prefix=prefix, tsc_hz=_dpdk.tsc_hz())
        atexit.register(_eal.cleanup)
        return _eal


def _need_eal() -> EAL:
    if _eal is None:
        raise DpdkError(0, "EAL not initialised: call vnf.dpdk.init() first")
    return _eal


# ----------------------------------------------------------------------------------- pools
def pool(
    name: str | None = None, n: int = 8191, cache: int = 256, data_room: int = 2048 + 128
) -> Mempool:
    """rte_pktmbuf_pool_create with an explicit mbuf count (n = 2^k - 1 is the most
    memory-efficient). Pools live until EAL cleanup."""
    _need_eal()
    return _dpdk.pool_create(name or f"vnflpool{next(_names)}", n, cache, data_room)


def ring(
    size: int = 1024,
    name: str | None = None,
    single_producer: bool = False,
    single_consumer: bool = False,
) -> Ring:
    """rte_ring of mbufs (size: power of two; holds size-1). For pipeline stages: one thread
    ``ring.enqueue(burst)``, another ``ring.dequeue(32)``."""
    _need_eal()
    return _dpdk.ring_create(
        name or f"vnflring{next(_names)}", size, single_producer, single_consumer
    )


# ----------------------------------------------------------------------------------- ports
class Port:
    """One ethdev port (a vdev). ``Port.open(devargs, pool)`` probes, configures and starts it.

    devargs examples: ``net_null0``, ``net_ring0`` (TX loops back to RX),
    ``net_virtio_user0,path=/tmp/vh.sock,queues=2``, ``net_vhost0,iface=/tmp/vh.sock,queues=2``,
    ``net_af_packet0,iface=veth0``, ``net_af_xdp0,iface=veth0,start_queue=0``,
    ``net_tap0,iface=dtap0``.
    """

    def __init__(self, port_id: int, name: str, pool: Mempool, nrxq: int, ntxq: int):
        self.id = port_id
        self.name = name
        self.pool = pool
        self.nrxq = nrxq
        self.ntxq = ntxq
        self.started = False
        self.mac = _dpdk.port_mac(port_id)

    @classmethod
    def open(
        cls,
        devargs: str,
        pool: Mempool,
        nrxq: int = 1,
        ntxq: int = 1,
        nrxd: int = 1024,
        ntxd: int = 1024,
        start: bool = True,
        promisc: bool = True,
    ) -> Port:
        e = _need_eal()
        name = devargs.split(",", 1)[0]
        try:
            pid = _dpdk.port_by_name(name)  # already there (an EAL --vdev)
        except DpdkError:
            _dpdk.dev_probe(devargs)
            pid = _dpdk.port_by_name(name)
        _dpdk.port_setup(pid, pool, nrxq, ntxq, nrxd, ntxd)
        port = cls(pid, name, pool, nrxq, ntxq)
        if start:
            port.start(promisc)
        e.ports[pid] = port
        return port

    def start(self, promisc: bool = True) -> None:
        _dpdk.port_start(self.id, promisc)
        self.mac = _dpdk.port_mac(self.id)
        self.started = True

    def stop(self) -> None:
        _dpdk.port_stop(self.id)
        self.started = False

    def close(self) -> None:
        if self.started:
            self.stop()
        _dpdk.port_close(self.id)
        if _eal is not None:
            _eal.ports.pop(self.id, None)

    def rx(self, queue: int = 0, n: int = 32, into: Burst | None = None) -> Burst:
        """rx_burst on one queue. Pass `into` to reuse a Burst (its old mbufs are freed)."""
        return rx_burst(self.id, queue, n, into)

    def tx(self, burst: Burst, queue: int = 0) -> int:
        """tx_burst; returns packets sent; the rest are freed. The burst ends empty."""
        return tx_burst(self.id, queue, burst)

    @property
    def mac_str(self) -> str:
        return ":".join(f"{b:02x}" for b in self.mac)

    def link(self) -> dict:
        return _dpdk.port_link(self.id)

    def stats(self) -> dict:
        """rte_eth_stats_get: ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors,
        rx_nombuf and per-queue lists q_ipackets, q_opackets, q_ibytes, q_obytes, q_errors."""
        return _dpdk.port_stats(self.id)

    def reset_stats(self) -> None:
        _dpdk.port_stats_reset(self.id)

    def __repr__(self) -> str:
        return f"<Port {self.id} {self.name} {self.mac_str} rxq={self.nrxq} txq={self.ntxq}>"


# ----------------------------------------------------------------------------------- parse
class ParseArrays:
    """The numpy arrays ``Burst.parse`` fills (one slot per packet, `n` = burst size).

    src_ip/dst_ip (uint32, host order), src_port/dst_port (uint16), proto (uint8),
    hash (uint32, == vnf.hashing.flow_hash, 0 for drops), reason (uint8, index into
    REASONS; 0 = parsed), l3_offset/l4_offset (uint16), vlan (int32, -1 = untagged).
    """

    # One block (26 bytes per packet) holds all fields, so Burst.parse acquires one buffer, and
    # holds it from burst to burst while it parses into the same ParseArrays: the block is made
    # once here and never replaced.
    _LAYOUT = (
        ("src_ip", np.uint32),
        ("dst_ip", np.uint32),
        ("hash", np.uint32),
        ("vlan", np.int32),
        ("src_port", np.uint16),
        ("dst_port", np.uint16),
        ("l3_offset", np.uint16),
        ("l4_offset", np.uint16),
        ("proto", np.uint8),
        ("reason", np.uint8),
    )
    # Set in __init__ (setattr per _LAYOUT entry); declared here for readers and type checkers.
    src_ip: np.ndarray
    dst_ip: np.ndarray
    hash: np.ndarray
    vlan: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    l3_offset: np.ndarray
    l4_offset: np.ndarray
    proto: np.ndarray
    reason: np.ndarray

    def __init__(self, n: int = 32):
        self.n = n
        self._block = np.zeros(26 * n, np.uint8)
        off = 0
        for name, dt in self._LAYOUT:
            arr = self._block[off : off + n * np.dtype(dt).itemsize].view(dt)
            setattr(self, name, arr)
            off += arr.nbytes

    def flows(self, count: int) -> list:
        """FiveTuples (None for drops) of the first `count` packets (slow: for tests)."""
        from vnf.packet import FiveTuple

        return [
            FiveTuple(
                int(self.src_ip[i]),
                int(self.dst_ip[i]),
                int(self.src_port[i]),
                int(self.dst_port[i]),
                int(self.proto[i]),
            )
            if self.reason[i] == 0
            else None
            for i in range(count)
        ]

    def reasons(self, count: int) -> list:
        """Drop-reason strings (None = parsed) of the first `count` packets."""
        return [REASONS[r] for r in self.reason[:count]]


class FusedForward:
    """The whole per-burst NF in one C call: kernel fusion, the DPDK way's fastest style.

    ``forward_vector`` in lab 3 makes one C call per step (parse, decide, rewrite, keep,
    transmit): each is fast, but on this kind of machine every Python call and attribute costs
    0.05-0.3 us, and a handful of them per burst weigh as much as the C work for 32 packets.
    Here the ``FlowKernel`` (C) does it all: parse + flow hash + VIP check + flow-cache lookup +
    MAC rewrite, then the transmit. ``kernel.send(burst, queue)`` does it for one burst;
    ``kernel.poll(burst, queues, polls)`` is the whole poll loop in C (rx included, GIL
    released), so Python does not even run per burst. Python runs only when a burst is not all
    hits (:meth:`_slow`): drops are counted and freed and new flows are decided by the shared
    ``LoadBalancer`` (``settle_batch``: the pool's choice, remembered in the cache).

    The state is the LoadBalancer's own ``vnf.batch.BatchFlowCache``; its buffers are handed to C once
    and again when the cache replaces an array or the pool changes (:meth:`refresh`, which the
    loop calls now and then: a backend that fails is noticed at the next refresh). Packets
    forwarded entirely in C are added to the LoadBalancer's counters by :meth:`fold_counters`.

        fused = FusedForward(lb, ParseArrays(32), mac_table, our_mac, port.id)
        kernel = fused.refresh()             # call refresh() again now and then
        sent = kernel.send(burst, queue)     # one burst, or:
        sent, bursts = kernel.poll(Burst(32), (queue,), 1024)   # 1024 rounds of polling
    """

    def __init__(self, lb, arrays: ParseArrays, mac_table: bytes, src_mac: bytes, port_id: int):
        self.lb, self.arrays, self.port_id = lb, arrays, port_id
        self.mac_table, self.src_mac = bytes(mac_table), bytes(src_mac)
        self._kernel = None
        self._version = -1

    def refresh(self):
        """The ``FlowKernel`` for the cache and pool as they are now (rebuilt if changed)."""
        lb = self.lb
        cache = lb.prepared_batch_cache()
        cache.grow_choice(self.arrays.n)
        if self._kernel is None or cache.version != self._version:  # arrays or pool changed
            self.fold_counters()
            self._kernel = _dpdk.FlowKernel(
                self.arrays._block,
                cache.slot_bytes,
                cache.alive.view(np.uint8),
                cache.choice,
                self.mac_table,
                lb.vip,
                lb.port,
                cache.proto_mask,
                self.src_mac,
                self.port_id,
                self._slow,
            )
            self._version = cache.version
        return self._kernel

    def fold_counters(self) -> None:
        """Count the packets C forwarded on its own in the LoadBalancer (and its cache)."""
        if self._kernel is not None:
            n = self._kernel.take_fast_packets()
            self.lb.batch_cache.hits += n
            self.lb.count_forwarded(n)

    def _slow(
        self, burst: Burst, queue: int, parsed: int, valid: int, hits: int, now: float
    ) -> int:
        """A burst with drops or new flows: the LoadBalancer settles it, then transmit."""
        lb = self.lb
        n = len(burst)
        before = lb.forwarded
        choice = lb.settle_batch(self.arrays, n, (parsed, valid, hits), now)
        if hits < valid:  # new flows: their MACs now
            burst.set_macs(choice, self.mac_table, self.src_mac)
        if lb.forwarded - before != n:  # some dropped: free them
            burst.keep(choice >= 0)
        return tx_burst(self.port_id, queue, burst)


# ----------------------------------------------------------------------------------- cycles
def busy_stats() -> dict:
    """Busy-cycle totals: busy_cycles, busy_packets, bursts, tsc_hz, ns_per_packet and
    per_queue {(port, queue) | 'ring': (cycles, packets, bursts)}.
    ns/packet = busy_cycles / busy_packets / tsc_hz * 1e9."""
    e = _need_eal()
    per = _dpdk.busy_counters()
    cyc = sum(v[0] for v in per.values())
    pkts = sum(v[1] for v in per.values())
    return {
        "busy_cycles": cyc,
        "busy_packets": pkts,
        "bursts": sum(v[2] for v in per.values()),
        "tsc_hz": e.tsc_hz,
        "ns_per_packet": cyc / pkts / e.tsc_hz * 1e9 if pkts else None,
        "per_queue": per,
    }


def busy_reset() -> None:
    _dpdk.busy_reset()


# ----------------------------------------------------------------------------------- loops
def io_forward(
    rx_port,
    tx_port,
    burst: int = 32,
    seconds: float = 1.0,
    bidirectional: bool = False,
    rx_queue: int = 0,
    tx_queue: int = 0,
) -> dict:
    """Baseline C forwarding loop (no parsing) on this thread, GIL released: rx on rx_port,
    tx on tx_port (and back, with bidirectional=True), for `seconds`. Returns rx, tx, dropped,
    polls, cycles, busy_cycles, seconds, mpps and ns_per_packet (wall time / packets)."""
    _need_eal()
    a = getattr(rx_port, "id", rx_port)
    b = getattr(tx_port, "id", tx_port)
    pairs = [(a, rx_queue, b, tx_queue)]
    if bidirectional:
        pairs.append((b, tx_queue, a, rx_queue))
    r = _dpdk.io_forward(pairs, burst, seconds)
    r["mpps"] = r["rx"] / r["seconds"] / 1e6 if r["seconds"] else 0.0
    r["ns_per_packet"] = r["seconds"] * 1e9 / r["rx"] if r["rx"] else None
    return r


def run_workers(
    targets: Iterable[Callable[[], object]], cores: Sequence[int], register: bool = True
) -> list:
    """Run each callable on its own Python thread pinned to cores[i] (registered as an EAL
    thread so it gets an lcore id and mempool caches), wait for all, return their results.
    An exception in a worker is re-raised here. The GIL serialises Python code: see the
    module notes."""
    _need_eal()
    targets = list(targets)
    results: list = [None] * len(targets)
    errors: list = []

    def body(i, fn, core):
        try:
            os.sched_setaffinity(0, {core})  # pid 0 = this thread
            if register:
                _dpdk.thread_register()
            try:
                results[i] = fn()
            finally:
                if register:
                    _dpdk.thread_unregister()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [
        threading.Thread(target=body, args=(i, fn, cores[i % len(cores)]), name=f"vnfl-worker{i}")
        for i, fn in enumerate(targets)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
