"""Grader phase ``pool_changes``: affinity across pool changes, under live traffic.

The affinity phase cannot tell an LB that keeps a flow table from one that asks Maglev for
every packet: with the pool fixed, both send every packet of a flow to the same backend. Here
the pool changes mid-stream, once per change kind, each with a fresh LB (started with
``--control-file``) and fresh backend records (``testbed.poolchange``):

* ``add``: the LB starts with all backends but the last; the last one joins;
* ``drain``: the second backend is drained;
* ``fail``: the second backend fails, then recovers (a flapping backend).

Each is judged per flow from the backends' records (``testbed.checker.judge_pool_change``),
never from the LB's stats. A kind scores its share of the points when every rule holds and the
LB is still running at the end; a stateless LB breaks all three kinds.

Two functions, so the phase can be wired into any grading loop:

* inside the sandbox: ``run_pool_changes(bed, start_lb, plan) -> facts`` (JSON-able);
* outside: ``score_pool_changes(facts, points) -> (score, message)``.
"""

from __future__ import annotations

import os

from testbed.poolchange import PoolChangePlan, drive_pool_change, write_control

KINDS = ("add", "drain", "fail")


def change_plans(backends: list[str], overrides: dict | None = None) -> list[PoolChangePlan]:
    """One plan per kind for a topology with these backends (at least 3: ``add`` leaves two
    configured); ``overrides``: PoolChangePlan fields for all of them (e.g. lab.toml's
    ``[pool_changes]``)."""
    if len(backends) < 3:
        raise ValueError(f"pool changes need at least 3 backends, the topology has {len(backends)}")
    extra = dict(overrides or {})
    return [
        PoolChangePlan("add", backends[-1], **extra),
        PoolChangePlan("drain", backends[1], **extra),
        PoolChangePlan("fail", backends[1], **extra),
    ]


def run_pool_changes(bed, start_lb, plan: dict) -> dict:
    """Inside the sandbox: each change kind against a fresh LB. Returns the facts.

    ``bed``: the grading Testbed (LB topology, backend servers running). ``start_lb(tag,
    control_file, backends)``: starts the LB program under test with ``--control-file
    control_file`` and only ``backends`` configured, and returns an object with ``ready``,
    ``error``, ``pid``, ``alive()`` and ``stop(timeout) -> dict`` (``grader.inside.StudentLB``).
    ``plan``: the grading plan (``limits.stop_timeout_s``; optional ``pool_changes``: plan
    overrides)."""
    stop_timeout = float(plan.get("limits", {}).get("stop_timeout_s", 5))
    facts: dict = {}
    for _i, change in enumerate(
        change_plans(bed.topo_cfg.backend_names(), plan.get("pool_changes"))
    ):
        bed.restart_backends()  # fresh records: one change per record set
        # A directory of its own: the LB's jail binds it (read-only), never the work dir
        control_dir = os.path.join(bed.workdir, f"control-{change.kind}")
        os.makedirs(control_dir, mode=0o755, exist_ok=True)
        control = os.path.join(control_dir, "pool.json")
        write_control(control, {})
        configured = change.configured(bed.topo_cfg.backend_names())
        lb = start_lb(f"pool-{change.kind}", control, configured)
        f: dict = {"ready": lb.ready, "error": lb.error}
        if lb.ready:
            f.update(drive_pool_change(bed, lb.pid, control, change, tag=f"pool-{change.kind}"))
            f["alive_after"] = lb.alive()
        stop = lb.stop(stop_timeout)
        f["stop"] = {k: stop.get(k) for k in ("alive_at_stop", "hung", "exit_code", "log_tail")}
        f["lb_counts"] = lb_counts(stop.get("stats"))
        facts[change.kind] = f
    bed.restart_backends()
    return facts


def lb_counts(stats) -> dict[str, int]:
    """A few of the LB's own counters (its stats file: the submission's word, never scored),
    to help read a failed kind: a flow that moved with ``new_flows`` above the flows sent
    was decided twice, and the flow state's ``evictions``/``expirations`` say whether the LB
    forgot it for room or for age. Integers only."""

    def part(doc: dict, key: str, kind: type):
        value = doc.get(key)
        return value if isinstance(value, kind) else kind()

    stats = stats if isinstance(stats, dict) else {}
    lb: dict = part(stats, "lb", dict)
    table: dict = part(lb, "flow_table", dict)
    caches: list = part(stats, "flow_cache", list)
    counts: dict = {k: lb.get(k) for k in ("new_flows", "reassigned")}
    for key in ("misses", "evictions", "expirations"):
        counts[f"flow_table.{key}"] = table.get(key)
        # the batch styles' flow state, one per polling thread (vnf.batch.BatchFlowCache)
        cached = [c.get(key) for c in caches[:16] if isinstance(c, dict)]
        if cached and all(type(v) is int for v in cached):
            counts[f"flow_cache.{key}"] = sum(cached)
    return {k: v for k, v in counts.items() if type(v) is int and 0 <= v < 10**12}


def score_pool_changes(facts: dict | None, points: float) -> tuple[float, str]:
    """Outside the sandbox: ``points / 3`` per change kind whose rules all held with the LB
    still running; the message says, per kind, what was judged and what broke."""
    share = points / len(KINDS)
    score, lines = 0.0, []
    for kind in KINDS:
        f = (facts or {}).get(kind)
        if f is None:
            lines.append(f"{kind}: not run (the grading stopped before it)")
            continue
        if not f.get("ready"):
            lines.append(f"{kind}: the LB did not start: {f.get('error')}")
            continue
        report = f.get("report") or {}
        alive = f.get("alive_after", False)
        if report.get("ok") and alive:
            score += share
            rules = "; ".join(f"{r['rule']}: {r['judged']} judged" for r in report["rules"])
            lines.append(f"{kind} {report['backend']}: OK ({rules})")
            continue
        why = [] if alive else ["the LB was no longer running at the end"]
        lines.append(
            f"{kind} {report.get('backend', '?')}: FAIL" + (f" ({'; '.join(why)})" if why else "")
        )
        lines.append(f.get("table", ""))
        said = f.get("lb_counts") or {}
        if said:
            lines.append(
                "  the LB's own counters (not judged): "
                + ", ".join(f"{k} {v}" for k, v in sorted(said.items()))
            )
    hint = (
        "A flow keeps its backend because the LB remembers it (flow table), not because the "
        "pool still picks the same one: drained backends keep their flows, a failed "
        "backend's flows move once and stay moved, an added backend only gets new flows."
    )
    message = "\n".join(lines)
    if score < points:
        message += "\n\n" + hint
    return round(score, 2), message
