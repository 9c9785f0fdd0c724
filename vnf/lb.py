"""The network function: a 5-tuple load balancer, written once for all three ways.

Per packet the NF answers one question: *which backend?* For the first packet of a flow the
backend pool's policy decides and the flow table remembers the answer; every later packet of
the flow gets the remembered backend (connection affinity). The socket, AF_PACKET and DPDK ways
differ only in how packets arrive and leave; they all ask ``LoadBalancer.backend_for`` (or
``handle_frame``, which parses first).

Counters obey ``packets == forwarded + sum(dropped.values())``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vnf.addresses import SERVICE_PORT, SUBNET, VIP
from vnf.backends import POLICIES, Backend, BackendPool, is_prime, mac_to_bytes
from vnf.flowtable import FlowTable
from vnf.packet import IPPROTO_TCP, IPPROTO_UDP, REASONS, Parsed, ip_to_int, parse_frame

try:                                # the C kernel of backends_for_batch (setup.py build_ext)
    from vnf import _fastpath
except ImportError:                 # pragma: no cover - only backends_for_batch needs it
    _fastpath = None

PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

# Drop reasons of the LB itself, next to the parser's (vnf.packet.DropReason).
NOT_FOR_VIP = "not-for-vip"     # parsed fine, but not addressed to VIP:port with a served proto
NO_BACKEND = "no-backend"       # every backend failed or is draining
LB_REASONS = (NOT_FOR_VIP, NO_BACKEND)
MISS = -2                           # backends_for_batch, between the C lookup and the pool


class ConfigError(ValueError):
    """A bad configuration value. ``str()`` is one line: "field: what is wrong"."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass
class LBConfig:
    vip: str = VIP
    port: int = SERVICE_PORT
    protos: Sequence[str] = ("udp", "tcp")
    backends: List[Backend] = field(default_factory=list)
    policy: str = "maglev"
    table_size: int = 65537
    flow_capacity: int = 65536
    idle_timeout: float = 30.0
    subnet: Optional[str] = SUBNET   # where VIP and backends must live; None: anywhere

    @classmethod
    def from_dict(cls, data: dict) -> "LBConfig":
        """Build from plain data (JSON/TOML); backends as dicts with name, ip, mac, port."""
        data = dict(data)
        data["backends"] = [b if isinstance(b, Backend) else Backend(**b)
                            for b in data.get("backends", [])]
        return cls(**data)

    def validate(self) -> "LBConfig":
        """Check every field; raise ConfigError naming the first bad one. Returns self."""
        subnet = None
        if self.subnet is not None:
            try:
                subnet = ipaddress.IPv4Network(self.subnet)
            except ValueError:
                raise ConfigError("subnet", f"{self.subnet!r} is not an IPv4 network") from None
        _check_ip("vip", self.vip, subnet)
        _check_port("port", self.port)
        if not self.protos or any(p not in PROTOCOLS for p in self.protos):
            raise ConfigError("protos", f"need a non-empty subset of {sorted(PROTOCOLS)}, "
                                        f"got {list(self.protos)}")
        if self.policy not in POLICIES:
            raise ConfigError("policy", f"unknown policy {self.policy!r}, "
                                        f"expected one of {', '.join(POLICIES)}")
        if len(self.backends) < 1:
            raise ConfigError("backends", f"need at least 1 backend, got {len(self.backends)}")
        names = set()
        for i, backend in enumerate(self.backends):
            where = f"backends[{i}]"
            if not isinstance(backend, Backend):
                raise ConfigError(where, f"expected a Backend, got {type(backend).__name__}")
            if not backend.name:
                raise ConfigError(f"{where}.name", "must not be empty")
            if backend.name in names:
                raise ConfigError(f"{where}.name", f"duplicate backend name {backend.name!r}")
            names.add(backend.name)
            _check_ip(f"{where}.ip", backend.ip, subnet)
            if backend.ip == self.vip:
                raise ConfigError(f"{where}.ip", f"{backend.ip} is the VIP itself")
            try:
                mac_to_bytes(backend.mac)
            except (ValueError, AttributeError):
                raise ConfigError(f"{where}.mac", f"{backend.mac!r} is not a MAC address "
                                                  f"(aa:bb:cc:dd:ee:ff)") from None
            _check_port(f"{where}.port", backend.port)
        if self.policy == "maglev":
            if not isinstance(self.table_size, int) or not is_prime(self.table_size):
                raise ConfigError("table_size", f"{self.table_size} is not prime "
                                                f"(Maglev needs a prime, e.g. 65537)")
            if self.table_size <= len(self.backends):
                raise ConfigError("table_size", f"{self.table_size} must exceed the number of "
                                                f"backends ({len(self.backends)})")
        if not isinstance(self.flow_capacity, int) or self.flow_capacity < 1:
            raise ConfigError("flow_capacity", f"need at least 1, got {self.flow_capacity}")
        if not isinstance(self.idle_timeout, (int, float)) or self.idle_timeout <= 0:
            raise ConfigError("idle_timeout", f"need a positive number of seconds, "
                                              f"got {self.idle_timeout}")
        return self


def _check_ip(name: str, value, subnet) -> None:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(name, f"{value!r} is not an IPv4 address") from None
    if subnet is not None and address not in subnet:
        raise ConfigError(name, f"{value} is outside subnet {subnet}")


def _check_port(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ConfigError(name, f"{value!r} is not a port number (1-65535)")


class LoadBalancer:
    """The NF: flow table + backend pool + counters. Pure logic; the ways do the I/O."""

    def __init__(self, config: LBConfig):
        self.config = config.validate()
        self.vip = ip_to_int(config.vip)
        self.port = config.port
        self.protos = frozenset(PROTOCOLS[p] for p in config.protos)
        self.flows = FlowTable(config.flow_capacity, config.idle_timeout)
        self.pool = BackendPool(config.backends, config.policy, config.table_size)
        self.packets = 0
        self.forwarded = 0
        self.new_flows = 0
        self.reassigned = 0       # flows moved because their backend failed or was removed
        self.dropped: Dict[str, int] = {reason: 0 for reason in REASONS[1:] + LB_REASONS}
        self.assigned: Dict[str, int] = {b.name: 0 for b in config.backends}  # new flows each
        self.batch_cache: Optional[BatchFlowCache] = None   # made by backends_for_batch()

    def is_for_service(self, flow) -> bool:
        """True if the flow is addressed to the service: VIP, port and a served protocol.
        The one filter every way applies before ``backend_for`` (the others count the packet
        under NOT_FOR_VIP); ``nf_for_vip`` in ``vnf/csrc/nf.h`` is its C twin."""
        return flow.dst_ip == self.vip and flow.dst_port == self.port and flow.proto in self.protos

    def backend_for(self, flow, now: float) -> Optional[Backend]:
        """The backend for this packet's flow; None (counted as no-backend) if none is left.

        A flow-table hit returns the flow's backend as long as that backend still serves
        (a draining backend keeps its flows; a failed or removed one does not). A miss asks
        the pool and remembers the answer.
        """
        self.packets += 1
        backend = self.flows.lookup(flow, now)
        if backend is not None:
            if self.pool.serves(backend):
                self.forwarded += 1
                return backend
            self.reassigned += 1
        backend = self.pool.choose(flow)
        if backend is None:
            self.dropped[NO_BACKEND] += 1
            return None
        self.flows.insert(flow, backend, now)
        self.new_flows += 1
        self.assigned[backend.name] = self.assigned.get(backend.name, 0) + 1
        self.forwarded += 1
        return backend

    def backends_for_batch(self, columns, n: int, now: float) -> np.ndarray:
        """The vectorised ``backend_for``: one decision per packet of a burst, in one C call.

        ``columns`` holds the burst's parsed packets as 1-D arrays ``hash`` (uint32,
        ``vnf.hashing.flow_hash`` as the C parsers compute it), ``reason`` (uint8, index into
        ``vnf.packet.REASONS``, 0 = parsed), ``dst_ip`` (uint32), ``dst_port`` (uint16) and
        ``proto`` (uint8): either as attributes that stay the same arrays from call to call
        (``vnf.dpdk.ParseArrays``; pinned once, see below) or as fields of a numpy record array
        (the AF_PACKET ring's ``batch.packets``; any stride, no copy). ``n``: packets 0..n-1.
        Returns an int32 array of n: the backend's ``pool.index_of`` number per packet, -1 to
        drop. Valid until the next call (it is reused).

        Per packet, as ``handle_frame`` then ``backend_for``: an unparsed packet is dropped and
        counted under its reason; a parsed one not for VIP:port with a served protocol is
        counted as not-for-vip; the others are balanced (no backend left: counted as
        no-backend, -1). Counters (packets, forwarded, dropped, new_flows, reassigned,
        assigned) are updated in bulk.

        How: ``vnf._fastpath.cache_lookup`` (C, ``nf_for_vip`` + ``nf_cache_lookup`` in
        ``vnf/csrc/nf.h``) does the VIP check and the flow-state lookup for the whole burst
        and marks misses; the misses (new flows) are then filled one at a time in Python from
        the pool's choice *for that hash* (Maglev table slot ``hash % M``, or ``hash % N``;
        round-robin takes the next backend per miss). In steady state almost every packet hits,
        so the burst costs one C call: no Python, and no numpy call, per packet. The arrays
        the call needs (the flow cache's, the columns of a ``ParseArrays``) are pinned once
        (``_fastpath.pin``): asking numpy for ten buffers would cost ~1 us per burst.

        The flow state is a :class:`BatchFlowCache`, not the ``FlowTable``: a direct-mapped table
        keyed by the 32-bit flow hash (slot ``BatchFlowCache.slot(hash)``; a hit when the slot holds that
        hash and a backend that still serves). Where it differs from FlowTable, honestly:

        * the key is the hash, not the 5-tuple: two flows with the same 32-bit hash share an entry
          (about one pair in 4 billion);
        * a flow may sit in two slots (its own and the neighbour: two-way set associative). A
          new flow whose two slots are taken evicts the older entry (LRU within the pair, not
          across the table). With Maglev or hash the evicted flow, on its next packet, is given
          the same backend again unless the pool changed meanwhile; with round-robin it may
          move. Three live flows in one pair evict each other on every packet, and every such
          packet takes the Python miss path (~3-5 us). Direct mapping (one slot) had two-flow
          collisions at the birthday rate, ~F^2/2S pairs for F flows in S slots (measured
          2026-11-29 with ``vnflab bench --way dpdk``'s 1024 flows in 65536 slots: 1-6 % of the
          packets missed). Size the table (a power of two >= ``flow_capacity``) well above the
          live flows;
        * idle entries are dropped by :meth:`expire` (called about once a second by the ways),
          not at lookup: a flow idle a little longer than ``idle_timeout`` may still hit.

        For a stable pool and distinct slots it returns, flow by flow, exactly what
        ``backend_for`` returns (tests/test_dpdk_way.py checks this; tests/test_batch_decision.py
        checks the C kernel against a plain Python reference).
        """
        cache = self.prepared_batch_cache()
        packet_args = cache.columns_args(columns, n)      # pinned: the same objects each burst
        counts = _fastpath.cache_lookup(                            # C: the whole burst
            n, now, packet_args, (self.vip, self.port, cache.proto_mask), cache.pins,
            cache.choice_pin)
        return self.settle_batch(columns, n, counts, now)

    def prepared_batch_cache(self) -> "BatchFlowCache":
        """The :class:`BatchFlowCache` of ``backends_for_batch``: made on first use, and told
        which backends may keep their flows whenever the pool changed."""
        cache = self.batch_cache
        if cache is None:
            if _fastpath is None:
                raise RuntimeError("vnf._fastpath is not built: "
                                   "python setup.py build_ext --inplace")
            cache = self.batch_cache = BatchFlowCache(self.config.flow_capacity,
                                                      self.config.idle_timeout)
            cache.proto_mask = sum(1 << p for p in self.protos)
        pool = self.pool
        if cache.alive_ref is not pool.alive_names or cache.table_ref is not pool.table:
            cache.sync(pool)
        return cache

    def settle_batch(self, columns, n: int, counts: tuple, now: float) -> np.ndarray:
        """The Python half of a burst after a C kernel looked it up in the cache (``counts`` =
        its (parsed, valid, hits), its verdicts in ``batch_cache.choice``): the counters in bulk,
        the drop reasons, and the misses (new flows) decided one by one. Returns the choices
        (see ``backends_for_batch``). A fused kernel (``vnf.dpdk.FusedForward``) calls this
        directly."""
        parsed, valid, hits = counts
        cache = self.batch_cache
        choice = cache.choice_view(n)
        cache.hits += hits
        self.packets += valid
        self.forwarded += hits
        if valid < n:                                     # drops, counted in bulk
            if parsed > valid:
                self.count_drop(NOT_FOR_VIP, parsed - valid)
            if parsed < n:
                reasons = np.bincount(_column(columns, "reason")[:n], minlength=len(REASONS))
                for code in np.flatnonzero(reasons[1:]) + 1:
                    self.count_drop(REASONS[code], int(reasons[code]))
        if hits < valid:                                  # new flows: one by one, in order
            self._fill_misses(cache, _column(columns, "hash"), choice, now)
        return choice

    def _fill_misses(self, cache: "BatchFlowCache", hashes, choice, now) -> None:
        """The -2 (miss) entries of ``choice``: ask the pool, remember the answer."""
        pool = self.pool
        for i in np.flatnonzero(choice == MISS).tolist():
            h = int(hashes[i])
            ways = cache.ways(h)
            held = next((s for s in ways if cache.hash[s] == h and cache.backend[s] >= 0), None)
            if held is not None:
                b = int(cache.backend[held])
                if b < len(cache.alive) and cache.alive[b]:   # inserted earlier in this burst
                    choice[i] = b
                    cache.seen[held] = now
                    cache.hits += 1
                    self.forwarded += 1
                    continue
                self.reassigned += 1                      # its backend failed or was removed
                s = held
            else:                                         # an empty way, else the older entry
                s = min(ways, key=lambda w: (cache.backend[w] >= 0, cache.seen[w]))
                if cache.backend[s] >= 0:
                    cache.evictions += 1
            cache.misses += 1
            backend = pool.choose_by_hash(h)
            if backend is None:
                self.dropped[NO_BACKEND] += 1
                cache.backend[s] = -1
                choice[i] = -1
                continue
            b = pool.index_of(backend)
            cache.hash[s], cache.backend[s], cache.seen[s] = h, b, now
            choice[i] = b
            self.new_flows += 1
            self.forwarded += 1
            self.assigned[backend.name] = self.assigned.get(backend.name, 0) + 1

    def handle_frame(self, frame, now: float) -> Tuple[Optional[Backend], Parsed]:
        """Parse an Ethernet frame and pick its backend; (None, parsed) when it is dropped.

        The Parsed is returned too, so the caller can rewrite the frame without parsing again.
        """
        parsed = parse_frame(frame)
        flow = parsed.flow
        if flow is None:
            self.count_drop(parsed.reason)
            return None, parsed
        if not self.is_for_service(flow):
            self.count_drop(NOT_FOR_VIP)
            return None, parsed
        return self.backend_for(flow, now), parsed

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` packets dropped for ``reason`` by a way that parsed them itself (in C)."""
        self.packets += n
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def expire(self, now: float) -> int:
        """Forget idle flows (lookups also expire lazily; call this now and then to free memory)."""
        dropped = self.flows.expire(now)
        if self.batch_cache is not None:
            dropped += self.batch_cache.expire(now)
        return dropped

    def stats(self) -> dict:
        return {
            "packets": self.packets,
            "forwarded": self.forwarded,
            "new_flows": self.new_flows,
            "reassigned": self.reassigned,
            "dropped": dict(self.dropped),
            "assigned": dict(self.assigned),
            "flow_table": self.flows.stats(),
            "policy": self.pool.policy,
            "backends": {b.name: ("unhealthy" if b.name in self.pool.unhealthy else
                                  "draining" if b.name in self.pool.drained else "up")
                         for b in self.pool.backends},
        }


class BatchFlowCache:
    """The flow state of ``LoadBalancer.backends_for_batch``: numpy arrays indexed by
    ``slot(hash)`` (direct mapped): the flow hash held in each slot, its backend number (-1:
    empty) and when it was last seen, plus ``alive`` per backend number. The C kernel
    (``vnf._fastpath.cache_lookup``) reads and refreshes these arrays in place; Python fills
    the misses. See ``backends_for_batch`` for the semantics."""

    COLUMNS = ("hash", "reason", "dst_ip", "dst_port", "proto")

    def __init__(self, flow_capacity: int, idle_timeout: float):
        capacity = 1 << max(0, int(flow_capacity) - 1).bit_length()    # power of two >= it
        self.capacity = capacity
        self.mask = np.uint32(capacity - 1)
        self.bits = capacity.bit_length() - 1
        self.idle_timeout = idle_timeout
        self.hash = np.zeros(capacity, np.uint32)
        self.backend = np.full(capacity, -1, np.int32)
        self.seen = np.zeros(capacity, np.float64)
        self.alive = np.zeros(0, bool)            # by pool.index_of: may carry its flows
        self.alive_ref = self.table_ref = None
        self.hits = self.misses = self.evictions = self.expirations = 0
        self.proto_mask = 0                       # bit p: IP protocol p is served (set by the LB)
        # The kernel's arguments, pinned once (these arrays are never reallocated): see pin().
        self._table_pins = tuple(_fastpath.pin(a) for a in (self.hash, self.backend, self.seen))
        self.pins = self._table_pins + (_fastpath.pin(self.alive),)
        self.choice = np.zeros(0, np.int32)       # the kernel's output, grown to the largest burst
        self.choice_pin = _fastpath.pin(self.choice)
        self._choice_views: dict = {}
        self._columns = self._columns_args = None
        self.version = 0                          # +1 whenever alive or choice is replaced


    def slot(self, flow_hash: int) -> int:
        """Where a flow lives: Fibonacci hashing (the top bits of hash * 2^32/phi), because
        CRC-32 is linear and flows differing in a few bits (stepped source ports) would share
        few low-bit patterns. The C kernel computes the same (nf_cache_slot in nf.h)."""
        return ((flow_hash * 2654435769) & 0xFFFFFFFF) >> (32 - self.bits) if self.bits else 0

    def ways(self, flow_hash: int) -> tuple:
        """The two slots a flow may occupy (two-way set associative, as nf_cache_lookup)."""
        first = self.slot(flow_hash)
        return (first, first ^ 1) if self.bits else (first,)

    def columns_args(self, columns, n: int) -> tuple:
        """The packet columns as the kernel takes them. A column holder that is not an array
        (ParseArrays) keeps its arrays: pinned on first sight, reused while it is the same
        object. A record array (a ring block's packets) is new per block: its fields are
        passed as they are (strided views, no copy)."""
        if columns is self._columns:
            return self._columns_args
        if isinstance(columns, np.ndarray):
            args = tuple(columns[name] for name in self.COLUMNS)
            self.grow_choice(n)
            return args
        args = tuple(_fastpath.pin(getattr(columns, name)) for name in self.COLUMNS)
        self.grow_choice(len(getattr(columns, "hash")))
        self._columns, self._columns_args = columns, args
        return args

    def grow_choice(self, n: int) -> None:
        """Room for ``n`` verdicts in ``choice`` (a new array bumps ``version``)."""
        if len(self.choice) < n:
            self.choice = np.zeros(max(n, 2 * len(self.choice)), np.int32)
            self.choice_pin = _fastpath.pin(self.choice)
            self._choice_views = {}
            self.version += 1

    def choice_view(self, n: int) -> np.ndarray:
        """``choice[:n]``, made once per burst size (slicing costs ~0.2 us)."""
        view = self._choice_views.get(n)
        if view is None:
            view = self._choice_views[n] = self.choice[:n]
        return view

    def sync(self, pool: BackendPool) -> None:
        """The pool changed (or first use): which backend numbers may keep their flows."""
        alive = np.zeros(pool.index_count + 1, bool)
        for b in pool.backends:
            if pool.serves(b):
                alive[pool.index_of(b)] = True
        self.alive = alive
        self.pins = self._table_pins + (_fastpath.pin(alive),)
        self.version += 1
        self.alive_ref, self.table_ref = pool.alive_names, pool.table

    def expire(self, now: float) -> int:
        idle = (self.backend >= 0) & (self.seen < now - self.idle_timeout)
        count = int(np.count_nonzero(idle))
        if count:
            self.backend[idle] = -1
            self.expirations += count
        return count

    def stats(self) -> Dict[str, int]:
        return {"size": int(np.count_nonzero(self.backend >= 0)), "capacity": self.capacity,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "expirations": self.expirations}


def _column(columns, name: str) -> np.ndarray:
    """A packet column of ``backends_for_batch``'s ``columns``: a record field or an attribute."""
    return columns[name] if isinstance(columns, np.ndarray) else getattr(columns, name)
