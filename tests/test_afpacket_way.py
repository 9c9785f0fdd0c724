"""Way 2: the AF_PACKET LB end to end (direct server return) with real HTTP and UDP clients,
and its two forward styles on real rings (a veth pair in a sandbox)."""

import json
import os
import sys

import pytest

from testbed.experiment import ExperimentSpec, run_sandboxed

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.mark.parametrize(
    "mode, workers, tx",
    [
        ("dsr", 1, "ring"),
        ("dsr", 2, "ring"),
        ("nat", 1, "ring"),
        ("nat", 2, "ring"),
        ("dsr", 1, "sendmmsg"),
        ("nat", 2, "sendmmsg"),
    ],
)
def test_afpacket_lb_keeps_affinity(mode, workers, tx):
    spec = ExperimentSpec(
        way="afpacket",
        clients=2,
        backends=3,
        udp_flows=600,
        packets_per_flow=3,
        rate_pps=3000,
        http_conns=40,
        lb_extra={"workers": workers, "mode": mode, "tx": tx},
        cost_rate_pps=0,
        saturation_seconds=0,
        timeout_s=150,
    )
    result = run_sandboxed(spec)
    assert "error" not in result, result
    assert result["lb_alive_after_traffic"], result.get("lb_log_tail")
    assert result["split_flows"] == 0, result["report_table"]
    assert result["flows"]["seen"] == 640
    assert result["http"]["failures"] == 0, result["http"]  # real TCP through DSR
    assert all(b["flows"] > 0 for b in result["per_backend"].values())
    assert result["lb_stats"]["workers"] == workers
    assert result["lost"]["forward"] == 0 and result["lost"]["return"] == 0, result["lost"]


def test_afpacket_lb_rejects_an_unknown_mode():
    spec = ExperimentSpec(
        way="afpacket",
        udp_flows=10,
        http_conns=0,
        lb_extra={"mode": "tunnel"},
        cost_rate_pps=0,
        saturation_seconds=0,
        timeout_s=60,
    )
    result = run_sandboxed(spec)
    assert "error" in result or result.get("lb_alive_after_traffic") is False


def test_afpacket_lb_survives_100k_fuzzed_frames_then_still_forwards():
    spec = ExperimentSpec(
        way="afpacket",
        clients=2,
        backends=3,
        udp_flows=100,
        packets_per_flow=2,
        rate_pps=2000,
        http_conns=10,
        fuzz_frames=100_000,
        cost_rate_pps=0,
        saturation_seconds=0,
        timeout_s=240,
    )
    result = run_sandboxed(spec)
    assert "error" not in result, result
    rob = result["robustness"]
    assert rob["sent"]["sent"] >= 100_000, rob["sent"]
    assert rob["lb_alive_after_fuzz"] and rob["lb_alive_at_end"], rob["lb_log_tail"]
    assert rob["forwards_normal_flow"], rob["after"]
    dropped = rob["lb_dropped"]
    for reason in ("arp", "ipv6", "truncated-ip", "bad-ihl", "fragment", "unsupported-proto"):
        assert dropped.get(reason, 0) > 0, (reason, dropped)


# --- the forward styles on real rings (a scenario run in a sandbox, as test_afpacket_ring) ----


def scenario_styles_filter_alike(style):
    """The LB reads veth b0 through its rings; UDP and TCP frames to VIP:port arrive from a0.
    With protos=["udp"] the TCP ones are not for the service: dropped as not-for-vip."""
    from scapy.all import IP, TCP, UDP, Ether
    from test_afpacket_ring import MAC_A, MAC_B, make_veth, raw_sender

    from vnf.addresses import SERVICE_PORT, VIP
    from vnf.backends import Backend
    from vnf.lb import NOT_FOR_VIP, LBConfig
    from vnf.ways.afpacket_lb import AfPacketLB

    make_veth()
    backends = [
        Backend(f"b{i}", f"10.0.0.{101 + i}", f"02:00:00:00:01:{i:02x}", SERVICE_PORT)
        for i in range(3)
    ]
    program = AfPacketLB(
        LBConfig(protos=["udp"], backends=backends, table_size=251), {"iface": "b0", "style": style}
    )
    program.setup()
    forward = program.forward_vector if style == "vector" else program.forward_perpacket
    frames = []
    for i in range(40):
        l4 = UDP if i % 2 else TCP
        frames.append(
            bytes(
                Ether(src=MAC_A, dst=MAC_B)
                / IP(src="10.0.0.11", dst=VIP)
                / l4(sport=20000 + i, dport=SERVICE_PORT)
                / b"x"
            )
        )
    with raw_sender("a0") as gen:
        for f in frames:
            gen.send(f)
    seen = 0
    while seen < len(frames):
        batch = program.rx.next_batch(timeout_ms=2000)
        assert batch is not None, f"only {seen} of {len(frames)} frames arrived"
        seen += len(batch)
        forward(batch, 1.0)
        batch.release()
    program.rx.close()
    program.tx.close()
    s = program.lb.stats()
    print(
        json.dumps(
            {
                "forwarded": s["forwarded"],
                "not_for_vip": s["dropped"][NOT_FOR_VIP],
                "packets": s["packets"],
            }
        )
    )


@pytest.mark.network
@pytest.mark.parametrize("style", ["perpacket", "vector"])
def test_both_styles_drop_a_protocol_the_service_does_not_serve(style):
    """One filter for "is this for our service" (LoadBalancer.is_for_service): the per-packet
    style once balanced TCP that the vector style (and lb.handle_frame) dropped."""
    from test_afpacket_ring import run_scenario

    out = run_scenario("styles_filter_alike", style, script=__file__)
    assert out == {"forwarded": 20, "not_for_vip": 20, "packets": 40}, out


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    globals()["scenario_" + sys.argv[1]](*sys.argv[2:])
