"""vnflab bench --way dpdk: a short real run (generator on vhost, the LB on virtio-user, testpmd io
as the baseline) writes the JSON keys with positive numbers."""

import json
import shutil
import subprocess
import sys

import pytest

from vnf import dpdk

pytestmark = [pytest.mark.network, pytest.mark.dpdk, pytest.mark.slow]


@pytest.mark.skipif(
    not dpdk.available() or not shutil.which("dpdk-testpmd"),
    reason="needs the DPDK binding and dpdk-testpmd",
)
def test_dpdk_bench_short_with_testpmd_baseline(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vnflab.cli",
            "bench",
            "--way",
            "dpdk",
            "--baseline",
            "testpmd",
            "--runs",
            "2",
            "--seconds",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "testpmd io" in proc.stdout and "Method:" in proc.stdout
    result = json.loads(out.read_text())
    (way,) = result["ways"]
    assert way["way"] == "dpdk" and not way.get("errors"), way
    for key in (
        "ns_per_packet",
        "mpps",
        "baseline_ratio",
        "perpacket_ns_per_packet",
        "testpmd_io_ns_per_packet",
        "testpmd_io_mpps",
        "binding_io_ns_per_packet",
        "saturation_ns_per_packet",
    ):
        assert way[key] is not None and way[key] > 0, (key, way[key])
    assert isinstance(way["cv"], float) and way["cv"] >= 0
    assert len(way["runs"]) == 2
    assert "busy" in result["method"] and "testpmd" in result["method"]


def test_dpdk_bench_rejects_an_unknown_baseline():
    from bench.spec import BenchSpec

    with pytest.raises(ValueError, match="baseline"):
        BenchSpec(ways=["dpdk"], baseline="pktgen").validate()
