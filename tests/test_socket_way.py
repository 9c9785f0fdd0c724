"""Way 1 end to end in a real Mininet topology: real clients, real backends, the socket LB."""

import json
import os
import subprocess
import sys

import pytest

from testbed.experiment import ExperimentSpec, run_sandboxed

pytestmark = [pytest.mark.network, pytest.mark.slow]
HERE = os.path.dirname(os.path.abspath(__file__))


def small_spec(**kw):
    base = dict(
        way="socket",
        clients=2,
        backends=3,
        udp_flows=400,
        packets_per_flow=3,
        rate_pps=3000,
        http_conns=40,
        cost_rate_pps=3000,
        cost_seconds=1.0,
        saturation_seconds=0,
        timeout_s=150,
    )
    base.update(kw)
    return ExperimentSpec(**base)


def test_socket_lb_keeps_affinity_and_reaches_every_backend():
    result = run_sandboxed(small_spec())
    assert "error" not in result, result
    assert result["split_flows"] == 0, result["report_table"]
    assert result["flows"]["seen"] == 440
    assert result["http"]["failures"] == 0, result["http"]
    assert result["lost"]["forward"] == 0 and result["lost"]["return"] == 0, result["lost"]
    assert all(b["flows"] > 0 for b in result["per_backend"].values()), result["per_backend"]
    assert len(result["per_backend"]) == 3
    assert result["lb_stats"]["lb"]["new_flows"] >= 400
    assert result["ns_per_packet"] and result["ns_per_packet"] > 0
    for key in ("way", "flows", "split_flows", "lost", "per_backend", "ns_per_packet", "method"):
        assert key in result


def test_checker_catches_a_per_packet_round_robin_lb():
    broken = [sys.executable, os.path.join(HERE, "broken", "per_packet_rr_lb.py")]
    result = run_sandboxed(
        small_spec(lb_command=broken, udp_flows=200, http_conns=0, cost_rate_pps=0)
    )
    assert "error" not in result, result
    assert result["split_flows"] > 150, result["report_table"]  # nearly every 3-packet flow splits
    assert result["ok"] is False


def test_demo_cli_writes_json_and_exits_zero(tmp_path):
    out = tmp_path / "out.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vnflab.cli",
            "demo",
            "--way",
            "socket",
            "--quick",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    for key in ("way", "flows", "split_flows", "lost", "per_backend", "ns_per_packet", "method"):
        assert key in doc
    assert doc["split_flows"] == 0
    assert "per-packet cost" in r.stdout and "affinity: OK" in r.stdout


def test_bad_config_gets_one_line_naming_the_field():
    r = subprocess.run(
        [sys.executable, "-m", "vnflab.cli", "demo", "--way", "socket", "--backends", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip().splitlines()[-1]
        == "vnflab demo: backends: must be a whole number from 1 to 150, got 0"
    )


def test_port_in_use_is_reported_by_the_lb(tmp_path):
    """Run the socket LB where its port is taken: exit 2 and one line naming the field."""
    from testbed import sandbox

    cfg = {
        "lb": {
            "vip": "127.0.0.1",
            "port": 8080,
            "subnet": None,
            "backends": [
                {"name": "b1", "ip": "127.0.0.2", "mac": "02:00:00:00:02:01", "port": 8080}
            ],
        },
        "io": {},
    }
    path = tmp_path / "lb.json"
    path.write_text(json.dumps(cfg))
    script = (
        "import socket, subprocess, sys;"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 8080));"
        "subprocess.run(['ip', 'link', 'set', 'lo', 'up']);"
        f"r = subprocess.run([sys.executable, '-m', 'vnf.ways.socket_lb', '--config', '{path}'],"
        " capture_output=True, text=True); print(r.returncode); print(r.stderr.strip())"
    )
    r = sandbox.run([sys.executable, "-c", script], timeout=30, capture_output=True, text=True)
    code, message = r.stdout.strip().splitlines()[-2:]
    assert code == "2", r
    assert message == "port: udp 127.0.0.1:8080 is already in use"


PLAIN_HTTP = r"""
import json, sys
from testbed import sandbox
sandbox.setup_inside()
from testbed.checker import check
from testbed.experiment import ExperimentSpec, Testbed
bed = Testbed(ExperimentSpec(way="socket", clients=2, backends=3), sys.argv[1])
try:
    lb = bed.start_lb("plain")
    curls = [bed.net["c1"].cmd("curl -s -m 5 -w ' %{http_code}' http://10.0.0.100:8080/")
             for _ in range(6)]
    clients = bed.drive("plain", udp_flows=200, packets_per_flow=3, rate_pps=2000,
                        http_conns=30)
    lb.stop()
    report = check(bed.backend_records(), clients)
    print("RESULT " + json.dumps({"curls": curls, "report": report.to_json(),
                                  "ips": {b: bed.net[b].IP() for b in ("b1", "b2", "b3")}}))
finally:
    bed.close()
"""


def test_plain_curl_gets_200_and_the_backend_name_and_driver_flows_still_check(tmp_path):
    """A student's first check (curl with no flow id) through the socket LB, on real hosts; the
    driver's flows in the same run still check out (plain requests are counted apart)."""
    from testbed import sandbox

    proc = sandbox.run(
        [sys.executable, "-c", PLAIN_HTTP, str(tmp_path)], timeout=180, capture_output=True
    )
    out = proc.stdout.decode()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, out[-2000:] + proc.stderr.decode()[-3000:]
    res = json.loads(lines[-1][7:])
    named = {f"{b} ({ip})" for b, ip in res["ips"].items()}
    for answer in res["curls"]:
        *body, code = answer.split()  # Mininet's cmd() turns \n into \r\n
        body = " ".join(body)
        assert code == "200" and body in named, res["curls"]
    report = res["report"]
    assert report["split_flows"] == 0 and report["ok"], report
    assert report["flows"]["seen"] == 230 and report["http"]["failures"] == 0
    assert report["anonymous"] == {"conns": 6, "requests": 6}
    assert report["malformed"] == 0
