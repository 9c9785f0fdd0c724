"""vnflab bench --http: wrk's report parsed, the verdict's rules, and short real runs."""

import json
import subprocess
import sys

import pytest

from bench import http
from bench.spec import GEN_CPU, LB_CPU

# Real wrk 4.1.0 reports (to a backend on the loopback): one clean, one all 4xx.
WRK_CLEAN = """Running 1s test @ http://127.0.0.1:18089/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   625.99us  618.61us   8.18ms   93.93%
    Req/Sec    46.54k     5.41k   56.04k    65.00%
  Latency Distribution
     50%  514.00us
     75%  587.00us
     90%  820.00us
     99%    3.81ms
  92639 requests in 1.00s, 12.63MB read
Requests/sec:  92222.61
Transfer/sec:     12.58MB
"""
WRK_4XX = """Running 1s test @ http://127.0.0.1:18089/?size=abc
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   416.66us    1.09ms  11.64ms   91.37%
    Req/Sec    23.49k     9.64k   34.16k    60.00%
  Latency Distribution
     50%   62.00us
     75%  113.00us
     90%    1.25ms
     99%    5.68ms
  23346 requests in 1.00s, 3.63MB read
  Socket errors: connect 0, read 3, write 0, timeout 12
  Non-2xx or 3xx responses: 23346
Requests/sec:  23323.82
Transfer/sec:      3.63MB
"""


def test_wrk_report_parsed():
    r = http.parse_wrk(WRK_CLEAN)
    assert r["requests"] == 92639 and r["seconds"] == pytest.approx(1.0)
    assert r["requests_per_s"] == pytest.approx(92222.61)
    assert r["latency_p50_ms"] == pytest.approx(0.514)
    assert r["latency_p99_ms"] == pytest.approx(3.81)
    assert r["transfer_bytes_per_s"] == pytest.approx(12.58 * 2**20)
    assert r["bytes_read"] == pytest.approx(12.63 * 2**20)
    assert r["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    assert r["non_2xx_3xx"] == 0
    bad = http.parse_wrk(WRK_4XX)
    assert bad["non_2xx_3xx"] == 23346 == bad["requests"]
    assert bad["socket_errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 12}
    assert bad["latency_p50_ms"] == pytest.approx(0.062)
    with pytest.raises(ValueError):
        http.parse_wrk("unable to connect to 10.0.0.100:8080 Connection refused\n")
    assert http.latency_ms("1.50s") == 1500.0 and http.binary_bytes("512.00B") == 512.0


def _used(lb=0.5, softirq=0.0, busy=(0.5, 0.5), backends=0.1, wrk=0.2, lb_busy=None, **kw):
    cores = [{"busy": 0.0, "softirq": 0.0, "steal": 0.0} for _ in range(2)]
    cores[GEN_CPU]["busy"] = busy[GEN_CPU]
    cores[LB_CPU].update(busy=busy[LB_CPU], softirq=softirq)
    cpu = {"lb": lb, "wrk": wrk, "b1": backends, "b2": backends / 2, "b3": backends / 2}
    if "switch" in kw:
        cpu["switch"] = kw["switch"]
    return {
        "cpu": cpu,
        "cores": cores,
        "lb_busy": lb_busy,
        "switch_busy": kw.get("switch_busy"),
    }


BACKENDS = ["b1", "b2", "b3"]


def test_the_verdict_follows_its_rules():
    def verdict(polling=False, **kw):
        return http.figures(_used(**kw), BACKENDS, polling)

    # the LB's process and the softirq its sends cause on its core fill that core
    f = verdict(lb=0.7, softirq=0.25, busy=(0.6, 1.0))
    assert f["lb_share"] == pytest.approx(0.95) and f["bound_by"] == "the LB"
    # ... capped at the core's busy share (softirq counted in both without IRQ accounting)
    assert verdict(lb=0.7, softirq=0.25, busy=(0.6, 0.8))["lb_share"] == pytest.approx(0.8)
    assert (
        verdict(lb=0.95, busy=(1.0, 0.95), backends=0.7)["bound_by"]
        == "the LB, backends close behind; CPU 0 full too"
    )
    assert verdict(lb=0.3, backends=0.95, busy=(1.0, 0.3))["bound_by"] == "the backends"
    assert verdict(lb=0.3, wrk=0.92, busy=(1.0, 0.3))["bound_by"] == "the client"
    # CPU 0 full: with our parts, or with someone else's
    full = verdict(lb=0.3, wrk=0.5, backends=0.2, busy=(0.97, 0.3))
    assert full["bound_by"] == "CPU 0: client and backends"
    assert verdict(lb=0.3, wrk=0.1, backends=0.1, busy=(0.97, 0.3))["bound_by"] == (
        "CPU 0: other work"
    )
    assert verdict(lb=0.3, busy=(0.5, 0.99))["bound_by"] == "CPU 1: other work"
    assert verdict(lb=0.3, busy=(0.5, 0.4))["bound_by"] == "none: idle cores"
    # DPDK: a poller's empty polls are no work; its busy share is its share
    dpdk = verdict(
        polling=True,
        lb=1.0,
        lb_busy=0.3,
        busy=(1.0, 1.0),
        switch=0.6,
        switch_busy=0.2,
        wrk=0.2,
        backends=0.1,
    )
    assert dpdk["lb_share"] == 0.3 and dpdk["switch_share"] == 0.2
    assert dpdk["cores_work"] == [pytest.approx(0.6), pytest.approx(0.3)]
    assert dpdk["bound_by"] == "none: idle cores"
    assert dpdk["busiest_backend"] == "b1" and dpdk["busiest_backend_share"] == 0.1


def test_http_flags_are_checked(monkeypatch):
    """Packet-bench flags and fractional wrk durations are refused before anything runs."""
    from testbed import sandbox
    from vnflab import cli

    ran = []
    monkeypatch.setattr(sandbox, "can_sandbox", lambda: None)
    monkeypatch.setattr(http, "run_http_bench", lambda *a, **k: ran.append(a) or {})
    assert cli.main(["bench", "--http", "--batch", "8"]) == 2
    assert cli.main(["bench", "--http", "--runs", "3"]) == 2
    assert cli.main(["bench", "--http", "--seconds", "1.5"]) == 2
    assert cli.main(["bench", "--http", "--connections", "1"]) == 2  # fewer than threads
    assert not ran
    args = cli.build_parser().parse_args(["bench", "--way", "all"])
    assert cli.bench_ways(args) == ["socket", "afpacket", "dpdk"]


def test_a_way_that_did_not_run_says_why(tmp_path):
    from vnflab import cli

    result = {
        "kind": "http",
        "spec": {"seconds": 5},
        "machine": {"cores": 2, "loadavg_at_start": [0.1, 0.2, 0.3]},
        "ways": [{"way": "dpdk", "error": "not available: no huge pages\nmore"}],
    }
    text = http.table(result)
    assert "dpdk  not available: no huge pages" in text and "dpdk: not available" in text
    assert "load average at the start: 0.1 0.2 0.3" in text
    path = tmp_path / "http.json"
    path.write_text(json.dumps(result))
    assert cli.main(["results", str(path)]) == 2  # no packet-bench page from it


def run_http_bench_cli(way: str, tmp_path) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / f"http-{way}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "vnflab.cli", "bench", "--http", "--way", way, "--seconds", "1"]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def check_way(w: dict, way: str) -> None:
    """A way's entry holds real numbers, and its requests were answered 200."""
    assert w["way"] == way and "error" not in w, w.get("error")
    wrk = w["wrk"]
    assert wrk["requests"] > 0 and wrk["requests_per_s"] > 0
    assert 0 < wrk["latency_p50_ms"] <= wrk["latency_p99_ms"]
    assert wrk["non_2xx_3xx"] == 0
    assert w["first_answer"] == "200" and w["lb_alive"]
    assert w["lb_stats"]["exit_code"] == 0  # it stopped cleanly on SIGTERM
    # every request wrk completed was answered 200 by a backend (a few more may have been in
    # flight when wrk stopped)
    assert sum(w["answered_200"].values()) >= wrk["requests"]
    assert set(w["backend_shares"]) == {"b1", "b2", "b3"}
    shares = [w["lb_share"], w["wrk_share"], *w["backend_shares"].values()]
    assert all(isinstance(x, float) and 0 <= x <= 2 for x in shares), shares
    assert w["lb_share"] > 0 and w["wrk_share"] > 0  # both did work in the window
    assert len(w["cores"]) >= 2 and all(0 <= c["busy"] <= 1 for c in w["cores"])
    prefixes = ("the LB", "the backends", "the client", "CPU ", "none: idle cores")
    assert w["bound_by"].startswith(prefixes)
    assert w["window_s"] > 0.3


@pytest.mark.network
@pytest.mark.slow
def test_http_bench_socket_short(tmp_path):
    wrk_before = subprocess.run(["pgrep", "-x", "wrk"], capture_output=True, text=True).stdout
    proc, result = run_http_bench_cli("socket", tmp_path)
    assert "req/s" in proc.stdout and "bound by" in proc.stdout and "Method:" in proc.stdout
    (w,) = result["ways"]
    check_way(w, "socket")
    assert w["lb_busy_share"] is None and w["lb_softirq_share"] is not None
    assert w["lb_io"] == {}  # the socket way's reference has no io options
    row = next(line for line in proc.stdout.splitlines() if line.startswith("socket "))
    assert f"{w['wrk']['requests_per_s']:.0f}" in row and w["bound_by"] in row
    assert result["command"].startswith("vnflab bench --http --way socket")
    assert result["machine"]["cores"] >= 1 and result["machine"]["kernel"]
    assert len(result["machine"]["loadavg_at_start"]) == 3
    assert "wrk -t2 -c50 -d1s" in result["method"] and http.BOUND_BY_RULES in result["method"]
    wrk_after = subprocess.run(["pgrep", "-x", "wrk"], capture_output=True, text=True).stdout
    assert set(wrk_after.split()) <= set(wrk_before.split())  # the sandbox took wrk with it


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("way", ["afpacket", pytest.param("dpdk", marks=pytest.mark.dpdk)], ids=str)
def test_http_bench_raw_ways_short(way, tmp_path):
    _, result = run_http_bench_cli(way, tmp_path)
    (w,) = result["ways"]
    check_way(w, way)
    if way == "dpdk":  # a poller: its busy share, and the switch's
        assert isinstance(w["lb_busy_share"], float) and isinstance(w["switch_share"], float)
        assert w["lb_io"] == {"style": "fused"}
    else:
        assert w["lb_io"]["style"] == "vector"
