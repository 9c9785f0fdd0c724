"""Driver against real backend processes on loopback, then the checker on what they wrote."""

import json
import socket
import statistics
import subprocess
import sys

import pytest
from local_backends import start_backend, stop_backend

from testbed.checker import check
from testbed.traffic import HTTP_ID_OFFSET, TrafficConfig, run


@pytest.fixture
def two_backends(tmp_path):
    started = [
        start_backend(tmp_path, "b1", "127.0.0.2"),
        start_backend(tmp_path, "b2", "127.0.0.3"),
    ]
    yield started
    for proc, _info, _rec in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_driver_and_checker_end_to_end(two_backends):
    """Each client talks to one backend (no LB here), so nothing may be split or lost."""
    clients = []
    for cid, ((_p, info, _r), ip) in enumerate(zip(two_backends, ("127.0.0.2", "127.0.0.3")), 1):
        cfg = TrafficConfig(
            vip=ip,
            client_id=cid,
            udp_port=info["udp_port"],
            http_port=info["http_port"],
            udp_flows=50,
            packets_per_flow=20,
            rate=5000,
            http_conns=20,
            http_requests=2,
            http_size=300,
            drain_s=1.0,
        )
        clients.append(run(cfg))
    c1 = clients[0]
    assert len(c1["udp"]) == 50 and len(c1["http"]) == 20
    assert len({u["src_port"] for u in c1["udp"]}) == 50  # one 5-tuple per flow
    assert all(
        u["sent"] == 20 and u["received"] == 20 and u["backends"] == ["b1"] for u in c1["udp"]
    )
    assert all(h["ok"] and h["status"] == 200 and h["backend"] == "b1" for h in c1["http"])
    assert c1["udp"][0]["flow_id"] == 1_000_000
    assert c1["http"][0]["flow_id"] == 1_000_000 + HTTP_ID_OFFSET
    assert 0.15 < c1["udp_summary"]["send_s"] < 2.0  # paced: 1000 pkts at 5k/s

    records = [stop_backend(p, r) for p, _i, r in two_backends]
    report = check(records, clients)
    assert report.split_flows == 0 and report.ok
    assert report.flows_seen == 140 and report.udp_flows == 100 and report.http_conns == 40
    assert report.udp_sent == 2000 and report.udp_arrived == 2000
    assert report.udp_lost_forward == 0 and report.udp_lost_return == 0
    assert report.udp_replies_received == 2000 and report.udp_dups == 0
    assert report.http_failures == 0 and report.unknown_flows == 0 and report.malformed == 0
    assert report.per_backend["b1"]["flows"] == 70 and report.per_backend["b2"]["flows"] == 70
    assert report.per_backend["b1"]["packets"] == 1000 + 40
    assert report.balance_max_mean == 1.0 and report.balance_cv == 0.0
    j = report.to_json()
    assert {"flows", "split_flows", "lost", "per_backend", "balance"} <= set(j)
    json.dumps(j)
    assert "b2" in report.table() and "split flows" in report.table()


def test_cli_driver_and_checker(two_backends, tmp_path):
    (_p, info, _r) = two_backends[0]
    out = tmp_path / "c7.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed.traffic",
            "--vip",
            "127.0.0.2",
            "--udp-port",
            str(info["udp_port"]),
            "--http-port",
            str(info["http_port"]),
            "--client-id",
            "7",
            "--udp-flows",
            "10",
            "--packets-per-flow",
            "5",
            "--rate",
            "2000",
            "--http-conns",
            "3",
            "--drain",
            "0.5",
            "--out",
            str(out),
        ],
        check=True,
        timeout=20,
    )
    client = json.loads(out.read_text())
    assert client["client"] == 7 and len(client["udp"]) == 10 and len(client["http"]) == 3
    assert "duration_s" in client
    for p, _i, r in two_backends:
        stop_backend(p, r)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed.checker",
            "--backends",
            str(tmp_path / "b*.json"),
            "--clients",
            str(out),
            "--json",
            str(tmp_path / "report.json"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["split_flows"] == 0 and report["lost"]["forward"] == 0
    assert report["per_backend"]["b2"]["flows"] == 0  # idle backend still listed
    assert report["balance"]["max_mean"] == 2.0


def test_http_failure_is_reported():
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    out = run(
        TrafficConfig(
            vip="127.0.0.2", client_id=1, udp_flows=0, http_conns=2, http_port=port, http_timeout=1
        )
    )
    assert [h["ok"] for h in out["http"]] == [False, False]
    assert "ConnectionRefused" in out["http"][0]["error"]
    report = check([{"backend": "b1", "flows": []}], [out])
    assert report.http_failures == 2 and report.http_errors[0]["flow_id"] == 1_500_000


def _flow(fid, packets, proto="udp", dups=0):
    return {"flow_id": fid, "proto": proto, "packets": packets, "dups": dups, "bytes": 64 * packets}


def test_split_flow_is_flagged(tmp_path):
    b1 = {"backend": "b1", "malformed": 2, "flows": [_flow(1, 10), _flow(2, 6), _flow(3, 10)]}
    b2 = {"backend": "b2", "malformed": 1, "flows": [_flow(2, 4), _flow(4, 10)]}
    client = {
        "client": 0,
        "udp": [
            {
                "flow_id": f,
                "sent": 10,
                "received": 10,
                "replies": 10,
                "backend_replies": {"b1": 10} if f != 4 else {"b2": 10},
            }
            for f in (1, 3, 4)
        ]
        + [
            {
                "flow_id": 2,
                "sent": 10,
                "received": 10,
                "replies": 10,
                "backend_replies": {"b1": 6, "b2": 4},
            }
        ],
        "http": [],
    }
    report = check([b1, b2], [client])
    assert report.split_flows == 1 and not report.ok
    (s,) = report.split
    assert s["flow_id"] == 2 and s["backends"] == {"b1": 6, "b2": 4}
    assert report.udp_lost_forward == 0 and report.malformed == 3
    assert report.per_backend["b1"]["flows"] == 3 and report.per_backend["b2"]["flows"] == 2
    assert "flow 2: b1=6, b2=4" in report.table()

    for name, rec in (("b1", b1), ("b2", b2)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    (tmp_path / "c0.json").write_text(json.dumps(client))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed.checker",
            "--backends",
            str(tmp_path / "b1.json"),
            str(tmp_path / "b2.json"),
            "--clients",
            str(tmp_path / "c0.json"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert res.returncode == 1 and "FAIL" in res.stdout


def test_split_seen_only_by_the_client():
    """Replies from two backends prove a split even if one backend's record missed it."""
    b1 = {"backend": "b1", "flows": [_flow(1, 10)]}
    b2 = {"backend": "b2", "flows": []}
    client = {
        "client": 0,
        "http": [],
        "udp": [
            {
                "flow_id": 1,
                "sent": 10,
                "received": 10,
                "replies": 10,
                "backend_replies": {"b1": 9, "b2": 1},
            }
        ],
    }
    report = check([b1, b2], [client])
    assert report.split_flows == 1 and report.split[0]["answered_by"] == {"b1": 9, "b2": 1}


def test_loss_balance_and_unknown_accounting():
    b1 = {"backend": "b1", "flows": [_flow(1, 9, dups=1), _flow(2, 10), _flow(3, 10), _flow(50, 1)]}
    b2 = {"backend": "b2", "flows": [_flow(4, 10)]}
    b3 = {"backend": "b3", "flows": []}
    udp = [
        {
            "flow_id": f,
            "sent": 10,
            "received": 10,
            "replies": 10,
            "backend_replies": {"b1" if f < 4 else "b2": 10},
        }
        for f in (1, 2, 3, 4)
    ]
    udp[0].update(received=7, replies=7)  # flow 1: 8 distinct arrived, 9 answered, 7 back
    udp.append({"flow_id": 5, "sent": 10, "received": 0, "replies": 0, "backend_replies": {}})
    report = check([b1, b2, b3], [{"client": 0, "udp": udp, "http": []}])
    assert report.udp_sent == 50 and report.udp_arrived == 38
    assert report.udp_lost_forward == 2 + 10 and report.udp_lost_return == 2
    assert report.flows_never_arrived == 1 and report.unknown_flows == 1
    assert report.udp_dups == 1
    assert report.lossy_flows[0]["flow_id"] == 5
    # flows per backend 4, 1, 0 -> mean 5/3: max/mean 2.4; CV = pstdev/mean
    assert report.balance_max_mean == 2.4
    assert report.balance_cv == pytest.approx(statistics.pstdev([4, 1, 0]) / (5 / 3), abs=1e-4)


def test_plain_http_is_counted_apart_from_driver_flows():
    """Anonymous (no flow id) connections: counted per backend, never split, never in balance,
    even when two backends report the same 5-tuple (a port reused between two curls)."""
    five = ["10.0.0.1", "10.0.0.101", 40000, 8080, 6]
    plain = [{"proto": "tcp", "five_tuple": five, "requests": 3, "bytes": 48}]
    b1 = {"backend": "b1", "flows": [_flow(1, 10)], "anonymous": plain, "anonymous_requests": 3}
    b2 = {
        "backend": "b2",
        "flows": [_flow(2, 10)],
        "anonymous": plain,
        "anonymous_requests": 3,
        "anonymous_untracked": 1,
    }
    report = check([b1, b2], [])
    assert report.ok and report.split_flows == 0 and report.flows_seen == 2
    assert report.balance_max_mean == 1.0
    assert (report.anonymous_conns, report.anonymous_requests) == (3, 6)
    assert report.per_backend["b2"]["anonymous_conns"] == 2
    assert report.to_json()["anonymous"] == {"conns": 3, "requests": 6}
    assert "plain http (no flow id)" in report.table()
    assert "plain http" not in check([{"backend": "b1", "flows": [_flow(1, 10)]}], []).table()


def test_send_phase_is_bounded():
    """A rate too low for the packet count stops at max_send_s and says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # nobody answers here
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    out = run(
        TrafficConfig(
            vip="127.0.0.2",
            client_id=2,
            udp_port=port,
            udp_flows=10,
            packets_per_flow=100,
            rate=100,
            max_send_s=0.3,
            drain_s=0.1,
        )
    )
    summary = out["udp_summary"]
    assert summary["truncated"] and 10 <= summary["sent"] <= 60
    assert summary["received"] == 0 and out["duration_s"] < 2


# --- judge_pool_change on hand-made records (tests/test_pool_changes.py: on real traffic) ------


def records(**flows):
    """backend -> [(flow_id, first_t, last_t)] as the backends write them (change at t=10)."""
    out = {}
    for backend, spans in flows.items():
        out[backend] = {
            "backend": backend,
            "flows": [
                {"proto": "udp", "flow_id": f, "packets": 5, "first_t": a, "last_t": b}
                for f, a, b in spans
            ],
        }
    return list(out.values())


def verdicts(report):
    return {r.rule.split(" (")[0]: (r.judged, r.broken) for r in report.rules}


def test_judge_drain():
    from testbed.checker import judge_pool_change

    good = records(b1=[(1, 1, 19), (3, 12, 13)], b2=[(2, 1, 19)], b3=[(4, 12, 13)])
    report = judge_pool_change(good, "drain", "b2", 10.0, 1.0)
    assert report.ok, report.table()
    assert report.flows == {"before": 2, "new": 2, "unjudged": 0, "before_on_b2": 1}
    bad = records(b1=[(1, 1, 19), (3, 12, 13)], b2=[(2, 1, 9.5), (4, 12, 13)], b3=[(2, 10.1, 19)])
    report = judge_pool_change(bad, "drain", "b2", 10.0, 1.0)
    assert not report.ok
    assert verdicts(report) == {
        "flows on the drained b2 stay there": (1, 1),
        "flows on the other backends keep theirs": (1, 0),
        "no new flow reaches the drained b2": (2, 1),
        "new flows stay on one backend": (2, 0),
    }
    assert report.rules[0].examples[0]["backends"]["b3"]["first"] == 0.1
    assert "<- FAIL" in report.table()


def test_judge_fail_with_recovery():
    from testbed.checker import judge_pool_change

    moved_once = records(b1=[(1, 1, 19), (2, 10.2, 19)], b2=[(2, 1, 10.1)], b3=[(3, 12, 13)])
    report = judge_pool_change(moved_once, "fail", "b2", 10.0, 1.0, recovered_at=14.0)
    assert report.ok, report.table()
    went_back = records(b1=[(1, 1, 19), (2, 10.2, 13.9)], b2=[(2, 1, 19)], b3=[(3, 12, 13)])
    report = judge_pool_change(went_back, "fail", "b2", 10.0, 1.0, recovered_at=14.0)
    assert verdicts(report)["flows on the failed b2 move once, to one backend"] == (1, 1)
    stayed = records(b1=[(1, 1, 19)], b2=[(2, 1, 19)], b3=[(3, 12, 13)])
    assert not judge_pool_change(stayed, "fail", "b2", 10.0, 1.0).ok


def test_judge_add_needs_the_new_backend_to_serve():
    from testbed.checker import judge_pool_change

    good = records(b1=[(1, 1, 19), (2, 12, 13)], b4=[(3, 12, 13)])
    assert judge_pool_change(good, "add", "b4", 10.0, 1.0).ok
    ignored = records(b1=[(1, 1, 19), (2, 12, 13), (3, 12, 13)])
    report = judge_pool_change(ignored, "add", "b4", 10.0, 1.0)
    assert verdicts(report)["the added b4 gets new flows"] == (2, 2)
    moved = records(b1=[(1, 1, 10.2), (2, 12, 13)], b4=[(1, 10.3, 19), (3, 12, 13)])
    report = judge_pool_change(moved, "add", "b4", 10.0, 1.0)
    assert verdicts(report)["flows from before keep their backend"] == (1, 1)
    assert not judge_pool_change([], "add", "b4", 10.0, 1.0).ok  # nothing judged: no pass
