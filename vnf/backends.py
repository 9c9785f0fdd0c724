"""Backends and the policies that pick one for a new flow.

Three policies, in the order the lecture builds them up:

* ``hash``: ``flow_hash(flow) % N``. Stateless and the same on every LB instance, but when N
  changes almost every flow moves: a flow stays only if its hash gives the same remainder mod N
  and mod N-1, so about (N-1)/N of the flows move.
* ``roundrobin``: the next backend on each new flow (each flow-table miss). Perfect balance in
  flow count, but the choice lives only in this LB's flow table: another LB instance, or this one
  after a restart, picks differently.
* ``maglev``: Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
  Network Load Balancer", NSDI 2016, section 3.4). A lookup table of M slots (M prime, M >> N)
  is filled so each backend owns about M/N slots, and a flow goes to ``table[flow_hash % M]``.
  Removing one backend reassigns its slots and moves few others, so about 1/N of the flows move.

Drained and unhealthy backends get no new flows; every change rebuilds the choice. Whether a
flow that already has a backend keeps it is the load balancer's business (``vnf/lb.py``):
drained backends keep their flows, failed or removed ones lose them.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import NamedTuple

from vnf.hashing import flow_hash
from vnf.packet import ip_to_int

POLICIES = ("hash", "roundrobin", "maglev")
DEFAULT_MAGLEV_TABLE_SIZE = 65537  # prime; the paper uses 65537 for small backend sets


@cache
def mac_to_bytes(mac: str) -> bytes:
    """ "aa:bb:cc:dd:ee:ff" -> 6 bytes (cached: backends are few, packets many)."""
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


_cached_ip_to_int = lru_cache(maxsize=None)(ip_to_int)
_MAC_BYTES: dict = {}  # MAC string -> 6 bytes, for Backend.mac_bytes


class Backend(NamedTuple):
    """One server behind the VIP."""

    name: str
    ip: str
    mac: str
    port: int

    @property
    def mac_bytes(self) -> bytes:
        """The MAC as 6 bytes, ready for an in-place Ethernet rewrite. Read once per forwarded
        packet, so it is a plain dict hit (an lru_cache call costs three times as much)."""
        raw = _MAC_BYTES.get(self.mac)
        if raw is None:
            raw = _MAC_BYTES[self.mac] = mac_to_bytes(self.mac)
        return raw

    @property
    def ip_int(self) -> int:
        """The IP as a host-order int, as in FiveTuple and the NAT rewrites."""
        return _cached_ip_to_int(self.ip)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    divisor = 3
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 2
    return True


def _name_hash(name: str, purpose: bytes) -> int:
    """A 64-bit hash of a backend name; ``purpose`` makes independent hash functions."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=purpose).digest()
    return int.from_bytes(digest, "big")


def maglev_table(names: list[str], size: int) -> list[int]:
    """Maglev lookup table: slot -> index into names (Eisenbud et al. 2016, Pseudocode 1).

    Each backend walks its own permutation of the slots, ``(offset + j * skip) % size``, with
    offset and skip from two different hashes of its name. Since size is prime and
    1 <= skip < size, the walk visits every slot exactly once. The backends take turns: each
    claims the next slot on its walk that nobody has claimed yet, until all slots are taken.
    Turns make the shares equal (within one slot); permutations tied to the *name* (not to the
    position in the list) make the table change little when a backend comes or goes.
    """
    if not names:
        return []
    offsets = [_name_hash(name, b"maglev-offset") % size for name in names]
    skips = [_name_hash(name, b"maglev-skip") % (size - 1) + 1 for name in names]
    next_step = [0] * len(names)  # how far along its permutation each backend is
    table = [-1] * size
    filled = 0
    while True:
        for i in range(len(names)):
            slot = (offsets[i] + next_step[i] * skips[i]) % size
            while table[slot] >= 0:  # taken: try the backend's next preference
                next_step[i] += 1
                slot = (offsets[i] + next_step[i] * skips[i]) % size
            table[slot] = i
            next_step[i] += 1
            filled += 1
            if filled == size:
                return table


class BackendPool:
    """The backend set and the policy that picks a backend for a new flow."""

    def __init__(
        self,
        backends: Iterable[Backend],
        policy: str = "maglev",
        table_size: int = DEFAULT_MAGLEV_TABLE_SIZE,
    ):
        if policy not in POLICIES:
            raise ValueError(f"policy: unknown policy {policy!r}, expected one of {POLICIES}")
        self.policy = policy
        self.table_size = table_size
        self.backends: list[Backend] = []
        self._index: dict = {}  # name -> stable number, never reused (see index_of)
        self._numbered: dict = {}  # number -> the backend last known by it (by_number)
        self.unhealthy: set = set()
        self.drained: set = set()
        for backend in backends:
            self._check_new(backend)
            self.backends.append(backend)
        self._check_table_size()
        self._next_rr = 0
        self._rebuild()

    # -- changes -------------------------------------------------------------------------

    def add(self, backend: Backend) -> None:
        self._check_new(backend)
        self.backends.append(backend)
        self._check_table_size()
        self._rebuild()

    def remove(self, name: str) -> Backend:
        backend = self.get(name)
        self.backends.remove(backend)
        self.unhealthy.discard(name)
        self.drained.discard(name)
        self._rebuild()
        return backend

    def set_health(self, name: str, healthy: bool) -> None:
        """A failed backend gets no new flows and, in the LB, loses its existing ones."""
        self.get(name)
        if healthy:
            self.unhealthy.discard(name)
        else:
            self.unhealthy.add(name)
        self._rebuild()

    def drain(self, name: str, draining: bool = True) -> None:
        """A draining backend gets no new flows but keeps its existing ones (for maintenance)."""
        self.get(name)
        if draining:
            self.drained.add(name)
        else:
            self.drained.discard(name)
        self._rebuild()

    def rebuilt(
        self,
        backends: Iterable[Backend],
        unhealthy: Iterable[str] = (),
        drained: Iterable[str] = (),
    ) -> BackendPool:
        """A new pool with these backends and states; this pool is left as it is.

        For a control plane: the new pool is built aside (a Maglev table takes ~0.1 s to fill)
        and the caller publishes it with one assignment (``lb.pool = new``), so the data plane
        sees the old pool or the new one, never half of each. Backend numbers (``index_of``)
        carry over and a backend new to this pool gets the next unused one, so the numbers the
        data plane holds (flow state, MAC tables) keep meaning the same backend."""
        pool = copy.copy(self)  # policy, table size, round-robin position
        pool._index, pool._numbered = dict(self._index), dict(self._numbered)
        pool.backends = []
        for backend in backends:
            pool._check_new(backend)
            pool.backends.append(backend)
        names = {b.name for b in pool.backends}
        pool.unhealthy = set(unhealthy) & names
        pool.drained = set(drained) & names
        pool._check_table_size()
        pool._rebuild()
        return pool

    # -- queries -------------------------------------------------------------------------

    def get(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(f"no backend named {name!r}")

    def choose(self, flow) -> Backend | None:
        """Backend for a new flow, or None if no backend is eligible (all failed or drained)."""
        return self.choose_by_hash(flow_hash(flow))

    def choose_by_hash(self, h: int) -> Backend | None:
        """``choose`` given the flow's hash (``vnf.hashing.flow_hash``) instead of the flow:
        the batch paths have the hash from the C parser, not the 5-tuple."""
        active = self.active
        if not active:
            return None
        if self.policy == "maglev":
            return self.table[h % self.table_size]
        if self.policy == "hash":
            return active[h % len(active)]
        backend = active[self._next_rr % len(active)]
        self._next_rr += 1
        return backend

    def serves(self, backend: Backend) -> bool:
        """True if backend may still carry its existing flows (present and healthy)."""
        return backend.name in self.alive_names

    # -- internals -----------------------------------------------------------------------

    def index_of(self, backend: Backend) -> int:
        """A small stable number for a backend: its position in the configured list (backends
        added later get the next numbers). The C layers index per-backend arrays (MACs, NAT
        addresses) with it; it does not change when other backends are removed."""
        return self._index[backend.name]

    @property
    def index_count(self) -> int:
        """How many numbers ``index_of`` has given out (removed backends keep theirs): every
        number is below this, so it sizes the per-backend arrays of the C layers."""
        return len(self._index)

    def by_number(self) -> list[Backend]:
        """Every backend this pool has numbered, at its number (``index_of``): the layout of a
        data plane's per-backend tables (MACs, NAT addresses). A removed backend keeps its
        place, since its number is never reused; the pool just never picks it again."""
        return [self._numbered[i] for i in range(len(self._index))]

    def _check_new(self, backend: Backend) -> None:
        if any(b.name == backend.name for b in self.backends):
            raise ValueError(f"backends: duplicate backend name {backend.name!r}")
        self._index.setdefault(backend.name, len(self._index))
        self._numbered[self._index[backend.name]] = backend

    def _check_table_size(self) -> None:
        if self.policy != "maglev":
            return
        size, count = self.table_size, len(self.backends)
        if not is_prime(size):
            raise ValueError(
                f"table_size: {size} is not prime (Maglev needs a prime table size, e.g. 65537)"
            )
        if size <= count:
            raise ValueError(
                f"table_size: {size} must be larger than the number of "
                f"backends ({count}); Maglev wants it 100x larger"
            )

    def _rebuild(self) -> None:
        """Recompute everything choose() and serves() read, so they stay cheap."""
        self.alive_names = frozenset(b.name for b in self.backends if b.name not in self.unhealthy)
        self.active: list[Backend] = [
            b for b in self.backends if b.name in self.alive_names and b.name not in self.drained
        ]
        self.table: list[Backend] = []
        if self.policy == "maglev" and self.active:
            # The turns break ties, so their order shapes the table: sort by name so that every
            # LB instance with the same backends builds the same table, whatever the config order.
            in_turn_order = sorted(self.active, key=lambda b: b.name)
            slots = maglev_table([b.name for b in in_turn_order], self.table_size)
            self.table = [in_turn_order[i] for i in slots]

    def shares(self) -> dict:
        """Fraction of Maglev table slots each active backend owns (for tests and stats)."""
        counts = {b.name: 0 for b in self.active}
        for backend in self.table:
            counts[backend.name] += 1
        return {name: count / self.table_size for name, count in counts.items()}
