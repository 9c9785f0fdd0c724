"""Issue 7 scenarios end to end, each in its own sandbox (``vnflab scenario NAME --quick``).

Each test asserts the scenario's own verdict and the figures it rests on, so a scenario whose
check silently stopped measuring anything would fail here too.
"""
import pytest

from vnflab.scenarios.runner import run_scenario

pytestmark = [pytest.mark.network, pytest.mark.slow]


def _run(name):
    result = run_scenario(name, quick=True)
    assert "error" not in result, result.get("error")
    failed = [c for c in result["checks"] if not c["ok"]]
    assert result["ok"] and not failed, failed
    return result["figures"]


def test_health_moves_only_the_dead_backends_flows():
    f = _run("health")
    assert f["on_dead_backend"] > 0 and f["moved"] == f["on_dead_backend"]
    assert f["moved_from_live_backends"] == 0
    assert f["new_flows_per_backend"]["b2"] == 0 and f["new_flows_per_backend"]["b3"] == 0
    assert f["drained_flows_continued"] == f["drained_flows"] > 0


def test_ecmp_tier_maglev_keeps_flows_roundrobin_breaks_them():
    runs = _run("ecmp")
    for event in ("add", "remove"):
        assert runs[f"{event}-maglev"]["changed_lb"] > 0          # the route change moved flows
        assert runs[f"{event}-maglev"]["broken"] == runs[f"{event}-hash"]["broken"] == 0
        assert runs[f"{event}-roundrobin"]["broken"] > 0
    maglev, hashed = runs["backend-maglev"], runs["backend-hash"]
    assert maglev["broken_survivor_fraction"] < hashed["broken_survivor_fraction"]


def test_sdn_steering_puts_the_vnf_on_the_path():
    f = _run("sdn")
    assert f["off"]["lb_new_flows"] == 0 and f["off"]["steering_rule_packets"] is None
    assert f["on"]["lb_new_flows"] == f["on"]["flows_seen"] > 0
    assert f["on"]["steering_rule_packets"] >= f["on"]["packets_sent"]
