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


@pytest.mark.skipif(not dpdk.available(), reason="needs the DPDK binding")
def test_generator_counts_per_window_and_sees_back_pressure(tmp_path):
    """The generator's running totals (read from its shared memory while it sends) give what
    happened in a window: a peer forwarding everything takes and returns frames; a stopped
    peer (SIGSTOP: its ring fills) refuses every burst, which is back-pressure 1.0."""
    import os
    import signal
    import time

    from bench import binding_io
    from bench.spec import GEN_CPU, LB_CPU
    from testbed.dpdkgen import DpdkGenerator, window
    from testbed.process import expect_line, stop_process

    sock = str(tmp_path / "gen.sock")
    gen = DpdkGenerator(sock, cpu=GEN_CPU, log_path=str(tmp_path / "gen.log")).start()
    peer = None
    try:
        assert set(gen.counts().values()) == {0}  # nothing before go()
        peer = subprocess.Popen(
            binding_io.command(f"net_virtio_user0,path={sock},queues=1", 32, LB_CPU),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        expect_line(peer, "ready", "the binding io loop")
        gen.wait_ready()
        gen.go(2.5)
        time.sleep(0.3)
        a = gen.counts()
        time.sleep(0.5)
        b = gen.counts()
        flowing = window(a, b)
        os.kill(peer.pid, signal.SIGSTOP)
        time.sleep(0.2)  # its ring fills
        c = gen.counts()
        time.sleep(0.5)
        d = gen.counts()
        stopped = window(c, d)
        os.kill(peer.pid, signal.SIGCONT)
        whole = gen.result()
    finally:
        if peer is not None:
            os.kill(peer.pid, signal.SIGCONT)
            stop_process(peer, 10)
        gen.stop()
    assert flowing["sent"] > 10_000 and flowing["returned"] > 10_000, flowing
    assert flowing["tried"] >= flowing["sent"] and 0 <= flowing["back_pressure"] <= 1, flowing
    assert stopped["sent"] == 0 and stopped["returned"] == 0, stopped
    assert stopped["tried"] > 0 and stopped["back_pressure"] == 1.0, stopped
    for key in ("tx", "rx", "tried", "short", "bursts"):
        assert whole[key] >= d[key] >= c[key] >= b[key] >= a[key], (key, whole, a, b, c, d)
