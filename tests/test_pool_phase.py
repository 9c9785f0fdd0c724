"""The grader's pool-change phase, scored from facts (the run itself: tests/test_pool_changes.py
drives the same testbed.poolchange code against real LBs)."""

import pytest

from grader.pool_phase import change_plans, lb_counts, score_pool_changes
from testbed.checker import judge_pool_change


def facts_from(records_by_kind, alive=True):
    out = {}
    for kind, (backend, records, recovered) in records_by_kind.items():
        report = judge_pool_change(records, kind, backend, 10.0, 1.0, recovered)
        out[kind] = {
            "ready": True,
            "error": None,
            "alive_after": alive,
            "report": report.to_json(),
            "table": report.table(),
        }
    return out


def recs(**flows):
    return [
        {
            "backend": b,
            "flows": [
                {"proto": "udp", "flow_id": f, "packets": 5, "first_t": a, "last_t": z}
                for f, a, z in spans
            ],
        }
        for b, spans in flows.items()
    ]


GOOD = {
    "add": ("b3", recs(b1=[(1, 1, 19), (2, 12, 13)], b3=[(3, 12, 13)]), None),
    "drain": ("b2", recs(b1=[(1, 1, 19), (3, 12, 13)], b2=[(2, 1, 19)]), None),
    "fail": ("b2", recs(b1=[(1, 1, 19), (2, 10.2, 19)], b2=[(2, 1, 10.1)], b3=[(3, 12, 13)]), 14.0),
}
STATELESS = dict(
    GOOD,
    drain=("b2", recs(b1=[(1, 1, 19), (3, 12, 13)], b2=[(2, 1, 9.9)], b3=[(2, 10.1, 19)]), None),
)


def test_every_kind_right_scores_full():
    score, message = score_pool_changes(facts_from(GOOD), 15)
    assert score == 15, message
    assert message.count(": OK") == 3


def test_a_broken_kind_loses_its_third_and_says_why():
    score, message = score_pool_changes(facts_from(STATELESS), 15)
    assert score == 10
    assert "drain b2: FAIL" in message and "flows on the drained b2 stay there" in message
    assert "flow 2: b2 5 pkts" in message  # the offending flow, with its times
    assert "flow table" in message  # the hint


def test_a_dead_or_missing_lb_scores_nothing():
    assert score_pool_changes(facts_from(GOOD, alive=False), 15)[0] == 0
    score, message = score_pool_changes({"add": {"ready": False, "error": "exited 1"}}, 15)
    assert score == 0
    assert "add: the LB did not start: exited 1" in message
    assert "drain: not run" in message


def test_change_plans_follow_the_topology():
    add, drain, fail = change_plans(["b1", "b2", "b3"], {"long_seconds": 9.0})
    assert (add.kind, add.backend, add.configured(["b1", "b2", "b3"])) == (
        "add",
        "b3",
        ["b1", "b2"],
    )
    assert (drain.backend, fail.backend, fail.long_seconds) == ("b2", "b2", 9.0)
    for p in (add, drain, fail):
        p.validate(["b1", "b2", "b3"])
    with pytest.raises(ValueError, match="at least 3 backends"):
        change_plans(["b1", "b2"])


def test_a_failed_kind_shows_the_lbs_own_counters_as_integers_only():
    """The LB's counters help read a failure (was the flow forgotten for room?) but are its
    own word: only small integers pass, and they never change the score."""
    stats = {
        "lb": {"new_flows": 109, "reassigned": "lots", "flow_table": {"misses": 0}},
        "flow_cache": [{"misses": 100, "evictions": 1}, {"misses": 9, "evictions": 0}, "junk"],
    }
    counts = lb_counts(stats)
    assert counts == {
        "new_flows": 109,
        "flow_table.misses": 0,
        "flow_cache.misses": 109,
        "flow_cache.evictions": 1,
    }
    assert lb_counts("not a dict") == {} and lb_counts({"lb": [1], "flow_cache": {}}) == {}
    facts = facts_from(STATELESS)
    facts["drain"]["lb_counts"] = counts
    score, message = score_pool_changes(facts, 15)
    assert score == 10
    assert "the LB's own counters (not judged): flow_cache.evictions 1" in message
