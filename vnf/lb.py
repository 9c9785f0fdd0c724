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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vnf.addresses import SERVICE_PORT, SUBNET, VIP
from vnf.backends import POLICIES, Backend, BackendPool, is_prime, mac_to_bytes
from vnf.flowtable import FlowTable
from vnf.packet import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    LB_REASONS,
    NO_BACKEND,
    NOT_FOR_VIP,
    REASONS,
    Parsed,
    ip_to_int,
    parse_frame,
)

if TYPE_CHECKING:  # numpy and C: imported by prepared_batch_cache when used
    from vnf.batch import BatchFlowCache

PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

__all__ = [
    "LBConfig",
    "LoadBalancer",
    "ConfigError",
    "PROTOCOLS",
    "NOT_FOR_VIP",
    "NO_BACKEND",
    "LB_REASONS",
]


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
    backends: list[Backend] = field(default_factory=list)
    policy: str = "maglev"
    table_size: int = 65537
    flow_capacity: int = 65536
    idle_timeout: float = 30.0
    subnet: str | None = SUBNET  # where VIP and backends must live; None: anywhere

    @classmethod
    def from_dict(cls, data: dict) -> LBConfig:
        """Build from plain data (JSON/TOML); backends as dicts with name, ip, mac, port."""
        data = dict(data)
        data["backends"] = [
            b if isinstance(b, Backend) else Backend(**b) for b in data.get("backends", [])
        ]
        return cls(**data)

    def validate(self) -> LBConfig:
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
            raise ConfigError(
                "protos", f"need a non-empty subset of {sorted(PROTOCOLS)}, got {list(self.protos)}"
            )
        if self.policy not in POLICIES:
            raise ConfigError(
                "policy", f"unknown policy {self.policy!r}, expected one of {', '.join(POLICIES)}"
            )
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
                raise ConfigError(
                    f"{where}.mac", f"{backend.mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)"
                ) from None
            _check_port(f"{where}.port", backend.port)
        if self.policy == "maglev":
            if not isinstance(self.table_size, int) or not is_prime(self.table_size):
                raise ConfigError(
                    "table_size",
                    f"{self.table_size} is not prime (Maglev needs a prime, e.g. 65537)",
                )
            if self.table_size <= len(self.backends):
                raise ConfigError(
                    "table_size",
                    f"{self.table_size} must exceed the number of backends ({len(self.backends)})",
                )
        if not isinstance(self.flow_capacity, int) or self.flow_capacity < 1:
            raise ConfigError("flow_capacity", f"need at least 1, got {self.flow_capacity}")
        if not isinstance(self.idle_timeout, (int, float)) or self.idle_timeout <= 0:
            raise ConfigError(
                "idle_timeout", f"need a positive number of seconds, got {self.idle_timeout}"
            )
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
        self.reassigned = 0  # flows moved because their backend failed or was removed
        self.dropped: dict[str, int] = {reason: 0 for reason in REASONS[1:] + LB_REASONS}
        self.assigned: dict[str, int] = {b.name: 0 for b in config.backends}  # new flows each
        self.batch_cache: BatchFlowCache | None = None  # made by backends_for_batch

    def is_for_service(self, flow) -> bool:
        """True if the flow is addressed to the service: VIP, port and a served protocol.
        The one filter every way applies before ``backend_for`` (the others count the packet
        under NOT_FOR_VIP); ``nf_for_vip`` in ``vnf/csrc/nf.h`` is its C twin. By position
        (dst_ip, dst_port, proto): a FiveTuple and a C parser's plain tuple (``Burst.flow``)."""
        return flow[1] == self.vip and flow[3] == self.port and flow[4] in self.protos

    def backend_for(self, flow, now: float) -> Backend | None:
        """The backend for this packet's flow; None (counted as no-backend) if none is left.

        A flow-table hit returns the flow's backend as long as that backend still serves
        (a draining backend keeps its flows; a failed or removed one does not). A miss asks
        the pool and remembers the answer.
        """
        backend = self.flows.lookup(flow, now)
        # the common case, inline (pool.serves without the call: per packet, a call is a cost)
        if backend is not None and backend.name in self.pool.alive_names:
            self.packets += 1
            self.forwarded += 1
            return backend
        moved = backend is not None  # its backend failed or was removed
        backend = self.pool.choose(flow)
        self.count_new_flow(backend, moved)
        if backend is not None:
            self.flows.insert(flow, backend, now)
        return backend

    def backends_for_batch(self, columns, n: int, now: float):
        """The vectorised ``backend_for``: one decision per packet of a burst, in one C call.

        ``columns``: the burst's parsed packets as numpy columns (``hash``, ``reason``,
        ``dst_ip``, ``dst_port``, ``proto``); ``n``: packets 0..n-1. Returns an int32 array of
        n: the backend's ``pool.index_of`` number per packet, -1 to drop; counts as
        ``handle_frame`` would. The flow state is a hash-keyed cache, not the flow table, and
        the machinery (numpy, the C kernel) lives in ``vnf.batch``, which says how it differs.
        """
        cache = self.batch_cache
        if cache is None or not cache.follows(self.pool):  # first use, or the pool changed
            cache = self.prepared_batch_cache()
        return cache.decide(self, columns, n, now)

    def settle_batch(self, columns, n: int, counts: tuple, now: float):
        """The Python half of a burst a C kernel looked up in ``batch_cache`` itself (the fused
        DPDK kernel, ``vnf.dpdk.FusedForward``): see ``vnf.batch.BatchFlowCache.settle``."""
        assert self.batch_cache is not None, "the kernel looked up in prepared_batch_cache()"
        return self.batch_cache.settle(self, columns, n, counts, now)

    def prepared_batch_cache(self) -> BatchFlowCache:
        """The ``vnf.batch.BatchFlowCache`` of ``backends_for_batch``: made on first use, and
        told which backends may keep their flows whenever the pool changed."""
        cache = self.batch_cache
        if cache is None:
            from vnf.batch import BatchFlowCache  # numpy and C: only batch paths need them

            cache = self.batch_cache = BatchFlowCache(
                self.config.flow_capacity, self.config.idle_timeout, self.protos
            )
        if not cache.follows(self.pool):
            cache.sync(self.pool)
        return cache

    def count_forwarded(self, n: int = 1) -> None:
        """Count ``n`` packets of known flows forwarded by a batch path (its cache hits)."""
        self.packets += n
        self.forwarded += n

    def count_new_flow(self, backend: Backend | None, moved: bool = False) -> None:
        """Count a packet that starts a flow (or moves one whose backend failed: ``moved``)
        with the pool's ``backend`` for it (None: no backend left, dropped as no-backend)."""
        self.packets += 1
        if moved:
            self.reassigned += 1
        if backend is None:
            self.dropped[NO_BACKEND] += 1
            return
        self.new_flows += 1
        self.assigned[backend.name] = self.assigned.get(backend.name, 0) + 1
        self.forwarded += 1

    def handle_frame(self, frame, now: float) -> tuple[Backend | None, Parsed]:
        """Parse an Ethernet frame and pick its backend; (None, parsed) when it is dropped.

        The Parsed is returned too, so the caller can rewrite the frame without parsing again.
        """
        parsed = parse_frame(frame)
        flow = parsed.flow
        if flow is None:
            assert parsed.reason is not None  # a dropped frame always says why
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
            "backends": {
                b.name: (
                    "unhealthy"
                    if b.name in self.pool.unhealthy
                    else "draining"
                    if b.name in self.pool.drained
                    else "up"
                )
                for b in self.pool.backends
            },
        }
