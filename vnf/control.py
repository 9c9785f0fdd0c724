"""The control plane's word on the backend pool: drain, fail, add, remove.

A load balancer's pool changes while traffic flows: a backend is drained for maintenance, fails
its health checks, joins, or is retired. A *control document* (JSON, usually a file an operator
or an orchestrator writes) says which pool is wanted, relative to the configured one::

    {"drain": ["b2"], "fail": ["b3"], "add": [{"name": "b4", "ip": ..., "mac": ..., "port": ...}],
     "remove": ["b1"]}

* ``drain``: the backend keeps its flows but gets no new ones (maintenance: let it empty out);
* ``fail``: unhealthy: no new flows, and its flows move, each to one other backend, at their
  next packet (``LoadBalancer.backend_for`` sees it no longer serves);
* ``add``: a backend joins the pool and gets its share of *new* flows;
* ``remove``: the backend leaves the pool; its flows move as with ``fail``.

Every key is optional and the document is a *state*, not a list of commands: reading the same
document twice gives the same pool, and ``{}`` is the configured pool again (a failed backend
that is no longer listed under ``fail`` has recovered).

The new pool is built aside (``BackendPool.rebuilt``) and published with one assignment, so the
data plane never sees a half-built pool. Whether a flow keeps its backend across the change is
the flow table's work: a balancer that asked the pool for every packet would move flows here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable

from vnf.backends import Backend, BackendPool
from vnf.lb import ConfigError, LBConfig

KEYS = ("drain", "fail", "add", "remove")


class ControlError(ValueError):
    """A control document that cannot be applied. ``str()`` is one line: "field: what"."""


@dataclasses.dataclass(frozen=True)
class PoolChange:
    """What a control document asks for (see the module docstring)."""

    drain: frozenset = frozenset()
    fail: frozenset = frozenset()
    add: tuple[Backend, ...] = ()
    remove: frozenset = frozenset()

    @classmethod
    def from_doc(cls, doc, config: LBConfig) -> PoolChange:
        """Check a parsed control document against the LB's config; raise ControlError."""
        if not isinstance(doc, dict):
            raise ControlError(f"control: expected a JSON object with keys {', '.join(KEYS)}")
        unknown = sorted(set(doc) - set(KEYS))
        if unknown:
            raise ControlError(f"control: unknown key {unknown[0]!r} (expected {', '.join(KEYS)})")
        added = doc.get("add") or []
        if not isinstance(added, list):
            raise ControlError("add: expected a list of backends {name, ip, mac, port}")
        backends = []
        for i, item in enumerate(added):
            try:
                backends.append(item if isinstance(item, Backend) else Backend(**item))
            except TypeError:
                raise ControlError(
                    f"add[{i}]: expected {{name, ip, mac, port}}, got {item!r}"
                ) from None
        configured = [b for b in config.backends]
        try:  # the configured and the added backends together must make a valid config
            dataclasses.replace(config, backends=configured + backends).validate()
        except ConfigError as exc:
            field = exc.field
            if field.startswith("backends["):
                i = int(field[len("backends[") : field.index("]")]) - len(configured)
                field = f"add[{i}]{field[field.index(']') + 1 :]}" if i >= 0 else field
            raise ControlError(f"{field}: {exc.message}") from None
        known = {b.name for b in configured + backends}
        names = {}
        for key in ("drain", "fail", "remove"):
            value = doc.get(key) or []
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise ControlError(f"{key}: expected a list of backend names")
            strangers = sorted(set(value) - known)
            if strangers:
                raise ControlError(f"{key}: no backend named {strangers[0]!r}")
            names[key] = frozenset(value)
        return cls(names["drain"], names["fail"], tuple(backends), names["remove"])

    def to_doc(self) -> dict:
        return {
            "drain": sorted(self.drain),
            "fail": sorted(self.fail),
            "add": [b._asdict() for b in self.add],
            "remove": sorted(self.remove),
        }


def read_control_file(path: str, config: LBConfig) -> PoolChange:
    """The PoolChange a control file asks for; ControlError when unreadable or invalid."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as exc:
        raise ControlError(f"control: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ControlError(f"control: {path} is not valid JSON: {exc}") from None
    return PoolChange.from_doc(doc, config)


def wanted_pool(
    current: BackendPool, config: LBConfig, change: PoolChange, unhealthy: Iterable[str] = ()
) -> BackendPool:
    """The pool ``change`` asks for, built aside from ``current`` (whose backend numbers it
    keeps): the configured backends plus the added ones, minus the removed ones, with
    ``change.fail`` and ``unhealthy`` (a health checker's verdicts) failed and ``change.drain``
    drained. Publish it with one assignment: ``lb.pool = wanted_pool(lb.pool, ...)``."""
    members = [b for b in list(config.backends) + list(change.add) if b.name not in change.remove]
    return current.rebuilt(members, unhealthy=change.fail | set(unhealthy), drained=change.drain)
