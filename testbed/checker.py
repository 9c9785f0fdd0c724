"""Affinity checker: did every flow stay on one backend, what was lost, how even was the spread.

Inputs are the JSON files the backends write (``topologies.servers``) and the clients write
(``testbed.traffic``). Flows are keyed by ``(proto, flow_id)``; the flow id comes from the
payload or the ``X-Flow-Id`` header, so the check holds whatever addresses the LB rewrites.

A flow is *split* when more than one backend saw it (backend records) or answered it (client
records); the two views are merged so a flow split on either evidence is reported.

Balance: the headline number is **max/mean of flows per backend** (1.0 = perfect, 2.0 = the
busiest backend carries twice its fair share). It is what capacity planning cares about: the
busiest backend saturates first, whatever the others do. The coefficient of variation
(population std / mean) is reported too, as a summary of the whole spread. Backends that got
no flow count (as zero), so a dead or never-chosen backend shows up as imbalance.

Plain HTTP requests (no flow id: a student's curl, wrk) are *anonymous* flows, recorded by the
backends per connection 5-tuple. They are counted (per backend and in total) but take no part
in split, loss or balance: without a flow id nothing says which client connection they were, and
a proxy LB shows each backend its own 5-tuple.

CLI::

    python -m testbed.checker --backends out/b*.json --clients out/c*.json [--json report.json]

exits 1 when any flow is split (2 when an input cannot be read).

Pool changes (``judge_pool_change``): with the backend set changing under live flows, per flow
and from the backends' per-flow first/last packet times, did each flow keep (or move once to)
the backend the change allows? See its docstring for the rules.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import statistics
import sys

DETAIL_LIMIT = 20  # how many offending flows / errors are listed


@dataclasses.dataclass
class Report:
    """Result of one check; ``table()`` for people, ``to_json()`` for the grader."""

    backends: list[str]
    flows_seen: int  # distinct (proto, flow id) at the backends
    udp_flows: int  # UDP flows the clients drove
    http_conns: int  # HTTP connections the clients opened
    split_flows: int
    split: list[dict]  # offending flows (first DETAIL_LIMIT)
    udp_sent: int
    udp_arrived: int  # distinct datagrams that reached some backend
    udp_lost_forward: int  # sent by clients, never reached a backend
    udp_replies_sent: int  # backends answer every valid datagram
    udp_replies_received: int  # reply datagrams the clients got
    udp_lost_return: int
    udp_dups: int  # duplicate datagrams seen at backends
    flows_never_arrived: int  # UDP flows sent but seen at no backend
    lossy_flows: list[dict]  # flows with the most loss (first DETAIL_LIMIT)
    per_backend: dict[str, dict]
    balance_max_mean: float | None
    balance_cv: float | None
    packets_max_mean: float | None
    http_failures: int
    http_errors: list[dict]
    unknown_flows: int  # seen at backends, sent by no client record given
    malformed: int  # malformed datagrams/requests counted by backends
    reply_errors: int  # replies backends failed to send
    anonymous_conns: int = 0  # plain HTTP connections (no flow id) seen at backends
    anonymous_requests: int = 0
    # "ip:port" a UDP reply came from -> flows with a reply from there: a client talked to
    # VIP:port, so a reply from anywhere else (a relay's own address or port) is wrong
    reply_from: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.split_flows == 0

    def to_json(self) -> dict:
        sent = self.udp_sent
        return {
            "ok": self.ok,
            "flows": {
                "seen": self.flows_seen,
                "udp": self.udp_flows,
                "http": self.http_conns,
                "unknown": self.unknown_flows,
                "never_arrived": self.flows_never_arrived,
            },
            "split_flows": self.split_flows,
            "split": self.split,
            "lost": {
                "udp_sent": sent,
                "udp_arrived": self.udp_arrived,
                "forward": self.udp_lost_forward,
                "forward_rate": _rate(self.udp_lost_forward, sent),
                "replies_sent": self.udp_replies_sent,
                "replies_received": self.udp_replies_received,
                "return": self.udp_lost_return,
                "return_rate": _rate(self.udp_lost_return, self.udp_replies_sent),
                "dups": self.udp_dups,
                "reply_errors": self.reply_errors,
                "worst_flows": self.lossy_flows,
            },
            "per_backend": self.per_backend,
            "balance": {
                "metric": "flows per backend",
                "max_mean": self.balance_max_mean,
                "cv": self.balance_cv,
                "packets_max_mean": self.packets_max_mean,
            },
            "http": {
                "conns": self.http_conns,
                "failures": self.http_failures,
                "errors": self.http_errors,
            },
            "malformed": self.malformed,
            "anonymous": {"conns": self.anonymous_conns, "requests": self.anonymous_requests},
            "reply_from": self.reply_from,
        }

    def table(self) -> str:
        def pct(n, d):
            r = _rate(n, d)
            return "-" if r is None else f"{100 * r:.2f}%"

        def num(x, fmt="{:.3f}"):
            return "-" if x is None else fmt.format(x)

        lines = [
            "vnflab affinity check: " + ("OK" if self.ok else "FAIL (split flows)"),
            f"  {'flows seen at backends':<28}{self.flows_seen:>10}",
            f"  {'udp flows / http conns':<28}{self.udp_flows:>10} / {self.http_conns}",
            f"  {'split flows':<28}{self.split_flows:>10}",
            f"  {'udp sent':<28}{self.udp_sent:>10}",
            f"  {'lost on the way in':<28}{self.udp_lost_forward:>10}  "
            f"({pct(self.udp_lost_forward, self.udp_sent)})",
            f"  {'lost on the way back':<28}{self.udp_lost_return:>10}  "
            f"({pct(self.udp_lost_return, self.udp_replies_sent)})",
            f"  {'flows that never arrived':<28}{self.flows_never_arrived:>10}",
            f"  {'duplicates at backends':<28}{self.udp_dups:>10}",
            f"  {'http failures':<28}{self.http_failures:>10}",
            f"  {'unknown flows / malformed':<28}{self.unknown_flows:>10} / {self.malformed}",
            f"  {'balance max/mean (flows)':<28}{num(self.balance_max_mean):>10}",
            f"  {'balance CV (flows)':<28}{num(self.balance_cv):>10}",
        ]
        if self.anonymous_requests:
            lines.append(
                f"  {'plain http (no flow id)':<28}{self.anonymous_conns:>10} conns / "
                f"{self.anonymous_requests} requests (not in the checks above)"
            )
        lines += [
            "",
            f"  {'backend':<12}{'flows':>8}{'share':>9}{'udp':>8}{'http':>8}"
            f"{'packets':>11}{'bytes':>13}",
        ]
        for name, b in self.per_backend.items():
            lines.append(
                f"  {name:<12}{b['flows']:>8}{pct(b['flows'], self._flow_total()):>9}"
                f"{b['udp_flows']:>8}{b['http_flows']:>8}{b['packets']:>11}"
                f"{b['bytes']:>13}"
            )
        if self.split:
            lines += ["", f"  split flows (first {len(self.split)} of {self.split_flows}):"]
            for s in self.split:
                where = ", ".join(f"{k}={v}" for k, v in s["backends"].items())
                lines.append(f"    {s['proto']} flow {s['flow_id']}: {where}")
        if self.http_errors:
            lines += ["", f"  http failures (first {len(self.http_errors)}):"]
            for e in self.http_errors:
                lines.append(f"    flow {e['flow_id']}: {e['error']}")
        return "\n".join(lines)

    def _flow_total(self) -> int:
        return sum(b["flows"] for b in self.per_backend.values())


def _rate(n, d):
    return None if not d else round(n / d, 6)


def _balance(values: list[int]):
    """(max/mean, coefficient of variation) of per-backend counts; None when nothing flowed."""
    if not values or sum(values) == 0:
        return None, None
    mean = sum(values) / len(values)
    return round(max(values) / mean, 4), round(statistics.pstdev(values) / mean, 4)


def check(backend_records: list[dict], client_records: list[dict]) -> Report:
    """Merge backend and client records into one Report (see the module docstring)."""
    per_backend: dict[str, dict] = {}
    # (proto, flow_id) -> {backend: packets seen there}
    at_backends: dict[tuple, dict[str, int]] = {}
    # (proto, flow_id) -> distinct datagrams that arrived (sum over backends)
    arrived: dict[tuple, int] = {}
    malformed = reply_errors = dups = 0
    anonymous_conns = anonymous_requests = 0
    for rec in backend_records:
        name = str(rec.get("backend", "?"))
        b = per_backend.setdefault(
            name,
            {
                "flows": 0,
                "udp_flows": 0,
                "http_flows": 0,
                "packets": 0,
                "bytes": 0,
                "anonymous_conns": 0,
            },
        )
        malformed += int(rec.get("malformed", 0))
        anonymous = rec.get("anonymous", [])
        b["anonymous_conns"] += len(anonymous) + int(rec.get("anonymous_untracked", 0))
        anonymous_conns += len(anonymous) + int(rec.get("anonymous_untracked", 0))
        anonymous_requests += int(rec.get("anonymous_requests", 0))
        reply_errors += int(rec.get("udp_reply_errors", 0))
        for f in rec.get("flows", []):
            key = (f.get("proto", "udp"), int(f["flow_id"]))
            packets = int(f.get("packets", 0))
            seen = at_backends.setdefault(key, {})
            if name not in seen:
                b["flows"] += 1
                b["udp_flows" if key[0] == "udp" else "http_flows"] += 1
            seen[name] = seen.get(name, 0) + packets
            b["packets"] += packets
            b["bytes"] += int(f.get("bytes", 0))
            if key[0] == "udp":
                d = int(f.get("dups", 0))
                dups += d
                arrived[key] = arrived.get(key, 0) + packets - d
    total_placements = sum(x["flows"] for x in per_backend.values())
    for b in per_backend.values():
        b["share"] = _rate(b["flows"], total_placements)

    # Client side: what was sent and who answered.
    answered: dict[tuple, dict[str, int]] = {}
    client_keys = set()
    udp_flows = http_conns = 0
    udp_sent = replies_received = replies_sent = lost_fwd = lost_ret = never = 0
    lossy: list[dict] = []
    http_failures = 0
    http_errors: list[dict] = []
    reply_from: dict[str, int] = {}
    for crec in client_records:
        for u in crec.get("udp", []):
            for source in u.get("reply_from", []):
                reply_from[source] = reply_from.get(source, 0) + 1
            key = ("udp", int(u["flow_id"]))
            client_keys.add(key)
            udp_flows += 1
            sent = int(u.get("sent", 0))
            got = int(u.get("replies", u.get("received", 0)))
            by_backend = u.get("backend_replies") or {n: 0 for n in u.get("backends", [])}
            if by_backend:
                answered.setdefault(key, {}).update(by_backend)
            at = arrived.get(key, 0)
            served = sum(at_backends.get(key, {}).values())
            f_lost = max(0, sent - at)
            r_lost = max(0, served - got)
            udp_sent += sent
            replies_received += got
            replies_sent += served
            lost_fwd += f_lost
            lost_ret += r_lost
            if sent and key not in at_backends:
                never += 1
            if f_lost or r_lost:
                lossy.append(
                    {
                        "flow_id": key[1],
                        "client": crec.get("client"),
                        "sent": sent,
                        "arrived": at,
                        "replies": got,
                        "lost_forward": f_lost,
                        "lost_return": r_lost,
                    }
                )
        for h in crec.get("http", []):
            key = ("tcp", int(h["flow_id"]))
            client_keys.add(key)
            http_conns += 1
            names = h.get("backends") or ([h["backend"]] if h.get("backend") else [])
            for n in names:
                answered.setdefault(key, {}).setdefault(n, 0)
            if not h.get("ok", False):
                http_failures += 1
                if len(http_errors) < DETAIL_LIMIT:
                    http_errors.append(
                        {
                            "flow_id": key[1],
                            "client": crec.get("client"),
                            "status": h.get("status"),
                            "error": h.get("error"),
                        }
                    )

    split: list[dict] = []
    nsplit = 0
    for key in sorted(set(at_backends) | set(answered)):
        names = set(at_backends.get(key, {})) | set(answered.get(key, {}))
        if len(names) > 1:
            nsplit += 1
            if len(split) < DETAIL_LIMIT:
                split.append(
                    {
                        "proto": key[0],
                        "flow_id": key[1],
                        "backends": dict(sorted(at_backends.get(key, {}).items())),
                        "answered_by": dict(sorted(answered.get(key, {}).items())),
                    }
                )

    lossy.sort(key=lambda x: -(x["lost_forward"] + x["lost_return"]))
    names = sorted(per_backend)
    max_mean, cv = _balance([per_backend[n]["flows"] for n in names])
    pkt_max_mean, _ = _balance([per_backend[n]["packets"] for n in names])
    unknown = len(set(at_backends) - client_keys) if client_records else 0
    return Report(
        backends=names,
        flows_seen=len(at_backends),
        udp_flows=udp_flows,
        http_conns=http_conns,
        split_flows=nsplit,
        split=split,
        udp_sent=udp_sent,
        udp_arrived=sum(arrived.get(k, 0) for k in client_keys if k[0] == "udp"),
        udp_lost_forward=lost_fwd,
        udp_replies_sent=replies_sent,
        udp_replies_received=replies_received,
        udp_lost_return=lost_ret,
        udp_dups=dups,
        flows_never_arrived=never,
        lossy_flows=lossy[:DETAIL_LIMIT],
        per_backend={n: per_backend[n] for n in names},
        balance_max_mean=max_mean,
        balance_cv=cv,
        packets_max_mean=pkt_max_mean,
        http_failures=http_failures,
        http_errors=http_errors,
        unknown_flows=unknown,
        malformed=malformed,
        reply_errors=reply_errors,
        anonymous_conns=anonymous_conns,
        anonymous_requests=anonymous_requests,
        reply_from=dict(sorted(reply_from.items())),
    )


# --------------------------------------------------------------------------------------------
# pool changes: affinity while the backend set changes under live flows
# --------------------------------------------------------------------------------------------

POOL_CHANGES = ("add", "drain", "fail")
EXAMPLES = 5  # offending flows listed per rule


@dataclasses.dataclass
class RuleResult:
    """One rule of a pool change: how many flows it judged, how many broke it, a few of them."""

    rule: str
    judged: int
    broken: int
    examples: list[dict]
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.judged > 0 and self.broken == 0


@dataclasses.dataclass
class PoolChangeReport:
    """``judge_pool_change``'s verdict; ``table()`` for people, ``to_json()`` for the grader."""

    kind: str
    backend: str
    changed_at: float
    settled_at: float
    recovered_at: float | None
    flows: dict  # how many flows fell in each class (see judge_pool_change)
    rules: list[RuleResult]

    @property
    def ok(self) -> bool:
        return bool(self.rules) and all(r.ok for r in self.rules)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "kind": self.kind,
            "backend": self.backend,
            "changed_at": self.changed_at,
            "settled_at": self.settled_at,
            "recovered_at": self.recovered_at,
            "flows": self.flows,
            "rules": [dataclasses.asdict(r) | {"ok": r.ok} for r in self.rules],
        }

    def table(self) -> str:
        when = f"grace {self.settled_at - self.changed_at:.1f} s"
        if self.recovered_at is not None:
            when += f", back at +{self.recovered_at - self.changed_at:.1f} s"
        f = self.flows
        lines = [
            f"pool change: {self.kind} {self.backend} ({when}): " + ("OK" if self.ok else "FAIL"),
            f"  flows: {f['before']} started before the change, {f['new']} after it "
            f"settled, {f['unjudged']} in between or after a recovery",
            f"  {'rule':<58}{'judged':>7}{'broken':>7}",
        ]
        for r in self.rules:
            lines.append(
                f"  {r.rule:<58}{r.judged:>7}{r.broken:>7}"
                + ("" if r.ok else "   <- FAIL")
                + (f"  ({r.detail})" if r.detail else "")
            )
            for e in r.examples:
                where = ", ".join(
                    f"{b} {v['packets']} pkts {v['first']:+.2f}..{v['last']:+.2f} s"
                    for b, v in e["backends"].items()
                )
                lines.append(f"      flow {e['flow_id']}: {where}")
        return "\n".join(lines)


def flow_spans(backend_records: list[dict]) -> dict[int, dict[str, tuple]]:
    """UDP flow id -> {backend: (first_t, last_t, packets)}: where each flow's packets arrived
    and when (the backends' clocks: ``topologies.servers`` stamps first and last packet)."""
    spans: dict[int, dict[str, tuple]] = {}
    for rec in backend_records:
        name = str(rec.get("backend", "?"))
        for f in rec.get("flows", []):
            if f.get("proto", "udp") != "udp" or f.get("first_t") is None:
                continue
            spans.setdefault(int(f["flow_id"]), {})[name] = (
                float(f["first_t"]),
                float(f["last_t"]),
                int(f.get("packets", 0)),
            )
    return spans


def judge_pool_change(
    backend_records: list[dict],
    kind: str,
    backend: str,
    changed_at: float,
    grace_s: float,
    recovered_at: float | None = None,
) -> PoolChangeReport:
    """Did every flow keep the backend it should across a pool change? Judged per flow from
    what the backends saw (never from the LB's own counters, which a submission controls).

    ``kind`` and ``backend``: ``add`` (``backend`` joined), ``drain`` or ``fail`` (``backend``
    was drained / failed), at wall-clock time ``changed_at`` (when the LB was told). The LB has
    ``grace_s`` to act on it: packets in that window may still follow the old pool. ``fail``
    may end with the backend recovering at ``recovered_at``.

    Flows, by the time of their first packet anywhere: *before* the change, *new* (after
    ``changed_at + grace_s``, and before ``recovered_at``), the rest unjudged. A flow's *home*
    is the backend that saw its first packet. The rules:

    * every kind: flows from before the change whose home is not ``backend`` keep it (seen by
      exactly one backend; for ``add`` that is every flow from before: none moves to the new
      one); new flows stay on one backend;
    * ``add``: the added backend gets some of the new flows (the change was applied);
    * ``drain``: flows whose home is the drained backend stay there; no new flow reaches it;
    * ``fail``: flows whose home is the failed backend and that went on after the grace move
      once: to exactly one other backend, and never reach the failed one again (not even
      after it recovered: that would break them a second time); no new flow reaches it.

    A stateless LB (the pool's choice per packet, no flow table) breaks these: Maglev moves
    about 1/N of the flows to an added backend, a drain moves the drained backend's flows, and
    a recovery moves the failed backend's flows back."""
    if kind not in POOL_CHANGES:
        raise ValueError(f"kind: must be one of {', '.join(POOL_CHANGES)}, got {kind!r}")
    settled_at = changed_at + grace_s
    spans = flow_spans(backend_records)
    before, new, unjudged = {}, {}, 0
    for flow_id, where in spans.items():
        start = min(v[0] for v in where.values())
        if start < changed_at:
            before[flow_id] = where
        elif start >= settled_at and (recovered_at is None or start < recovered_at):
            new[flow_id] = where
        else:
            unjudged += 1

    def home(where):
        return min(where, key=lambda b: where[b][0])

    def example(flow_id, where):
        return {
            "flow_id": flow_id,
            "backends": {
                b: {
                    "packets": v[2],
                    "first": round(v[0] - changed_at, 2),
                    "last": round(v[1] - changed_at, 2),
                }
                for b, v in sorted(where.items(), key=lambda kv: kv[1][0])
            },
        }

    def rule(text, flows, broken_if, detail=""):
        broken = [(f, w) for f, w in sorted(flows.items()) if broken_if(w)]
        return RuleResult(
            text, len(flows), len(broken), [example(f, w) for f, w in broken[:EXAMPLES]], detail
        )

    on_it = {f: w for f, w in before.items() if home(w) == backend}
    others = {f: w for f, w in before.items() if home(w) != backend}
    rules = []
    if kind == "add":
        rules.append(
            rule(
                f"flows from before keep their backend (none moves to {backend})",
                before,
                lambda w: len(w) > 1,
            )
        )
        reached = sum(1 for w in new.values() if backend in w)
        rules.append(
            RuleResult(
                f"the added {backend} gets new flows",
                len(new),
                0 if reached else len(new),
                [],
                f"{reached} of {len(new)} new flows reached it",
            )
        )
    elif kind == "drain":
        rules.append(
            rule(f"flows on the drained {backend} stay there", on_it, lambda w: len(w) > 1)
        )
        rules.append(rule("flows on the other backends keep theirs", others, lambda w: len(w) > 1))
        rules.append(
            rule(f"no new flow reaches the drained {backend}", new, lambda w: backend in w)
        )
    else:
        went_on = {f: w for f, w in on_it.items() if max(v[1] for v in w.values()) >= settled_at}
        rules.append(
            rule(
                f"flows on the failed {backend} move once, to one backend",
                went_on,
                lambda w: w[backend][1] > settled_at or len(w) != 2,
            )
        )
        rules.append(rule("flows on the other backends keep theirs", others, lambda w: len(w) > 1))
        rules.append(rule(f"no new flow reaches the failed {backend}", new, lambda w: backend in w))
    rules.append(rule("new flows stay on one backend", new, lambda w: len(w) > 1))
    return PoolChangeReport(
        kind,
        backend,
        changed_at,
        settled_at,
        recovered_at,
        {
            "before": len(before),
            "new": len(new),
            "unjudged": unjudged,
            f"before_on_{backend}": len(on_it),
        },
        rules,
    )


def _load(patterns: list[str]) -> list[dict]:
    """Read JSON files; arguments may be paths or (quoted) glob patterns."""
    paths = []
    for p in patterns:
        paths.extend(sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p])
    out = []
    for path in paths:
        with open(path) as f:
            out.append(json.load(f))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m testbed.checker", description="vnflab affinity checker"
    )
    p.add_argument("--backends", nargs="+", required=True, help="backend record JSON files")
    p.add_argument("--clients", nargs="*", default=[], help="client output JSON files")
    p.add_argument("--json", help="also write the report as JSON here")
    a = p.parse_args(argv)
    try:
        backends, clients = _load(a.backends), _load(a.clients)
    except (OSError, ValueError) as exc:
        print(f"testbed.checker: cannot read input: {exc}", file=sys.stderr)
        return 2
    if not backends:
        print("testbed.checker: no backend records", file=sys.stderr)
        return 2
    report = check(backends, clients)
    print(report.table())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report.to_json(), f, indent=2)
            f.write("\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
