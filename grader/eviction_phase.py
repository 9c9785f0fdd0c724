"""The hidden eviction scenario's ``table_bounded`` check: the flow table's bound, by behaviour.

A bounded flow table forgets: with ``flow_capacity`` 64 and 400 flows, the flows it saw first
(by last use) are gone, and their next packet is a new flow to it. One that never forgets keeps
every flow, and what it reports in its own stats proves nothing (the submission writes them).
So the grader makes forgetting visible, from outside the LB, with the control plane
(``vnf.control``, as in ``grader.pool_phase``):

1. the LB starts with all backends but the last, ``--control-file`` holding ``{}``; the
   scenario's flows go through it (the affinity part of the scenario);
2. *touch*: a few of the newest flows (``RECENT_FLOWS``) get two more datagrams, each from its
   own source port (``testbed.probe resend``): the most recently used entries of any table;
3. the pool grows: the last backend is added (control file + SIGHUP); after ``GRACE_S`` the
   grader waits until a new flow that the grown pool gives that backend reaches it (the LB has
   applied the change: until then a forgotten flow would still get its old backend);
4. the touched flows are sent again, then the oldest half of the flows (``old_flows``).

Each flow's backend now is read from the backends' records (by the new flow id each resend
carries), and compared with its first backend (*home*) and with the one the grown pool gives its
5-tuple (``vnf.backends``: the same Maglev the LB builds). For the flows where the two differ
(Maglev moves about 1/N of them to the added backend):

* the old flows must be *re-placed* (at least ``REPLACED_SHARE`` of those judged): a table of
  64 entries cannot still hold the oldest of 400 flows. A table that never evicts sends every
  one of them home (0 re-placed): it loses the points, whatever its stats say;
* the touched flows must stay home (at most ``RECENT_MOVED_SHARE`` may move): a table keeps the
  flows it just saw. One that forgets everything (cleared on SIGHUP, no table) fails here.

Which forgetting counts as eviction or expiry does not matter: the resends come well within
``idle_timeout`` (300 s in the scenario), so what the table forgot it forgot for room. The
touched flows are chosen so that at most two of them share a set of the provided two-way vector
cache (``vnf.batch``, lab 3's flow state): that cache, like an LRU table, then keeps all of them.

Two functions, as ``grader.pool_phase``: inside the sandbox ``run_eviction_probe(...) -> facts``;
outside ``score_eviction(facts, scenario) -> (problems, summary)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from testbed.checker import flow_spans
from testbed.experiment import log
from testbed.poolchange import PoolChangePlan, signal_change
from vnf.addresses import SERVICE_PORT
from vnf.backends import Backend, BackendPool
from vnf.hashing import cache_bits, cache_slot, flow_hash
from vnf.packet import FiveTuple, ip_to_int

RECENT_FLOWS = 16  # touched flows, all of them placed elsewhere by the grown pool
GRACE_S = 1.0  # the LB's time to apply the pool change (as grader.pool_phase)
REPLACED_SHARE = 0.75  # of the old flows judged, at least this many re-placed
RECENT_MOVED_SHARE = 0.25  # of the touched flows judged, at most this many moved
MIN_JUDGED_OLD = 10
MIN_JUDGED_RECENT = 8
# a resend's flow id: the flow's own id + this (the driver's ids stay below 600 000 in a
# client's span: UDP from 0, HTTP from 500 000, testbed.traffic)
ID_OFFSET = {"touch": 600_000, "recent": 700_000, "old": 800_000, "canary": 900_000}
CANARY_PORTS = range(20000, 21000)  # new flows' source ports: below the ephemeral range
CANARY_TRIES = 8


@dataclass
class Flow:
    """One UDP flow of the scenario's traffic, as the grader knows it from outside the LB."""

    client: str
    flow_id: int
    src_port: int
    home: str  # the backend that saw all its packets
    last_t: float  # when its last packet reached home (the backend's clock)
    grown: str  # the backend the grown pool gives its 5-tuple
    cache_set: int  # its set in a two-way vector cache of the scenario's capacity


def known_flows(client_records: list[dict], spans: dict, topo, grown: BackendPool, capacity: int):
    """The scenario's UDP flows that reached exactly one backend, oldest last use first."""
    vip, bits = ip_to_int(topo.vip), cache_bits(capacity)
    flows = []
    for rec in client_records:
        client = f"c{rec.get('client')}"
        if client not in topo.client_names():
            continue
        src_ip = ip_to_int(topo.host_ip(client))
        for u in rec.get("udp") or []:
            where = spans.get(int(u["flow_id"]), {})
            if len(where) != 1 or not u.get("src_port"):
                continue
            (home, (_first, last, _n)), *_ = where.items()
            five = FiveTuple(src_ip, vip, int(u["src_port"]), SERVICE_PORT, 17)
            backend = grown.choose(five)
            assert backend is not None, "a pool of healthy backends always chooses one"
            h = flow_hash(five)
            flows.append(
                Flow(
                    client,
                    int(u["flow_id"]),
                    int(u["src_port"]),
                    home,
                    last,
                    backend.name,
                    cache_slot(h, bits) >> 1,
                )
            )
    flows.sort(key=lambda f: f.last_t)
    return flows


def choose_flows(flows: list[Flow], recent: int, old: int) -> tuple[list[Flow], list[Flow]]:
    """The flows to touch (the newest whose grown-pool backend is not their home, at most two
    per cache set) and the ``old`` oldest others."""
    touched: list[Flow] = []
    per_set: dict[int, int] = {}
    for f in reversed(flows[len(flows) // 2 :]):
        if len(touched) == recent:
            break
        if f.grown != f.home and per_set.get(f.cache_set, 0) < 2:
            touched.append(f)
            per_set[f.cache_set] = per_set.get(f.cache_set, 0) + 1
    chosen = {id(f) for f in touched}
    return touched, [f for f in flows if id(f) not in chosen][:old]


def _send(bed, group: str, tag: str, flows: list[Flow], packets: int = 2) -> None:
    """``testbed.probe resend`` on every client with flows in ``flows`` (in parallel), each
    flow under its own id + ``ID_OFFSET[group]``; waits for all of them."""
    procs = []
    for client in bed.topo_cfg.client_names():
        mine = [[f.flow_id + ID_OFFSET[group], f.src_port] for f in flows if f.client == client]
        if not mine:
            continue
        path = os.path.join(bed.workdir, f"{tag}-{group}-{client}.flows.json")
        with open(path, "w") as fh:
            json.dump(mine, fh)
        argv = [
            *(sys.executable, "-m", "testbed.probe", "resend"),
            *("--vip", bed.topo_cfg.vip, "--port", str(SERVICE_PORT), "--flows", path),
            *("--packets", str(packets), "--client-id", client[1:]),
            *("--wait", "0.5", "--out", path[: -len(".flows.json")] + ".json"),
        ]
        procs.append(bed.popen_off_lb_core(client, argv, f"{tag}-{group}-{client}"))
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:  # a stuck sender: its flows count as lost
            proc.kill()
            proc.wait()


def _wait_until_grown(bed, tag: str, grown: BackendPool, joined: str) -> float | None:
    """When the LB is seen to use the grown pool: a new flow (a port no flow of the scenario
    had) that the grown pool gives ``joined`` reaches it. Before that, a forgotten flow would
    still get its old backend, and the check would blame the table for a slow pool change.
    None when it never does."""
    client = bed.topo_cfg.client_names()[0]
    src_ip, vip = ip_to_int(bed.topo_cfg.host_ip(client)), ip_to_int(bed.topo_cfg.vip)

    def lands_on_joined(port: int) -> bool:
        backend = grown.choose(FiveTuple(src_ip, vip, port, SERVICE_PORT, 17))
        return backend is not None and backend.name == joined

    ports = (p for p in CANARY_PORTS if lands_on_joined(p))
    base = int(client[1:]) * 1_000_000
    for k, port in zip(range(CANARY_TRIES), ports):
        canary = Flow(client, base + k, port, "", 0.0, joined, 0)
        _send(bed, "canary", tag, [canary])
        where = flow_spans(bed.backend_records()).get(base + k + ID_OFFSET["canary"], {})
        if joined in where:
            return where[joined][0]
    return None


def run_eviction_probe(bed, lb, scenario: dict, client_records: list[dict], control: str) -> dict:
    """Steps 2-4 of the module docstring against the running ``lb`` (``pid``), started with
    all backends but the last and ``--control-file control`` after the scenario's traffic
    (``client_records``: the drivers' records). Returns the facts (JSON-able)."""
    topo = bed.topo_cfg
    names = topo.backend_names()
    joined = names[-1]
    policy = scenario.get("policy", bed.spec.policy)
    backends = [Backend(b, topo.host_ip(b), topo.host_mac(b), SERVICE_PORT) for b in names]
    grown = BackendPool(backends, policy)
    capacity = int(scenario["flow_capacity"])
    flows = known_flows(client_records, flow_spans(bed.backend_records()), topo, grown, capacity)
    old_n = int(scenario.get("old_flows", int(scenario.get("udp_flows", 300)) // 2))
    touched, old = choose_flows(flows, RECENT_FLOWS, old_n)
    tag = f"hidden-{scenario['id']}"
    facts: dict = {
        "joined": joined,
        "capacity": capacity,
        "flows_known": len(flows),
        "udp_flows": int(scenario.get("udp_flows", 300)),
    }
    if policy not in ("maglev", "hash") or lb.pid is None:
        facts["grader_error"] = f"cannot predict where policy {policy!r} places a flow"
        return facts
    if not old or not touched:
        facts["error"] = f"only {len(flows)} flows reached one backend: nothing to resend"
        return facts
    _send(bed, "touch", tag, touched)
    changed_at = signal_change(lb.pid, control, PoolChangePlan("add", joined).control_doc(bed))
    log(f"eviction: {joined} joins; {len(touched)} recent and {len(old)} old flows sent again")
    time.sleep(max(0.0, changed_at + GRACE_S - time.time()))
    facts["grown_after_s"] = _wait_until_grown(bed, tag, grown, joined)
    if facts["grown_after_s"] is None:
        facts["error"] = (
            f"the LB did not apply the pool change: no new flow reached {joined} within "
            f"{CANARY_TRIES} tries after SIGHUP (the control file, vnf/ways/common.py)"
        )
        return facts
    facts["grown_after_s"] = round(facts["grown_after_s"] - changed_at, 2)
    _send(bed, "recent", tag, touched)
    # the least old first: a table that holds more than it should answers from memory before
    # the misses of the oldest push those flows out
    _send(bed, "old", tag, old[::-1])
    resent_by = time.time()
    spans = flow_spans(bed.backend_records())
    facts.update(
        changed_at=changed_at,
        # at most the oldest flow's idle time when it came back: below idle_timeout, what the
        # table forgot it forgot for room, not for age
        idle_gap_s=round(resent_by - old[0].last_t, 2),
        touch=judge_resends(touched, spans, "touch"),
        recent=judge_resends(touched, spans, "recent"),
        old=judge_resends(old, spans, "old"),
    )
    return facts


def judge_resends(flows: list[Flow], spans: dict, group: str) -> dict:
    """Where each flow's resend went: ``home`` (its first backend), ``grown`` (where the grown
    pool puts it, when that is another backend), ``other``, ``split`` (more than one backend)
    or ``lost``; counted apart for the flows the grown pool keeps home (``same_*``)."""
    counts = dict.fromkeys(
        ("sent", "differ", "home", "grown", "other", "split", "lost", "same_home", "same_other"), 0
    )
    examples: dict[str, list] = {}
    for f in flows:
        counts["sent"] += 1
        where = sorted(spans.get(f.flow_id + ID_OFFSET[group], {}))
        if f.grown == f.home:
            if where:
                counts["same_home" if where == [f.home] else "same_other"] += 1
            continue
        counts["differ"] += 1
        if not where:
            kind = "lost"
        elif len(where) > 1:
            kind = "split"
        else:
            kind = {f.home: "home", f.grown: "grown"}.get(where[0], "other")
        counts[kind] += 1
        shown = examples.setdefault(kind, [])
        if len(shown) < 2 and kind != "lost":
            shown.append({"flow_id": f.flow_id, "home": f.home, "grown": f.grown, "went": where})
    return counts | {"examples": examples}


def score_eviction(facts: dict | None, scenario: dict) -> tuple[list[str], str]:
    """Outside the sandbox: what is wrong (empty: the bound holds) and a summary of what was
    seen, from ``run_eviction_probe``'s facts."""
    cap = scenario.get("flow_capacity")
    if not facts:
        return ["the eviction probe did not run (the LB was not running after the traffic)"], ""
    if facts.get("grader_error"):
        return [f"grader problem, not yours: {facts['grader_error']}"], ""
    if facts.get("error"):
        return [f"the eviction probe could not run: {facts['error']}"], ""
    joined, total = facts["joined"], facts["udp_flows"]
    old, recent, touch = facts["old"], facts["recent"], facts["touch"]
    problems = []
    idle = float(scenario.get("idle_timeout", 30.0))
    if facts["idle_gap_s"] >= idle:
        problems.append(
            f"grader problem, not yours: the old flows came back after {facts['idle_gap_s']} s, "
            f"past idle_timeout {idle:g} s (forgetting them proves no bound)"
        )
    judged = old["home"] + old["grown"]
    what = (
        f"the {old['sent']} oldest of {total} flows sent again after {joined} joined the pool, "
        f"{old['differ']} of which the grown pool (Maglev) places on another backend"
    )
    summary = (
        f"{old['grown']} of {judged} old flows re-placed after the pool grew ({what}); "
        f"{recent['home']} of {recent['home'] + recent['grown']} recently used flows stayed"
    )
    if judged < max(MIN_JUDGED_OLD, old["differ"] / 2):
        problems.append(
            f"only {judged} of the {old['differ']} old flows the grown pool places elsewhere "
            f"came back to one backend ({old['lost']} lost, {old['split']} split, "
            f"{old['other']} elsewhere): too few to judge"
        )
    elif old["grown"] < REPLACED_SHARE * judged:
        kept = old["home"]
        verdict = (
            f"the table kept all {total} flows with flow_capacity {cap}: it never evicts"
            if old["grown"] == 0
            else f"the table still held {kept} of them: more flows than flow_capacity {cap} "
            "allows (a bounded table forgets its least recently used flows first)"
        )
        problems.append(
            f"{old['grown']} of {judged} old flows re-placed after the pool grew ({what}; "
            f"{kept} went back to their first backend): {verdict}" + _examples(old, "home")
        )
    rj = recent["home"] + recent["grown"]
    if rj < MIN_JUDGED_RECENT:
        problems.append(
            f"only {rj} of {recent['sent']} recently used flows came back to one backend after "
            f"{joined} joined ({recent['lost']} lost, {recent['split']} split, "
            f"{recent['other']} elsewhere): too few to judge"
        )
    elif recent["grown"] > RECENT_MOVED_SHARE * rj:
        problems.append(
            f"{recent['grown']} of {rj} recently used flows (sent again just before {joined} "
            "joined) moved to the grown pool's choice: a flow table keeps the flows it just "
            "saw; this one did not (no table, one that stops storing when full, or one "
            "cleared on a pool change?)" + _examples(recent, "grown")
        )
    for group, label in ((touch, "before the pool grew"), (recent, "after"), (old, "after")):
        wrong = group["split"] + group["other"] + group["same_other"]
        if wrong:
            problems.append(
                f"{wrong} flows sent again {label} reached more than one backend or one that "
                "is neither their first nor the grown pool's"
                + _examples(group, "split")
                + _examples(group, "other")
            )
            break
    if touch["grown"]:
        problems.append(
            f"{touch['grown']} recently used flows changed backend with no pool change at all"
        )
    return problems, summary


def _examples(group: dict, kind: str) -> str:
    """A few flows of ``group`` whose resend went ``kind``, one line each."""
    return "".join(
        f"\n- flow id {e['flow_id']}: first at {e['home']}, the grown pool's choice "
        f"{e['grown']}; sent again it reached {', '.join(e['went'])}"
        for e in group["examples"].get(kind, [])
    )
