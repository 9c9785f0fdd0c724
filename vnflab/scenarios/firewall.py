"""A second network function for the service chain: a 5-tuple firewall.

Rules are checked in order and the first match decides; a packet no rule matches gets the
default action. A rule is plain data (JSON), each field optional (absent = any)::

    {"action": "deny",  "src": "10.0.0.12/32"}
    {"action": "allow", "dst": "10.0.0.100/32", "dport": "8080", "proto": "udp"}
    {"action": "allow", "dst": "10.0.0.100/32", "dport": "8000-8100", "proto": "tcp"}

Like a stateful firewall (or the LB's flow table), the verdict is computed on a flow's first
packet and remembered: later packets of the flow cost one dict lookup, not a rule walk. The
firewall knows nothing of I/O; ``vnflab.scenarios.chain`` puts it in front of the LB.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import NamedTuple

from vnf.packet import IPPROTO_TCP, IPPROTO_UDP

PROTOS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
ANY_PORT = (0, 65535)


def _net(text: str | None) -> tuple[int, int]:
    """(network, mask) as ints; (0, 0) matches every address."""
    if text is None:
        return 0, 0
    net = ipaddress.IPv4Network(text, strict=False)
    return int(net.network_address), int(net.netmask)


def _ports(text) -> tuple[int, int]:
    if text is None:
        return ANY_PORT
    low_text, _, high_text = str(text).partition("-")
    low, high = int(low_text), int(high_text or low_text)
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"bad port range {text!r}")
    return low, high


class Rule(NamedTuple):
    allow: bool
    src: tuple[int, int]
    dst: tuple[int, int]
    sport: tuple[int, int]
    dport: tuple[int, int]
    proto: int | None

    @classmethod
    def parse(cls, spec: dict) -> Rule:
        unknown = set(spec) - {"action", "src", "dst", "sport", "dport", "proto"}
        if unknown:
            raise ValueError(f"rule {spec}: unknown field(s) {sorted(unknown)}")
        if spec.get("action") not in ("allow", "deny"):
            raise ValueError(f"rule {spec}: action must be allow or deny")
        proto = spec.get("proto")
        if proto is not None and proto not in PROTOS:
            raise ValueError(f"rule {spec}: proto must be one of {sorted(PROTOS)}")
        return cls(
            spec["action"] == "allow",
            _net(spec.get("src")),
            _net(spec.get("dst")),
            _ports(spec.get("sport")),
            _ports(spec.get("dport")),
            PROTOS[proto] if proto else None,
        )

    def matches(self, flow) -> bool:
        return (
            (flow.src_ip & self.src[1]) == self.src[0]
            and (flow.dst_ip & self.dst[1]) == self.dst[0]
            and self.sport[0] <= flow.src_port <= self.sport[1]
            and self.dport[0] <= flow.dst_port <= self.dport[1]
            and (self.proto is None or self.proto == flow.proto)
        )


class Firewall:
    """First-match rules over the 5-tuple, with a per-flow verdict cache."""

    def __init__(self, rules: Sequence[dict], default: str = "deny", capacity: int = 65536):
        if default not in ("allow", "deny"):
            raise ValueError("default must be allow or deny")
        self.rules = [Rule.parse(r) for r in rules]
        self.default = default == "allow"
        self.capacity = capacity
        self.verdicts: dict = {}
        self.allowed = self.denied = self.evaluated = 0

    def decide(self, flow) -> bool:
        """The rule walk, for a flow's first packet."""
        self.evaluated += 1
        for rule in self.rules:
            if rule.matches(flow):
                return rule.allow
        return self.default

    def filter(self, flows: list) -> list:
        """One batch: each FiveTuple stays if allowed and becomes None if denied."""
        verdicts = self.verdicts
        out = []
        for flow in flows:
            if flow is not None:
                ok = verdicts.get(flow)
                if ok is None:
                    if len(verdicts) >= self.capacity:
                        verdicts.clear()  # crude, bounded; a flow just re-evaluates
                    ok = verdicts[flow] = self.decide(flow)
                if ok:
                    self.allowed += 1
                else:
                    self.denied += 1
                    flow = None
            out.append(flow)
        return out

    def stats(self) -> dict:
        return {
            "allowed": self.allowed,
            "denied": self.denied,
            "flows_evaluated": self.evaluated,
            "rules": len(self.rules),
        }
