"""vnflab bench: a short real bench of the socket way in a sandbox, and the pure helpers."""

import glob
import json
import os
import struct
import subprocess
import sys

import pytest

from bench import report, runner
from bench.dpdk import DpdkDriver
from bench.kernel import judge_whole_core, trafgen_config
from bench.machine import calibrate
from bench.spec import LB_CPU, BenchSpec, parse_io_options
from testbed.frames import udp_frame
from vnf.checksum import internet_checksum


def test_frames_have_correct_checksums():
    frame = udp_frame(
        "02:00:00:00:01:01",
        "02:00:00:00:00:01",
        "10.0.0.11",
        "10.0.0.100",
        10007,
        8080,
        b"VNFLBENCH".ljust(18, b"."),
    )
    assert len(frame) == 60
    ip, udp = frame[14:34], frame[34:]
    assert internet_checksum(ip) == 0  # header checksum verifies
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert internet_checksum(pseudo + udp) == 0  # UDP checksum verifies
    assert struct.unpack("!HH", udp[:4]) == (10007, 8080)
    cfg = trafgen_config([frame, frame])
    assert cfg.count("{") == 2 and "0x08, 0x00, 0x45" in cfg


def _level(offered, forwarded, busy=0.5, cpu=0.2):
    return {
        "offered": offered,
        "forwarded": forwarded,
        "offered_pps": offered,
        "seconds": 1.0,
        "core_busy_s": busy,
        "core_busy_ours_s": busy,
        "user_s": cpu / 2,
        "sys_s": cpu / 2,
    }


def test_whole_core_judgement():
    ok = judge_whole_core([_level(100, 100), _level(200, 199), _level(300, 250)])
    assert not ok["livelock"] and ok["whole_core_at_pps"] == 200
    assert ok["whole_core_ns_per_packet"] == pytest.approx(0.5 / 199 * 1e9)
    ll = judge_whole_core([_level(100, 100), _level(200, 199), _level(300, 90)])
    assert ll["livelock"] and ll["livelock_at"] == {
        "forwarded_pps": 199,
        "then_offered_pps": 300,
        "fell_to_pps": 90,
    }
    # the figure comes from below the collapse, where the LB kept up
    assert ll["whole_core_at_pps"] == 200
    # a level past the collapse that happens to keep up does not count
    late = judge_whole_core([_level(100, 100), _level(300, 50), _level(400, 390)])
    assert late["livelock"] and late["whole_core_at_pps"] == 100
    none = judge_whole_core([_level(100, 50), _level(200, 60)])
    assert not none["livelock"] and none["whole_core_ns_per_packet"] is None
    assert "none of the paced loads" in none["whole_core_note"]
    busy = judge_whole_core([_level(100, 100)], base_frac=0.9)
    assert busy["whole_core_ns_per_packet"] is None and "busy" in busy["whole_core_note"]


def test_calibration_is_pinned_and_leaves_the_affinity_as_it_was():
    before = os.sched_getaffinity(0)
    ms = calibrate(cpu=min(before))
    assert 0.1 < ms < 60_000
    assert os.sched_getaffinity(0) == before


def test_every_way_has_a_driver_that_is_available_here():
    drivers = runner.default_drivers()
    assert set(drivers) == {"socket", "afpacket", "dpdk"}
    for way, driver in drivers.items():
        assert driver.available(way) is None, way


def test_ratios_text():
    ways = [
        {"way": "socket", "batch": None, "ns_per_packet": 6000.0, "mpps": 0.1},
        {"way": "afpacket", "batch": 32, "ns_per_packet": 2000.0, "mpps": 0.3},
    ]
    r = report.ratios(ways)["afpacket(batch=32)/socket"]
    assert r["ns_per_packet"] == 3.0 and "3.0x cheaper" in r["text"]


def test_parse_io_options():
    assert parse_io_options("model=pipeline, lcores=2,queues=2,mem_mb=256,cpus=x") == {
        "model": "pipeline",
        "lcores": 2,
        "queues": 2,
        "mem_mb": 256,
        "cpus": "x",
    }
    assert parse_io_options("") == {}
    for bad in ("model", "=2", "lcores=1,lcores=2"):
        with pytest.raises(ValueError):
            parse_io_options(bad)
    for bad in ({"burst": 64}, {"vdev": "x"}, {"model": "smp"}, {"lcores": 0}, {"queues": "2"}):
        with pytest.raises(ValueError):
            BenchSpec(ways=["dpdk"], dpdk_io=bad).validate()
    # the LB opens max(queues, lcores) queue pairs (rtc: one per lcore; pipeline: 1 by default)
    assert DpdkDriver.lb_queues({}) == 1
    assert DpdkDriver.lb_queues({"model": "pipeline", "lcores": 2}) == 2
    assert DpdkDriver.lb_queues({"model": "rtc", "lcores": 1, "queues": 3}) == 3


def test_dpdk_io_flag_reaches_the_lb_io(monkeypatch):
    """`vnflab bench --dpdk-io` -> BenchSpec.dpdk_io -> merged into the DPDK LB's io, with the
    vdev (and so the generator) sized to the LB's queues. Nothing is started."""
    from testbed import sandbox
    from vnflab import cli

    seen = {}

    def fake_run_bench(spec, keep_workdir=None):
        seen["spec"] = spec
        return {"error": "not run (test)"}

    monkeypatch.setattr(sandbox, "can_sandbox", lambda: None)
    monkeypatch.setattr(runner, "run_bench", fake_run_bench)
    assert (
        cli.main(["bench", "--way", "dpdk", "--dpdk-io", "model=pipeline,lcores=2,queues=2"]) == 1
    )
    spec = seen["spec"]
    assert spec.ways == ["dpdk"] and spec.dpdk_io == {"model": "pipeline", "lcores": 2, "queues": 2}
    io = DpdkDriver().lb_io(spec, "/run/x.sock", "perpacket", 64)
    assert (io["model"], io["lcores"], io["queues"]) == ("pipeline", 2, 2)
    assert (io["style"], io["burst"], io["cpus"]) == ("perpacket", 64, [LB_CPU])
    assert "path=/run/x.sock,queues=2," in io["vdev"]
    assert "Extra LB io options" in DpdkDriver().method(spec, "none")
    plain = DpdkDriver().lb_io(BenchSpec(ways=["dpdk"]), "/run/x.sock", "vector", 32)
    assert "model" not in plain and "queues=1," in plain["vdev"]
    assert cli.main(["bench", "--way", "dpdk", "--dpdk-io", "lcores"]) == 2  # not key=value


FIXTURE = os.path.join(
    os.path.dirname(__file__), "bench_fixtures", "compare-socket-afpacket-dpdk.json"
)


def test_results_page_from_a_real_bench_json(tmp_path):
    """`vnflab results BENCH.json --out PAGE.md`: every figure on the page comes from the JSON
    (a real `vnflab bench --compare socket,afpacket,dpdk --baseline testpmd --runs 5` output)."""
    from vnflab import cli

    result = json.loads(open(FIXTURE).read())
    page_path = tmp_path / "results.md"
    assert cli.main(["results", FIXTURE, "--out", str(page_path)]) == 0
    page = page_path.read_text()
    m = result["machine"]
    for text in (
        result["date"],
        result["command"],
        m["cpu_model"],
        m["kernel"],
        f"{m['cores']} cores",
        result["method"],
        f"cv {m['calibration_cv']:.1%}",
    ):  # the machine's drift
        assert text in page, text
    for w in result["ways"]:  # one table row per way
        row = next(line for line in page.splitlines() if line.startswith(f"| {w['way']} |"))
        assert f"| {w['ns_per_packet']:.0f} |" in row and f"| {w['mpps']:.3f} |" in row
        assert f"| {w['cv']:.1%} |" in row
    for name, ratio in result["ratios"].items():
        assert ratio["text"] in page and f"| {name} | {ratio['ns_per_packet']} |" in page
    dpdk = next(w for w in result["ways"] if w["way"] == "dpdk")
    for key in ("vector_cv", "perpacket_cv", "testpmd_io_cv", "binding_io_cv"):
        assert f"cv {dpdk[key]:.1%}" in page, key  # each DPDK figure's spread, beside the drift
    assert f"cv {dpdk['fused_over_testpmd_cv']:.1%}" in page
    assert cli.main(["results", str(tmp_path / "missing.json")]) == 2


def test_terminal_method_is_short_and_the_json_keeps_it_all():
    result = json.loads(open(FIXTURE).read())
    brief = report.method_brief(result)
    assert brief.startswith("Method:") and 3 <= len(brief.splitlines()) <= 5
    assert len(result["method"]) > 2 * len(brief)
    table = report.table(result)
    assert "machine drift" in table and "dpdk(burst=32): fused (reference)" in table


def _sandbox_leftovers():
    return {
        "ifaces": sorted(os.path.basename(p) for p in glob.glob("/sys/class/net/*")),
        "bpf": sorted(glob.glob("/sys/fs/bpf/vnflab*")),
        "trafgen": subprocess.run(
            ["pgrep", "-x", "trafgen"], capture_output=True, text=True
        ).stdout.split(),
    }


@pytest.mark.network
@pytest.mark.slow
def test_socket_bench_short(tmp_path):
    before = _sandbox_leftovers()
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vnflab.cli",
            "bench",
            "--way",
            "socket",
            "--runs",
            "2",
            "--seconds",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ns/pkt" in proc.stdout and "Method:" in proc.stdout
    result = json.loads(out.read_text())
    # the terminal gets the method in a few lines; the JSON keeps all of it
    assert result["method"] not in proc.stdout and len(result["method"]) > 1000
    method_lines = proc.stdout[proc.stdout.index("Method:") :].splitlines()
    assert 3 <= len([line for line in method_lines if not line.startswith("(JSON")]) <= 5
    assert result["command"].startswith("vnflab bench --way socket") and result["date"]
    assert {"method", "machine", "ways", "ratios"} <= set(result)
    assert result["machine"]["cores"] >= 1 and result["machine"]["kernel"]
    # the machine's own drift, measured before each run, is printed next to the ways' CV
    assert result["machine"]["calibration_ms"] > 0
    assert isinstance(result["machine"]["calibration_cv"], float)
    assert "machine drift" in proc.stdout
    (way,) = result["ways"]
    for key in (
        "way",
        "ns_per_packet",
        "user_ns",
        "sys_ns",
        "mpps",
        "cv",
        "runs",
        "batch",
        "whole_core_ns_per_packet",
        "livelock",
    ):
        assert key in way, key
    assert way["way"] == "socket"
    assert way["ns_per_packet"] > 0 and way["mpps"] > 0
    assert isinstance(way["cv"], float)
    assert isinstance(way["livelock"], bool)
    assert len(way["runs"]) == 2 and all("error" not in r for r in way["runs"])
    assert result["sink"] == "port-drop"  # tc + BPF work on this machine kind
    after = _sandbox_leftovers()
    # the sandbox took every interface, pinned program and generator with it
    assert after["ifaces"] == before["ifaces"] or set(after["ifaces"]) <= set(before["ifaces"])
    assert set(after["bpf"]) <= set(before["bpf"])
    assert set(after["trafgen"]) <= set(before["trafgen"])


PACER_PROBE = r"""
import json, subprocess, sys, time
subprocess.run("ip link add pa type veth peer name pb && ip link set pa up && ip link set pb up",
               shell=True, check=True)
frames_path, rate = sys.argv[1], int(sys.argv[2])
gen = subprocess.Popen([sys.executable, "-m", "testbed.pacer", "pa", frames_path,
                        "--frame-len", "60", "--rate", str(rate)])
def tx():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("pa:"):
                return int(line.split(":")[1].split()[9])
time.sleep(0.3)
counts = []
t0 = time.monotonic()
for k in range(1, 101):                       # 100 slices of 10 ms
    while time.monotonic() < t0 + k * 0.01:
        time.sleep(0.0005)
    counts.append(tx())
gen.send_signal(2)
gen.wait(5)
print(json.dumps({"slices": [b - a for a, b in zip(counts, counts[1:])],
                  "seconds": time.monotonic() - t0, "exit": gen.returncode}))
"""


@pytest.mark.network
def test_pacer_sends_at_a_steady_rate_not_in_bursts(tmp_path):
    """The paced levels need a rate, not trafgen's one full-speed burst per second."""
    from testbed import sandbox

    if sandbox.can_sandbox():
        pytest.skip(sandbox.can_sandbox())
    frames = tmp_path / "frames.bin"
    frames.write_bytes(
        b"".join(
            udp_frame(
                "02:00:00:00:00:02",
                "02:00:00:00:00:01",
                "10.0.0.1",
                "10.0.0.100",
                10000 + i,
                8080,
                b"x" * 18,
            )
            for i in range(16)
        )
    )
    probe = tmp_path / "probe.py"
    probe.write_text(PACER_PROBE)
    rate = 50_000  # 500 frames per 10 ms slice
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = sandbox.run(
        [sys.executable, str(probe), str(frames), str(rate)],
        timeout=60,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    slices = out["slices"]
    assert out["exit"] == 0  # SIGINT stops it cleanly
    assert sum(slices) == pytest.approx(rate * 0.99, rel=0.15)
    # steady: most 10 ms slices near 500 frames; a burst would show as a few huge slices and
    # many empty ones
    near = sum(1 for n in slices if 250 <= n <= 750)
    assert near >= 0.8 * len(slices), slices
    assert max(slices) < 2000, slices
