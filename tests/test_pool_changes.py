"""Pool changes under live traffic, in a real topology: the reference LBs keep affinity across
add / drain / fail (+ recovery) because of their flow tables; a stateless LB (Maglev per
packet, tests/broken/stateless_lb.py) breaks the rules, and the judge says which and how often.
"""

import os
import sys

import pytest

from testbed.poolchange import QUICK_TIMING, PoolChangeSpec, run_sandboxed

pytestmark = [pytest.mark.network, pytest.mark.slow]
HERE = os.path.dirname(os.path.abspath(__file__))
PLANS = [
    {"kind": "add", "backend": "b4", **QUICK_TIMING},
    {"kind": "drain", "backend": "b2", **QUICK_TIMING},
    {"kind": "fail", "backend": "b2", **QUICK_TIMING},
]


def run(way, stateless=False, **extra):
    command = (
        [sys.executable, os.path.join(HERE, "broken", "stateless_lb.py"), way]
        if stateless
        else None
    )
    result = run_sandboxed(PoolChangeSpec(way=way, lb_command=command, lb_extra=extra, plans=PLANS))
    assert "error" not in result, result
    assert [r["plan"]["kind"] for r in result["results"]] == ["add", "drain", "fail"]
    for r in result["results"]:
        assert r["lb_alive"], r.get("lb_log_tail")
        assert r["lb_control"]["applied"] >= 2 and not r["lb_control"]["errors"], r["lb_control"]
    return {r["plan"]["kind"]: r for r in result["results"]}


def assert_passes(results):
    for _kind, r in results.items():
        report = r["report"]
        assert report["ok"], r["table"]
        assert report["flows"]["before"] >= 40 and report["flows"]["new"] >= 50, r["table"]


def broken(r, words):
    """The rule whose text contains ``words``: (judged, broken)."""
    [rule] = [x for x in r["report"]["rules"] if words in x["rule"]]
    return rule["judged"], rule["broken"]


def assert_stateless_caught(results):
    add, drain, fail = results["add"], results["drain"], results["fail"]
    judged, moved = broken(add, "flows from before keep their backend")
    assert judged >= 40 and moved >= 3, add["table"]  # ~1/4 move to the new b4
    judged, moved = broken(drain, "flows on the drained")
    assert judged >= 3 and moved == judged, drain["table"]  # all of b2's leave it
    judged, back = broken(fail, "flows on the failed")
    assert judged >= 3 and back == judged, fail["table"]  # all return to b2 when it is back
    for r in results.values():
        assert not r["report"]["ok"]
        _, split = broken(r, "new flows stay on one backend")
        assert split == 0, r["table"]  # per flow it is consistent: only a change shows it


@pytest.mark.extended
def test_socket_reference_keeps_flows_across_pool_changes():
    assert_passes(run("socket"))


def test_socket_stateless_lb_is_caught():
    assert_stateless_caught(run("socket", stateless=True))


@pytest.mark.extended
@pytest.mark.parametrize(
    "io", [{}, {"workers": 2, "style": "vector"}], ids=["perpacket", "vector-2-workers"]
)
def test_afpacket_reference_keeps_flows_across_pool_changes(io):
    """Vector style: the flow state is the BatchFlowCache, keyed by backend number; with two
    workers the SIGHUP is passed on, each worker applies the change to its own flow table."""
    assert_passes(run("afpacket", **io))


def test_afpacket_stateless_lb_is_caught():
    assert_stateless_caught(run("afpacket", stateless=True))


@pytest.mark.extended
@pytest.mark.dpdk
@pytest.mark.parametrize("style", ["vector", "fused"])
def test_dpdk_reference_keeps_flows_across_pool_changes(style):
    """The mac_table the C rewrite indexes grows for the added backend (prepare_for_pool);
    fused: the FlowKernel is rebuilt with it when the pool change bumps the cache version."""
    assert_passes(run("dpdk", style=style))


@pytest.mark.extended
@pytest.mark.dpdk
def test_dpdk_stateless_lb_is_caught():
    """The stateless LB needs the per-packet style (it overrides backend_for)."""
    assert_stateless_caught(run("dpdk", stateless=True, style="perpacket"))
