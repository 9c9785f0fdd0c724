"""Issue 7 scenarios end to end, each in its own sandbox (``vnflab scenario NAME --quick``).

Each test asserts the scenario's own verdict and the figures it rests on, so a scenario whose
check silently stopped measuring anything would fail here too.
"""

import pytest

from vnflab.scenarios.runner import run_scenario


def _run(name):
    result = run_scenario(name, quick=True)
    assert "error" not in result, result.get("error")
    failed = [c for c in result["checks"] if not c["ok"]]
    assert result["ok"] and not failed, failed
    return result["figures"]


@pytest.mark.network
@pytest.mark.slow
def test_health_moves_only_the_dead_backends_flows():
    f = _run("health")
    assert f["on_dead_backend"] > 0 and f["moved"] == f["on_dead_backend"]
    assert f["moved_from_live_backends"] == 0
    assert f["new_flows_per_backend"]["b2"] == 0 and f["new_flows_per_backend"]["b3"] == 0
    assert f["drained_flows_continued"] == f["drained_flows"] > 0


@pytest.mark.network
@pytest.mark.slow
def test_ecmp_tier_maglev_keeps_flows_roundrobin_breaks_them():
    runs = _run("ecmp")
    for event in ("add", "remove"):
        assert runs[f"{event}-maglev"]["changed_lb"] > 0  # the route change moved flows
        assert runs[f"{event}-maglev"]["broken"] == runs[f"{event}-hash"]["broken"] == 0
        assert runs[f"{event}-roundrobin"]["broken"] > 0
    maglev, hashed = runs["backend-maglev"], runs["backend-hash"]
    assert maglev["broken_survivor_fraction"] < hashed["broken_survivor_fraction"]


@pytest.mark.network
@pytest.mark.slow
def test_sdn_steering_puts_the_vnf_on_the_path():
    f = _run("sdn")
    assert f["off"]["lb_new_flows"] == 0 and f["off"]["steering_rule_packets"] is None
    assert f["on"]["lb_new_flows"] == f["on"]["flows_seen"] > 0
    assert f["on"]["steering_rule_packets"] >= f["on"]["packets_sent"]


@pytest.mark.network
@pytest.mark.slow
def test_chain_firewall_denies_and_costs_are_measured():
    f = _run("chain")
    assert f["lb alone"]["c2_flows_at_backends"] > 0  # no firewall: c2 gets through
    for setup in ("chain, one process", "chain, two processes"):
        assert f[setup]["c2_flows_at_backends"] == 0 and f[setup]["c2_http_ok"] == 0
        assert f[setup]["ns_per_packet"] > 0
    assert f["chain, two processes"]["processes"] == 2


def test_firewall_rules_first_match_wins():
    from vnf.packet import FiveTuple, ip_to_int
    from vnflab.scenarios.firewall import Firewall

    fw = Firewall(
        [
            {"action": "deny", "src": "10.0.0.12/32"},
            {"action": "allow", "dst": "10.0.0.100/32", "dport": "8000-8100", "proto": "udp"},
        ]
    )

    def flow(src, dport, proto=17):
        return FiveTuple(ip_to_int(src), ip_to_int("10.0.0.100"), 40000, dport, proto)

    allowed = flow("10.0.0.11", 8080)
    assert fw.filter(
        [
            allowed,
            flow("10.0.0.12", 8080),
            flow("10.0.0.11", 9000),
            flow("10.0.0.11", 8080, 6),
            None,
        ]
    ) == [allowed, None, None, None, None]
    assert fw.filter([allowed])[0] == allowed and fw.evaluated == 4  # cached verdict
    with pytest.raises(ValueError):
        Firewall([{"action": "allow", "dport": "9-1"}])
