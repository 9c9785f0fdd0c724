"""Way 2 end to end: the AF_PACKET LB (direct server return) with real HTTP and UDP clients."""
import pytest

from testbed.experiment import ExperimentSpec, run_sandboxed

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.mark.parametrize("mode, workers, tx", [("dsr", 1, "ring"), ("dsr", 2, "ring"),
                                               ("nat", 1, "ring"), ("nat", 2, "ring"),
                                               ("dsr", 1, "sendmmsg"), ("nat", 2, "sendmmsg")])
def test_afpacket_lb_keeps_affinity(mode, workers, tx):
    spec = ExperimentSpec(way="afpacket", clients=2, backends=3, udp_flows=600, packets_per_flow=3,
                          rate_pps=3000, http_conns=40,
                          lb_extra={"workers": workers, "mode": mode, "tx": tx},
                          cost_rate_pps=0, saturation_seconds=0, timeout_s=150)
    result = run_sandboxed(spec)
    assert "error" not in result, result
    assert result["lb_alive_after_traffic"], result.get("lb_log_tail")
    assert result["split_flows"] == 0, result["report_table"]
    assert result["flows"]["seen"] == 640
    assert result["http"]["failures"] == 0, result["http"]   # real TCP through DSR
    assert all(b["flows"] > 0 for b in result["per_backend"].values())
    assert result["lb_stats"]["workers"] == workers
    assert result["lost"]["forward"] == 0 and result["lost"]["return"] == 0, result["lost"]


def test_afpacket_lb_rejects_an_unknown_mode():
    spec = ExperimentSpec(way="afpacket", udp_flows=10, http_conns=0, lb_extra={"mode": "tunnel"},
                          cost_rate_pps=0, saturation_seconds=0, timeout_s=60)
    result = run_sandboxed(spec)
    assert "error" in result or result.get("lb_alive_after_traffic") is False


def test_afpacket_lb_survives_100k_fuzzed_frames_then_still_forwards():
    spec = ExperimentSpec(way="afpacket", clients=2, backends=3, udp_flows=100, packets_per_flow=2,
                          rate_pps=2000, http_conns=10, fuzz_frames=100_000,
                          cost_rate_pps=0, saturation_seconds=0, timeout_s=240)
    result = run_sandboxed(spec)
    assert "error" not in result, result
    rob = result["robustness"]
    assert rob["sent"]["sent"] >= 100_000, rob["sent"]
    assert rob["lb_alive_after_fuzz"] and rob["lb_alive_at_end"], rob["lb_log_tail"]
    assert rob["forwards_normal_flow"], rob["after"]
    dropped = rob["lb_dropped"]
    for reason in ("arp", "ipv6", "truncated-ip", "bad-ihl", "fragment", "unsupported-proto"):
        assert dropped.get(reason, 0) > 0, (reason, dropped)
