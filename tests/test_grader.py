"""Self-test of the autograder: real gradings in sandboxes (quick profile, two jobs at a time).

One grade-all run per lab grades every fixture once; the tests below read its gradebook and
per-submission results. Lab 1: the reference (full marks), the released starter (<= 10 %),
per-packet round robin, a key without the protocol, a table that never evicts, a hang (one
that writes results.json is in the hostile corpus, tests/test_hostile.py); the grade-all starts
with no student user, as on a fresh machine. Lab 2: the reference, the starter and a parser
that crashes on short frames.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from grader.labconfig import REPO

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "grader_fixtures"))
import make as fixtures  # noqa: E402
from leftovers import NOTHING, jail_leftovers  # noqa: E402

pytestmark = [pytest.mark.network, pytest.mark.slow]
CLI = [sys.executable, "-m", "grader.cli"]


def _cli(*args, timeout=900):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def student_tree(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("release"))
    r = _cli("release", out, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _class(tmp_path_factory, student_tree, lab, names):
    root = tmp_path_factory.mktemp(f"class{lab}")
    for name in names:
        dest = root / name
        if name == "reference":
            dest.mkdir()
            for student, ref in fixtures.LAB_FILES[lab].items():
                shutil.copyfile(os.path.join(REPO, ref), dest / student)
        elif name == "starter":
            shutil.copytree(os.path.join(student_tree, f"lab{lab}"), dest)
        else:
            fixtures.build(name, str(dest))
    return str(root)


def _results(out, name):
    with open(os.path.join(out, name, "results.json")) as f:
        res = json.load(f)
    return res, {
        t["name"].split(":")[0] if not t["name"].startswith("hidden") else t["name"]: t
        for t in res["tests"]
    }


@pytest.fixture(scope="module")
def lab1(tmp_path_factory, student_tree):
    subs = _class(
        tmp_path_factory,
        student_tree,
        1,
        ["reference", "starter", "rr", "protokey", "noevict", "hang"],
    )
    # A private directory (not /tmp) for the results, as an instructor would use.
    out = str(tmp_path_factory.mktemp("gradebook1"))
    # As on a fresh machine: no student user when two gradings start at once (issue 11).
    from grader.sandbox_user import STUDENT_USER, ensure_users

    gone = subprocess.run(["userdel", STUDENT_USER], capture_output=True, text=True)
    # 0: deleted, 6: there was none, 8: in use by another grading on this machine
    assert gone.returncode in (0, 6, 8), gone.stderr
    try:
        r = _cli("grade-all", subs, "--lab", "1", "--jobs", "2", "--quick", "--out", out)
    finally:
        ensure_users()
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout, gone.returncode


def test_grade_all_writes_the_gradebook_with_progress(lab1):
    out, stdout, _ = lab1
    assert "6/6" in stdout and "[###" in stdout
    with open(os.path.join(out, "gradebook.csv")) as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"reference", "starter", "rr", "protokey", "noevict", "hang"}
    with open(os.path.join(out, "gradebook.json")) as f:
        book = json.load(f)
    assert len(book["submissions"]) == 6 and all(s["error"] is None for s in book["submissions"])


def test_results_are_in_gradescope_format(lab1):
    out = lab1[0]
    res, _ = _results(out, "reference")
    assert set(res) >= {"score", "tests", "execution_time", "output"}
    for t in res["tests"]:
        assert set(t) >= {"name", "score", "max_score", "output", "visibility"}
        assert t["visibility"] in ("visible", "hidden", "after_due_date", "after_published")
    assert any("execution_time" in t for t in res["tests"])
    assert os.path.exists(os.path.join(out, "reference", "report.md"))


def test_reference_gets_full_marks(lab1):
    res, tests = _results(lab1[0], "reference")
    assert res["score"] == res["max_score"], [
        t for t in res["tests"] if t["score"] < t["max_score"]
    ]


def test_released_starter_scores_at_most_ten_percent(lab1):
    res, _ = _results(lab1[0], "starter")
    assert res["score"] <= 0.10 * res["max_score"], res


def test_per_packet_round_robin_loses_affinity(lab1):
    res, t = _results(lab1[0], "rr")
    assert t["affinity"]["score"] == 0 and "split flow" in t["affinity"]["output"]
    assert (
        t["unit checks of the flow table (flowtable.py)"]["score"]
        == t["unit checks of the flow table (flowtable.py)"]["max_score"]
    )
    report = open(os.path.join(lab1[0], "rr", "report.md")).read()
    assert "flow id" in report and "reached b" in report  # the flow that broke, and where


def test_key_without_protocol_loses_the_key_test(lab1):
    res, t = _results(lab1[0], "protokey")
    assert t["5-tuple key"]["score"] == 0
    assert "ignores the protocol" in t["5-tuple key"]["output"]
    assert t["affinity"]["score"] == t["affinity"]["max_score"], t["affinity"][
        "output"
    ]  # it does keep affinity
    unit = t["unit checks of the flow table (flowtable.py)"]
    assert "FAIL check_protocol_is_part_of_the_key" in unit["output"]


def test_table_that_never_evicts_is_caught(lab1):
    res, t = _results(lab1[0], "noevict")
    hidden = t["hidden: eviction under a 64-entry flow table"]
    assert hidden["score"] == 0 and "never evicts" in hidden["output"]
    unit = t["unit checks of the flow table (flowtable.py)"]
    assert "FAIL check_capacity_is_a_bound" in unit["output"] and unit["score"] < unit["max_score"]
    assert t["affinity"]["score"] == t["affinity"]["max_score"], t["affinity"]["output"]


def test_hang_costs_the_traffic_tests_with_a_clear_message(lab1):
    res, t = _results(lab1[0], "hang")
    assert t["LB starts and forwards (import, ready file, a first flow)"]["score"] == 0
    assert (
        "killed (a hang?)"
        in t["LB starts and forwards (import, ready file, a first flow)"]["output"]
    )
    assert t["affinity"]["score"] == 0 and "skipped" in t["affinity"]["output"]
    assert res["execution_time"] < 120


def test_nothing_is_left_behind(lab1):
    assert jail_leftovers() == NOTHING


def test_lab2_reference_full_marks_and_buggy_parser_loses_robustness(
    tmp_path_factory, student_tree
):
    subs = _class(tmp_path_factory, student_tree, 2, ["reference", "starter", "crash20"])
    book = str(tmp_path_factory.mktemp("gradebook2"))
    r = _cli("grade-all", subs, "--lab", "2", "--jobs", "2", "--quick", "--out", book)
    assert r.returncode == 0, r.stdout + r.stderr
    ref, _ = _results(book, "reference")
    assert ref["score"] == ref["max_score"], [
        t for t in ref["tests"] if t["score"] < t["max_score"]
    ]
    res, _ = _results(book, "starter")
    assert res["score"] <= 0.10 * res["max_score"]
    res, t = _results(book, "crash20")
    rob = t["robustness"]
    assert rob["score"] == 0 and "died during the malformed-frame corpus" in rob["output"]
    assert "struct.error" in rob["output"]  # the traceback is shown
    assert (
        "FAIL check_short_frames"
        in t["unit checks of the parser (packet.py parse_frame)"]["output"]
    )
    # Junk shares ring blocks with valid flows in the affinity run (mixed bursts): a parser that
    # crashes on a short frame takes the valid flows of its block down with it, and loses there
    aff = t["affinity"]
    assert aff["score"] == 0 and "crashed" in aff["output"], aff["output"]


def test_grader_refuses_what_it_cannot_grade(tmp_path):
    r = _cli("grade", "reference", "--lab", "9", "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "no lab 9" in r.stderr
    r = _cli("grade", str(tmp_path / "nope"), "--lab", "1", "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_grade_all_creates_the_student_user_before_its_gradings_race(lab1):
    """Issue 11: with no student user, two parallel gradings used to race to create it, and
    one chowned its run dir to a uid its LB did not run as (PermissionError on the ready
    file: a correct submission scored 0). The lab 1 grade-all above starts with no user; its
    first two jobs (``hang``, ``noevict``: alphabetical) start together, and ``noevict`` keeps
    its traffic points (its affinity is checked above): grade_all made the user first."""
    out, _, userdel = lab1
    if userdel == 8:
        pytest.skip("the student user was in use by another grading: it could not be removed")
    with open(os.path.join(out, "gradebook.json")) as f:
        rows = {s["student"]: s for s in json.load(f)["submissions"]}
    assert all(row["error"] is None for row in rows.values()), rows
    _, t = _results(out, "noevict")
    assert t["affinity"]["score"] == t["affinity"]["max_score"], t["affinity"]["output"]
    assert "PermissionError" not in json.dumps(_results(out, "noevict")[0])
