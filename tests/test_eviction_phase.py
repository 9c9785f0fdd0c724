"""The eviction check of the hidden scenario (``grader.eviction_phase``), replayed on real
NF code: the scenario's 400 flows, the touch, the pool growing through the control plane
(``vnf.control``) and the resends go through a real ``LoadBalancer`` (its ``FlowTable``, or
lab 3's two-way vector cache through ``backends_for_batch``); what each packet got stands in
for the backends' records, and the grader's own selection, judge and score run on them. The
run itself, in a sandbox against a jailed LB: tests/test_hostile.py (``tablelie``)."""

import random

import numpy as np
import pytest

from grader.eviction_phase import (
    ID_OFFSET,
    RECENT_FLOWS,
    choose_flows,
    judge_resends,
    known_flows,
    score_eviction,
)
from topologies.lb import LBTopoConfig
from vnf.addresses import SERVICE_PORT
from vnf.backends import Backend, BackendPool
from vnf.control import PoolChange, wanted_pool
from vnf.hashing import flow_hash
from vnf.lb import LBConfig, LoadBalancer
from vnf.packet import FiveTuple, ip_to_int

TOPO = LBTopoConfig(clients=2, backends=3)
SCENARIO = {
    "id": "eviction",
    "flow_capacity": 64,
    "idle_timeout": 300,
    "udp_flows": 400,
    "http_conns": 20,
    "old_flows": 200,
}
BACKENDS = [
    Backend(b, TOPO.host_ip(b), TOPO.host_mac(b), SERVICE_PORT) for b in TOPO.backend_names()
]


class Replay:
    """A LoadBalancer with all backends but the last, fed packet by packet; ``backend(flow)``
    answers as the way would (``style``: "table" = backend_for, "vector" = the batch cache)."""

    def __init__(self, style: str, capacity: int = 64):
        config = LBConfig(backends=BACKENDS[:-1], flow_capacity=capacity, idle_timeout=300)
        self.lb, self.style, self.now = LoadBalancer(config), style, 0.0

    def backend(self, flow: FiveTuple) -> str:
        self.now += 1e-4
        if self.style == "stateless":
            return self.lb.pool.choose(flow).name
        if self.style != "vector":
            return self.lb.backend_for(flow, self.now).name
        cols = np.zeros(
            1,
            dtype=[
                ("hash", "u4"),
                ("reason", "u1"),
                ("dst_ip", "u4"),
                ("dst_port", "u2"),
                ("proto", "u1"),
            ],
        )
        cols[0] = (flow_hash(flow), 0, flow.dst_ip, flow.dst_port, flow.proto)
        number = int(self.lb.backends_for_batch(cols, 1, self.now)[0])
        return self.lb.pool.by_number()[number].name

    def grow(self) -> None:
        """The control plane adds the last backend (as the LB program does on SIGHUP)."""
        change = PoolChange.from_doc({"add": [BACKENDS[-1]._asdict()]}, self.lb.config)
        self.lb.pool = wanted_pool(self.lb.pool, self.lb.config, change)


def run(style: str, seed: int, capacity: int = 64) -> tuple[list[str], str, dict]:
    """The scenario's traffic in the driver's order (2 clients x 200 flows x 3 packets, each
    round in a fresh order, 20 TCP flows among them), then the grader's probe; returns
    ``score_eviction``'s verdict and the facts."""
    rnd = random.Random(seed)
    lb = Replay(style, capacity)
    vip = ip_to_int(TOPO.vip)
    client_records, flows, rounds = [], {}, []
    for c in TOPO.client_names():
        base = int(c[1:]) * 1_000_000
        ports = rnd.sample(range(32768, 61000), 200)
        client_records.append(
            {
                "client": int(c[1:]),
                "udp": [{"flow_id": base + i, "src_port": p} for i, p in enumerate(ports)],
            }
        )
        for i, p in enumerate(ports):
            flows[base + i] = FiveTuple(ip_to_int(TOPO.host_ip(c)), vip, p, SERVICE_PORT, 17)
        order, sequence = list(range(200)), []
        for r in range(3):
            if r:
                rnd.shuffle(order)
            sequence += [base + i for i in order]
        rounds.append(sequence)
    events = [x for pair in zip(*rounds) for x in pair]
    for k in sorted(rnd.sample(range(len(events)), 20), reverse=True):  # HTTP connections
        port = rnd.randrange(32768, 61000)
        events.insert(k, FiveTuple(ip_to_int(TOPO.host_ip("c1")), vip, port, SERVICE_PORT, 6))
    spans: dict[int, dict] = {}

    def deliver(flow_id: int, flow: FiveTuple) -> None:
        where = lb.backend(flow)
        first, _, n = spans.setdefault(flow_id, {}).get(where, (lb.now, 0, 0))
        spans[flow_id][where] = (first, lb.now, n + 1)

    for e in events:
        if isinstance(e, int):
            deliver(e, flows[e])
        else:
            lb.backend(e)
    grown = BackendPool(BACKENDS)
    known = known_flows(client_records, spans, TOPO, grown, SCENARIO["flow_capacity"])
    touched, old = choose_flows(known, RECENT_FLOWS, SCENARIO["old_flows"])
    for group, chosen in (("touch", touched), ("recent", touched), ("old", old[::-1])):
        if group == "recent":
            lb.grow()
        for f in chosen:
            for _ in range(2):
                deliver(f.flow_id + ID_OFFSET[group], flows[f.flow_id])
    facts = {
        "joined": BACKENDS[-1].name,
        "capacity": 64,
        "flows_known": len(known),
        "udp_flows": 400,
        "idle_gap_s": 2.0,
        **{
            g: judge_resends(touched if g != "old" else old, spans, g)
            for g in ("touch", "recent", "old")
        },
    }
    problems, summary = score_eviction(facts, SCENARIO)
    return problems, summary, facts


@pytest.mark.parametrize("style", ["table", "vector"])
@pytest.mark.parametrize("seed", range(5))
def test_a_bounded_table_passes(style, seed):
    """The reference's flow state, per packet (FlowTable: LRU) and per burst (lab 3's two-way
    cache): every old flow the grown pool places elsewhere is re-placed, no touched flow moves."""
    problems, summary, facts = run(style, seed)
    assert not problems, problems
    old, recent = facts["old"], facts["recent"]
    assert old["differ"] >= 40 and old["grown"] == old["differ"], old
    assert recent["home"] == recent["sent"] == RECENT_FLOWS, recent
    assert f"{old['grown']} of {old['grown']} old flows re-placed" in summary


@pytest.mark.parametrize("seed", range(3))
def test_a_table_that_never_evicts_fails_with_what_was_seen(seed):
    problems, _, facts = run("table", seed, capacity=1_000_000)
    (problem,) = problems
    assert problem.startswith(f"0 of {facts['old']['differ']} old flows re-placed"), problem
    assert "the table kept all 400 flows with flow_capacity 64: it never evicts" in problem
    assert "sent again it reached" in problem  # an example flow, where it went


@pytest.mark.parametrize("capacity, passes", [(128, True), (512, False)])
def test_what_counts_is_forgetting_the_oldest_flows(capacity, passes):
    """The oldest 200 of 420 flows: a table twice too big has forgotten them too (lab 1's unit
    checks judge the exact capacity); one that holds all 420 has not."""
    assert (not run("table", 0, capacity=capacity)[0]) == passes


@pytest.mark.parametrize("seed", range(3))
def test_no_table_fails_on_the_recent_flows(seed):
    """Maglev per packet re-places the old flows too, but the flows it just saw move as well."""
    problems, _, facts = run("stateless", seed)
    assert facts["recent"]["grown"] == RECENT_FLOWS
    assert any("recently used flows" in p and "moved" in p for p in problems), problems


def test_missing_facts_and_a_late_resend_are_problems():
    assert score_eviction(None, SCENARIO)[0]
    _, _, facts = run("table", 0)
    late = dict(facts, idle_gap_s=301.0)
    problems, _ = score_eviction(late, SCENARIO)
    assert problems and problems[0].startswith("grader problem")
