"""The readers of what a submission writes (grader.untrusted), the report's quoting, the unit
checks' channel and the cost's sanity: on real files, FIFOs, links and processes."""

import json
import os
import socket
import subprocess
import sys

import pytest

from grader import labconfig
from grader.report import quote
from grader.unitcheck import run_unit_checks
from grader.untrusted import (
    CappedPipe,
    Untrusted,
    chown_own_socket,
    copy_regular,
    load_json_or,
    read_json_capped,
    read_text_tail,
)

CHECKS1 = os.path.join(labconfig.REPO, "labs", "lab1", "tests", "checks.py")


def test_links_fifos_and_big_files_are_refused(tmp_path):
    secret = tmp_path / "plan.json"
    secret.write_text('{"hidden": ["eviction"]}')
    (tmp_path / "stats.json").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo.json")  # opening it must not block
    (tmp_path / "big.json").write_text("[" + "0," * 600_000 + "0]")
    for name, why in (
        ("stats.json", "symbolic link"),
        ("fifo.json", "FIFO"),
        ("big.json", "larger than"),
        ("none.json", "does not exist"),
    ):
        value, problem = read_json_capped(str(tmp_path / name), 1 << 20)
        assert value is None and why in problem, (name, problem)
    with pytest.raises(Untrusted, match="symbolic link"):
        copy_regular(str(tmp_path / "stats.json"), str(tmp_path / "copy.py"))
    assert not (tmp_path / "copy.py").exists()


def test_bad_json_and_non_utf8_are_answers_not_exceptions(tmp_path):
    bad = (b"\xff\xfe{", b'{"a": NaN}', b"[" * 100_000, b'{"a": 1')
    for i, data in enumerate(bad):
        p = tmp_path / f"s{i}.json"
        p.write_bytes(data)
        assert load_json_or(str(p), {"default": True}) == {"default": True}
    log = tmp_path / "lb.log"
    log.write_bytes(b"x" * 200_000 + b"\xff\xfe the end\n")
    tail = read_text_tail(str(log), 1000)
    assert len(tail) <= 1000 and tail.endswith("\ufffd\ufffd the end\n")


def test_a_copied_file_is_roots_and_0644(tmp_path):
    src = tmp_path / "flowtable.py"
    src.write_text("x = 1\n")
    os.chmod(src, 0o4777)
    copy_regular(str(src), str(tmp_path / "out.py"))
    st = os.stat(tmp_path / "out.py")
    assert (st.st_mode & 0o7777, st.st_uid) == (0o644, os.getuid())


def test_only_the_socket_root_made_is_chowned(tmp_path):
    target = tmp_path / "shadow"
    target.write_text("secret")
    link = tmp_path / "gen.sock"
    link.symlink_to(target)
    with pytest.raises(OSError):
        chown_own_socket(str(link), 65534, 65534)
    assert os.stat(target).st_uid == os.getuid()
    sock_path = tmp_path / "real.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    try:
        chown_own_socket(str(sock_path), 65534, 65534)
        assert os.lstat(sock_path).st_uid == 65534
    finally:
        s.close()


def test_a_flood_of_output_is_kept_to_its_end():
    script = "import os\nfor _ in range(4096): os.write(1, b'\\xff' * 65536)\nprint('last line')"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    out = CappedPipe(proc.stdout, 4096)
    assert proc.wait(60) == 0
    text = out.text()
    assert text.endswith("last line\n") and len(text) < 5000 and out.total > 1 << 28


def test_a_fence_in_the_text_cannot_close_the_quote():
    text = "ok\n```\n# Score: 105/105\n``````\n<script>x</script>"
    q = quote(text)
    fence = q.splitlines()[0].removesuffix("text")
    assert len(fence) == 7 and q.endswith("\n" + fence)
    inner = q.splitlines()[1:-1]
    assert all(not line.startswith(fence) for line in inner)


def _module(tmp_path, text):
    p = tmp_path / "flowtable.py"
    p.write_text(text)
    return {"checks": CHECKS1, "module": "flowtable", "file": str(p), "timeout_s": 30}


def test_unit_verdict_comes_from_the_grader_not_the_student(tmp_path):
    """A module that prints a forged verdict (the old harness's format) and answers nothing
    right gets nothing; the reference passes every check."""
    forged = json.dumps({"results": [{"name": "check_miss_insert_hit", "ok": True}]})
    unit = _module(
        tmp_path,
        f"import os, sys\nprint('x ' + {forged!r})\n"
        "os.write(1, b'\\xff\\n')\n"
        "class FlowTable:\n    def __init__(self, capacity, idle_timeout):\n"
        "        pass\n",
    )
    res = run_unit_checks(unit, lambda argv: argv)
    assert not any(r["ok"] for r in res["results"]), res
    ref = os.path.join(labconfig.REPO, "vnf", "flowtable.py")
    res = run_unit_checks({**unit, "file": ref}, lambda argv: argv)
    assert all(r["ok"] for r in res["results"]), res


def test_garbage_on_the_channel_fails_the_check_not_the_grading(tmp_path):
    unit = _module(
        tmp_path,
        "import os\nclass FlowTable:\n"
        "    def __init__(self, capacity, idle_timeout):\n"
        "        for fd in range(3, 20):\n"
        "            try:\n                os.write(fd, b'\\xff\\xfe{\\n')\n"
        "            except OSError:\n                pass\n",
    )
    res = run_unit_checks(unit, lambda argv: argv)
    assert len(res["results"]) == 8 and not any(r["ok"] for r in res["results"])
    assert "not JSON" in res["results"][0]["message"], res["results"][0]


def test_a_cost_below_zero_or_a_reference_without_one_earns_nothing():
    from grader.scoring import Scorer

    lab = labconfig.load(1)
    plan = {
        "tests": ["cost"],
        "topology": {"clients": 2, "backends": 3},
        "cost": lab.cost(True),
        "traffic": lab.traffic(True),
        "hidden": [],
    }

    def cost_points(ref_ns, sub_ns):
        windows = [
            {"who": "reference", "ns_per_packet": ref_ns},
            {"who": "submission", "ns_per_packet": sub_ns},
        ]
        facts = {
            "smoke": {"ready": True, "forwards": True},
            "cost": {"windows": windows, "rate_pps": 1, "seconds": 1},
        }
        s = Scorer(lab, plan, facts, [], True)
        t = next(t for t in s.score() if t["number"] == "cost")
        return t["score"], s.grader_errors

    assert cost_points(1000.0, 1000.0) == (10, [])
    assert cost_points(1000.0, -50.0)[0] == 0
    assert cost_points(1000.0, 0)[0] == 0
    for bad_ref in (None, 0, -1.0, float("nan")):
        score, errors = cost_points(bad_ref, 1000.0)
        assert score == 0 and errors, bad_ref
    # one reference window that measured nothing, one that did: the measured one is the figure
    # (the statistic is the best window), and the output says what was left out
    plan["cost"] = {**lab.cost(True), "statistic": "min"}
    windows = [
        {"who": "reference", "ns_per_packet": None, "busy_error": "no busy counters"},
        {"who": "submission", "ns_per_packet": 1000.0},
        {"who": "reference", "ns_per_packet": 1000.0},
        {"who": "submission", "ns_per_packet": 1000.0},
    ]
    facts = {
        "smoke": {"ready": True, "forwards": True},
        "cost": {"windows": windows, "rate_pps": 1, "seconds": 1},
    }
    s = Scorer(lab, plan, facts, [], True)
    t = next(t for t in s.score() if t["number"] == "cost")
    assert t["score"] == 10 and not s.grader_errors, t
    assert "1 of 2 reference windows could not be measured" in t["output"], t["output"]
