"""The batch machinery of the NF: one decision per packet of a whole burst, in one C call.

``LoadBalancer.backends_for_batch`` (the vector styles of ways 2 and 3) and ``settle_batch``
(the fused DPDK kernel, ``vnf.dpdk.FusedForward``) hand their bursts to the
:class:`BatchFlowCache` of the LB; ``vnf/lb.py`` keeps the NF itself readable and free of numpy.

The packets come as columns: 1-D arrays ``hash`` (uint32, ``vnf.hashing.flow_hash`` as the C
parsers compute it), ``reason`` (uint8, index into ``vnf.packet.REASONS``, 0 = parsed),
``dst_ip`` (uint32), ``dst_port`` (uint16) and ``proto`` (uint8): either as attributes that stay
the same arrays from call to call (``vnf.dpdk.ParseArrays``; bound once, see below) or as
fields of a numpy record array (the AF_PACKET ring's ``batch.packets``; any stride, no copy).

Per packet the answer is what ``handle_frame`` then ``backend_for`` would give: an unparsed
packet is dropped and counted under its reason; a parsed one not for the service (VIP, port, a
served protocol) is counted as not-for-vip; the others are balanced (no backend left: counted
as no-backend). The LB's counters are updated in bulk.

How: ``vnf._fastpath.cache_lookup`` (C, ``nf_for_vip`` + ``nf_cache_lookup`` in
``vnf/csrc/nf.h``) does the service check and the flow-state lookup for the whole burst and
marks misses; the misses (new flows) are then filled one at a time in Python from the pool's
choice *for that hash* (``BackendPool.choose_by_hash``). In steady state almost every packet
hits, so the burst costs one C call: no Python, and no numpy call, per packet. What is left is
a fixed cost per burst, so it is kept small: the arrays the call needs (the cache's, the columns
of a ``ParseArrays``) are checked and held once (``_fastpath.CacheLookup``; a record array,
new per ring block, gets the cache's arrays pinned once, ``_fastpath.pin``): asking numpy for
ten buffers per burst would cost more than the lookup.

The flow state is a :class:`BatchFlowCache`, not the ``FlowTable``: a table keyed by the 32-bit
flow hash (a hit when a slot holds that hash and a backend that still serves). Where it differs
from FlowTable, honestly:

* the key is the hash, not the 5-tuple: two flows with the same 32-bit hash share an entry
  (about one pair in 4 billion);
* a flow may sit in two slots (its own and the neighbour: two-way set associative). A new flow
  whose two slots are taken evicts the older entry (LRU within the pair, not across the table).
  With Maglev or hash the evicted flow, on its next packet, is given the same backend again
  unless the pool changed meanwhile; with round-robin it may move. Three live flows in one pair
  evict each other on every packet, and every such packet takes the Python miss path. Direct
  mapping (one slot) collides at the birthday rate, ~F^2/2S pairs for F flows in S slots, which
  is why there are two ways. Size the table (a power of two >= ``flow_capacity``) well above
  the live flows;
* idle entries are dropped by :meth:`BatchFlowCache.expire` (called about once a second by the
  ways, through ``LoadBalancer.expire``), not at lookup: a flow idle a little longer than
  ``idle_timeout`` may still hit.

For a stable pool and distinct slots it returns, flow by flow, exactly what ``backend_for``
returns (tests/test_dpdk_way.py checks this; tests/test_batch_decision.py checks the C kernel
against a plain Python reference).
"""

from __future__ import annotations

import numpy as np

from vnf.backends import Backend, BackendPool
from vnf.hashing import cache_bits, cache_slot
from vnf.packet import NOT_FOR_VIP, REASONS

try:  # the C kernel (setup.py build_ext)
    import vnf._fastpath as _fastpath
except ImportError:  # pragma: no cover - BatchFlowCache() says what to do
    _fastpath = None

MISS = -2  # a choice between the C lookup and the pool

# One slot of the flow cache, as C's struct nf_flow_slot (vnf/csrc/nf.h): the flow hash held,
# its backend number (-1: empty), when it was last seen. A lookup reads all three, so they sit
# side by side in one record (an array of structs): one cache line per lookup, not one per
# field. The two slots of a set are 32 bytes, and the table starts on a multiple of that
# (SET_ALIGN, C's NF_CACHE_ALIGN), so a set never straddles two cache lines.
SLOT = np.dtype([("hash", "<u4"), ("backend", "<i4"), ("seen", "<f8")])
SET_ALIGN = 32


def slot_table(capacity: int) -> np.ndarray:
    """``capacity`` empty slots (``SLOT`` records, backend -1) starting on ``SET_ALIGN``."""
    raw = np.zeros(capacity * SLOT.itemsize + SET_ALIGN, np.uint8)
    start = -raw.ctypes.data % SET_ALIGN
    table = raw[start : start + capacity * SLOT.itemsize].view(SLOT)
    table["backend"] = -1
    return table


class BatchFlowCache:
    """The flow state of ``LoadBalancer.backends_for_batch``: ``slots``, a numpy array of
    ``SLOT`` records indexed by ``slot(hash)`` (the flow hash held in each slot, its backend
    number (-1: empty) and when it was last seen; ``hash``, ``backend`` and ``seen`` are views
    of its fields), plus ``alive`` per backend number. The C kernel
    (``vnf._fastpath.cache_lookup``) reads and refreshes the slots in place; Python fills the
    misses (:meth:`decide`, :meth:`settle`). The module docstring says how it differs from the
    ``FlowTable``."""

    COLUMNS = ("hash", "reason", "dst_ip", "dst_port", "proto")

    def __init__(self, flow_capacity: int, idle_timeout: float, protos=frozenset()):
        if _fastpath is None:
            raise RuntimeError("vnf._fastpath is not built: python setup.py build_ext --inplace")
        self.bits = cache_bits(flow_capacity)
        capacity = self.capacity = 1 << self.bits
        self.mask = np.uint32(capacity - 1)
        self.idle_timeout = idle_timeout
        self.slots = slot_table(capacity)
        self.slot_bytes = self.slots.view(np.uint8)  # what C takes (nf_flow_slot records)
        self.hash, self.backend, self.seen = (self.slots[f] for f in ("hash", "backend", "seen"))
        self.alive = np.zeros(0, bool)  # by pool.index_of: may carry its flows
        self.alive_ref: frozenset[str] | None = None  # the pool's objects alive was built from
        self.table_ref: list[Backend] | None = None
        self.hits = self.misses = self.evictions = self.expirations = 0
        self.proto_mask = sum(1 << p for p in protos)  # bit p: IP protocol p is served
        # The kernel's arguments, pinned once (these arrays are never reallocated): see pin().
        self._slots_pin = _fastpath.pin(self.slot_bytes)
        self.pins = (self._slots_pin, _fastpath.pin(self.alive))
        self.choice = np.zeros(0, np.int32)  # the kernel's output, grown to the largest burst
        self.choice_pin = _fastpath.pin(self.choice)
        self.choice_views = ChoiceViews(self.choice)
        # decide()'s kernel bound to one column holder (a ParseArrays) and the arrays above:
        # made on its first burst, again after sync() or grow_choice() replaced an array
        self._bound_columns: object = None
        self._bound: _fastpath.CacheLookup | None = None
        self.version = 0  # +1 whenever alive or choice is replaced

    def slot(self, flow_hash: int) -> int:
        """Where a flow lives (:func:`cache_slot`)."""
        return cache_slot(flow_hash, self.bits)

    def ways(self, flow_hash: int) -> tuple:
        """The two slots a flow may occupy (two-way set associative, as nf_cache_lookup)."""
        first = self.slot(flow_hash)
        return (first, first ^ 1) if self.bits else (first,)

    def bind(self, lb, columns) -> _fastpath.CacheLookup:
        """The kernel for ``columns`` (a holder of arrays that stay the same from burst to burst,
        a ``ParseArrays``) with every argument checked and held once (``_fastpath.CacheLookup``):
        a burst then passes only its size and the time. Kept while the holder is the same."""
        self.grow_choice(len(columns.hash))
        packet_columns = tuple(getattr(columns, name) for name in self.COLUMNS)
        vip = (lb.vip, lb.port, self.proto_mask)
        self._bound = _fastpath.CacheLookup(packet_columns, vip, self.pins, self.choice)
        self._bound_columns = columns
        return self._bound

    def lookup_block(self, lb, columns: np.ndarray, n: int, now: float) -> tuple:
        """The kernel over a record array (a ring block's packets: a new array per block, its
        fields passed as they are, strided views, no copy). Returns (parsed, valid, hits)."""
        self.grow_choice(n)
        packet_columns = tuple(columns[name] for name in self.COLUMNS)
        vip = (lb.vip, lb.port, self.proto_mask)
        return _fastpath.cache_lookup(n, now, packet_columns, vip, self.pins, self.choice_pin)

    def grow_choice(self, n: int) -> None:
        """Room for ``n`` verdicts in ``choice`` (a new array bumps ``version``)."""
        if len(self.choice) < n:
            self.choice = np.zeros(max(n, 2 * len(self.choice)), np.int32)
            self.choice_pin = _fastpath.pin(self.choice)
            self.choice_views = ChoiceViews(self.choice)
            self._bound_columns = self._bound = None
            self.version += 1

    def follows(self, pool: BackendPool) -> bool:
        """True if ``alive`` is up to date with the pool (else call :meth:`sync`)."""
        return self.alive_ref is pool.alive_names and self.table_ref is pool.table

    def sync(self, pool: BackendPool) -> None:
        """The pool changed (or first use): which backend numbers may keep their flows."""
        alive = np.zeros(pool.index_count + 1, bool)
        for b in pool.backends:
            if pool.serves(b):
                alive[pool.index_of(b)] = True
        self.alive = alive
        self.pins = (self._slots_pin, _fastpath.pin(alive))
        self._bound_columns = self._bound = None
        self.version += 1
        self.alive_ref, self.table_ref = pool.alive_names, pool.table

    # -- one burst -----------------------------------------------------------------------

    def decide(self, lb, columns, n: int, now: float) -> np.ndarray:
        """``lb``'s backend for each of the ``n`` packets in ``columns`` (see the module
        docstring): an int32 array of n, the backend's ``pool.index_of`` number per packet, -1
        to drop. Valid until the next call (it is reused).

        Per burst this is a fixed cost, paid again by every burst: one C call, and in the
        common case (every packet a known flow) two counters; only drops and new flows take
        :meth:`settle`."""
        bound = self._bound
        if bound is not None and columns is self._bound_columns:  # the ParseArrays of last time
            counts = bound.lookup(n, now)
        elif isinstance(columns, np.ndarray):
            counts = self.lookup_block(lb, columns, n, now)
        else:
            counts = self.bind(lb, columns).lookup(n, now)
        if counts[2] == n:  # all hits
            self.hits += n
            lb.count_forwarded(n)
            return self.choice_views[n]
        return self.settle(lb, columns, n, counts, now)

    def settle(self, lb, columns, n: int, counts: tuple, now: float) -> np.ndarray:
        """The Python half of a burst after a C kernel looked it up here (``counts`` = its
        (parsed, valid, hits), its verdicts in ``choice``): ``lb``'s counters in bulk, the drop
        reasons, and the misses (new flows) decided one by one. Returns the choices."""
        parsed, valid, hits = counts
        choice = self.choice_views[n]
        self.hits += hits
        lb.count_forwarded(hits)
        if valid < n:  # drops, counted in bulk
            if parsed > valid:
                lb.count_drop(NOT_FOR_VIP, parsed - valid)
            if parsed < n:
                reasons = np.bincount(_column(columns, "reason")[:n], minlength=len(REASONS))
                for code in np.flatnonzero(reasons[1:]) + 1:
                    lb.count_drop(REASONS[code], int(reasons[code]))
        if hits < valid:  # new flows: one by one, in order
            self.fill_misses(lb, _column(columns, "hash"), choice, now)
        return choice

    def fill_misses(self, lb, hashes, choice, now: float) -> None:
        """The MISS entries of ``choice``: ask ``lb``'s pool, remember the answer."""
        pool = lb.pool
        for i in np.flatnonzero(choice == MISS).tolist():
            h = int(hashes[i])
            ways = self.ways(h)
            held = next((s for s in ways if self.hash[s] == h and self.backend[s] >= 0), None)
            moved = False
            if held is not None:
                b = int(self.backend[held])
                if b < len(self.alive) and self.alive[b]:  # inserted earlier in this burst
                    choice[i] = b
                    self.seen[held] = now
                    self.hits += 1
                    lb.count_forwarded(1)
                    continue
                moved = True  # its backend failed or was removed
                s = held
            else:  # an empty way, else the older entry
                s = min(ways, key=lambda w: (self.backend[w] >= 0, self.seen[w]))
                if self.backend[s] >= 0:
                    self.evictions += 1
            self.misses += 1
            backend = pool.choose_by_hash(h)
            lb.count_new_flow(backend, moved)
            if backend is None:
                self.backend[s] = -1
                choice[i] = -1
                continue
            b = pool.index_of(backend)
            self.hash[s], self.backend[s], self.seen[s] = h, b, now
            choice[i] = b

    def expire(self, now: float) -> int:
        idle = (self.backend >= 0) & (self.seen < now - self.idle_timeout)
        count = int(np.count_nonzero(idle))
        if count:
            self.backend[idle] = -1
            self.expirations += count
        return count

    def recent(self, n: int, now: float) -> list[tuple[int, int, float]]:
        """Up to ``n`` (flow hash, backend number, idle seconds) of the most recently seen
        entries, newest first. Only the hash is known here, not the 5-tuple (see the module
        docstring). For inspection when the stats are written, not the hot path: one pass over
        the table (about 0.1 ms for 64 Ki slots)."""
        held = np.flatnonzero(self.backend >= 0)
        if n <= 0 or not len(held):
            return []
        if len(held) > n:
            held = held[np.argpartition(-self.seen[held], n - 1)[:n]]
        held = held[np.argsort(-self.seen[held], kind="stable")]
        return [(int(self.hash[s]), int(self.backend[s]), now - float(self.seen[s])) for s in held]

    def stats(self) -> dict[str, int]:
        return {
            "size": int(np.count_nonzero(self.backend >= 0)),
            "capacity": self.capacity,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expirations": self.expirations,
        }


class ChoiceViews(dict):
    """``choice[:n]`` by ``n``, each made once: slicing costs ~0.2 us, and a dict subscript that
    finds it is no Python call (``__missing__`` runs only for a burst size not seen yet)."""

    def __init__(self, choice: np.ndarray):
        super().__init__()
        self.choice = choice

    def __missing__(self, n: int) -> np.ndarray:
        view = self[n] = self.choice[:n]
        return view


def _column(columns, name: str) -> np.ndarray:
    """A packet column: a record field or an attribute."""
    return columns[name] if isinstance(columns, np.ndarray) else getattr(columns, name)
