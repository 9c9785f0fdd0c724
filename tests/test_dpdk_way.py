"""Way 3: the DPDK LB. The vectorised decision (LoadBalancer.backends_for_batch) against
backend_for, then end to end behind OVS-DPDK vhost-user in the Mininet topology with real HTTP
and UDP clients, for run to completion and pipeline (and the per-packet style once)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vnf.backends import Backend
from vnf.hashing import flow_hash
from vnf.lb import LBConfig, LoadBalancer
from vnf.packet import FiveTuple

VIP = 0x0A000064
BACKENDS = [
    Backend(f"b{i}", f"10.0.0.{100 + i}", f"02:00:00:00:02:{i:02x}", 8080) for i in (1, 2, 3, 4)
]


def _flows(n, seed=7):
    rng = np.random.default_rng(seed)
    return [
        FiveTuple(
            int(rng.integers(1, 2**32)),
            VIP,
            int(rng.integers(1024, 65536)),
            8080,
            int(rng.choice([6, 17])),
        )
        for _ in range(n)
    ]


def _distinct_slots(flows, capacity=65536):
    from vnf.batch import BatchFlowCache

    cache = BatchFlowCache(capacity, 30.0)
    seen, out = set(), []
    for f in flows:
        s = cache.slot(flow_hash(f))
        if s not in seen:
            seen.add(s)
            out.append(f)
    return out


COLUMNS = np.dtype(
    [("hash", "<u4"), ("reason", "u1"), ("dst_ip", "<u4"), ("dst_port", "<u2"), ("proto", "u1")]
)


def _batched(lb, packets, valid=None, burst=32, now=0.0):
    """backends_for_batch over the packets, burst by burst; invalid ones are not for the VIP."""
    valid = np.ones(len(packets), bool) if valid is None else np.asarray(valid, bool)
    cols = np.zeros(len(packets), COLUMNS)  # parsed packets, as the ring's records hold them
    cols["hash"] = [flow_hash(f) for f in packets]
    cols["dst_ip"] = np.where(valid, VIP, VIP + 1)
    cols["dst_port"] = [f.dst_port for f in packets]
    cols["proto"] = [f.proto for f in packets]
    out = []
    for i in range(0, len(packets), burst):
        chunk = cols[i : i + burst]
        out += lb.backends_for_batch(chunk, len(chunk), now).tolist()
    return out


@pytest.mark.parametrize("policy", ["maglev", "hash", "roundrobin"])
def test_batch_gives_what_backend_for_gives_per_flow(policy):
    cfg = LBConfig(vip="10.0.0.100", port=8080, backends=BACKENDS, policy=policy)
    ref, vec = LoadBalancer(cfg), LoadBalancer(cfg)
    flows = _distinct_slots(_flows(2500))
    rng = np.random.default_rng(1)
    packets = [flows[i] for i in rng.integers(0, len(flows), 20000)]
    expected = [ref.pool.index_of(ref.backend_for(f, 0.0)) for f in packets]
    assert _batched(vec, packets) == expected
    for key in ("packets", "forwarded", "new_flows", "assigned"):
        assert vec.stats()[key] == ref.stats()[key], key
    assert vec.batch_cache.stats()["size"] == len(set(packets))


def test_batch_collisions_evict_but_maglev_keeps_the_backend():
    cfg = LBConfig(vip="10.0.0.100", port=8080, backends=BACKENDS, flow_capacity=64)
    ref, vec = LoadBalancer(cfg), LoadBalancer(cfg)
    flows = _flows(500)  # 500 flows, 64 slots: many collisions
    packets = flows * 3
    expected = [ref.pool.index_of(ref.pool.choose(f)) for f in packets]
    assert _batched(vec, packets) == expected  # evicted flows map back the same
    assert vec.batch_cache.capacity == 64 and vec.batch_cache.evictions > 0


def test_batch_drops_invalid_and_moves_flows_off_a_failed_backend():
    cfg = LBConfig(vip="10.0.0.100", port=8080, backends=BACKENDS)
    lb = LoadBalancer(cfg)
    flows = _distinct_slots(_flows(400))
    valid = [i % 5 != 0 for i in range(len(flows))]
    first = _batched(lb, flows, valid)
    assert all((c == -1) == (not v) for c, v in zip(first, valid))
    assert lb.forwarded == sum(valid) and lb.new_flows == sum(valid)
    assert lb.packets == len(flows) and lb.dropped["not-for-vip"] == len(flows) - sum(valid)
    again = _batched(lb, flows, valid, now=1.0)
    assert again == first and lb.new_flows == sum(valid)
    lb.pool.set_health("b2", False)
    b2 = lb.pool.index_of(lb.pool.get("b2"))
    moved = _batched(lb, flows, valid, now=2.0)
    for before, after in zip(first, moved):
        assert after != b2
        if before not in (-1, b2):
            assert after == before  # flows of healthy backends stay
    assert lb.reassigned == sum(1 for c in first if c == b2)
    assert lb.expire(100.0) == sum(valid)  # idle flows are swept


def test_bad_style_is_a_config_error(tmp_path):
    cfg = tmp_path / "lb.json"
    cfg.write_text(
        json.dumps(
            {
                "lb": {
                    "vip": "10.0.0.100",
                    "port": 8080,
                    "backends": [
                        {"name": "b1", "ip": "10.0.0.101", "mac": "02:00:00:00:02:01", "port": 8080}
                    ],
                },
                "io": {"style": "fast", "vhost_socket": "/nonexistent.sock"},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "vnf.ways.dpdk_lb", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("style:"), proc.stderr


@pytest.mark.network
@pytest.mark.dpdk
@pytest.mark.slow
@pytest.mark.parametrize(
    "model, style, lcores",
    [
        ("rtc", "vector", 1),
        ("pipeline", "vector", 1),
        ("rtc", "perpacket", 1),
        ("rtc", "fused", 1),
        ("pipeline", "vector", 2),
    ],
)
def test_dpdk_lb_behind_ovs_dpdk_keeps_affinity(model, style, lcores):
    from testbed.experiment import ExperimentSpec, run_sandboxed

    spec = ExperimentSpec(
        way="dpdk",
        clients=2,
        backends=3,
        udp_flows=400,
        packets_per_flow=3,
        rate_pps=2000,
        http_conns=30,
        lb_extra={"model": model, "style": style, "lcores": lcores},
        cost_rate_pps=0,
        saturation_seconds=0,
        timeout_s=240,
    )
    result = run_sandboxed(spec)
    assert "error" not in result, result
    assert result["lb_alive_after_traffic"], result.get("lb_log_tail")
    assert result["split_flows"] == 0, result["report_table"]
    assert result["flows"]["seen"] == 430
    assert result["http"]["failures"] == 0, result["http"]  # real TCP (curl-like) via DSR
    assert result["lost"]["forward"] == 0 and result["lost"]["return"] == 0, result["lost"]
    assert all(b["flows"] > 0 for b in result["per_backend"].values())
    stats = result["lb_stats"]
    assert (stats["model"], stats["style"], stats["lcores"]) == (model, style, lcores)
    assert stats["mac"] == "02:00:00:00:00:01"
    assert stats["busy"]["ns_per_packet"] > 0
    assert stats["lb"]["forwarded"] >= 1200


@pytest.mark.network
@pytest.mark.dpdk
@pytest.mark.slow
def test_curl_reaches_a_backend_through_ovs_dpdk(tmp_path):
    """curl itself, from a Mininet client, through OVS-DPDK and the DPDK LB (DSR)."""
    import shutil

    if not shutil.which("curl"):
        pytest.skip("curl not installed")
    code = r"""
import json, os, sys, time
from testbed import sandbox
sandbox.setup_inside()
from testbed.experiment import ExperimentSpec, Testbed
bed = Testbed(ExperimentSpec(way="dpdk", clients=1, backends=2), sys.argv[1])
try:
    lb = bed.start_lb("curl")
    outs = [bed.net["c1"].cmd("curl -s -m 5 -H 'X-Flow-Id: %d' http://10.0.0.100:8080/" % i)
            for i in range(5)]
    stats = lb.stop()
    print("RESULT " + json.dumps({"outs": outs, "forwarded": stats["lb"]["forwarded"]}))
finally:
    bed.close()
"""
    from testbed import sandbox

    proc = sandbox.run(
        [sys.executable, "-c", code, str(tmp_path)], timeout=180, capture_output=True
    )
    out = proc.stdout.decode()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, out[-2000:] + proc.stderr.decode()[-3000:]
    res = json.loads(lines[-1][7:])
    assert all(o.strip() for o in res["outs"]), res
    assert res["forwarded"] > 0
