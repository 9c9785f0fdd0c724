"""Self-test of the autograder on lab 3 (DPDK): one ``grade-all --jobs 2 --quick`` over the
reference, the released starter and per-packet round robin in ``forward_vector``.

Each grading runs a private OVS-DPDK with the student's LB (unprivileged, in the jail) on a
vhost-user port, and a DPDK generator for the cost windows; about a minute in all.
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
from leftovers import jail_leftovers  # noqa: E402

pytestmark = [pytest.mark.network, pytest.mark.dpdk, pytest.mark.slow]
CLI = [sys.executable, "-m", "grader.cli"]
STARTS = "LB starts and forwards (import, ready file, a first flow)"


def _cli(*args, timeout=900):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _hugepage_files() -> list[str]:
    found = []
    for d in ("/dev/hugepages", "/var/run/dpdk"):
        for root, dirs, files in os.walk(d):
            found += [os.path.join(root, x) for x in dirs + files]
    return found


def _results(out, name):
    with open(os.path.join(out, name, "results.json")) as f:
        res = json.load(f)
    return res, {
        t["name"].split(":")[0] if not t["name"].startswith("hidden") else t["name"]: t
        for t in res["tests"]
    }


@pytest.fixture(scope="module")
def lab3(tmp_path_factory):
    from vnf import dpdk

    if not dpdk.available() or not os.path.exists(
        "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
    ):
        pytest.skip("lab 3 needs the DPDK binding and ovs-vswitchd-dpdk")
    before = set(_hugepage_files())
    rel = str(tmp_path_factory.mktemp("release3"))
    r = _cli("release", rel, "--lab", "3", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    subs = tmp_path_factory.mktemp("class3")
    (subs / "reference").mkdir()
    for student, ref in fixtures.LAB_FILES[3].items():
        shutil.copyfile(os.path.join(REPO, ref), subs / "reference" / student)
    shutil.copytree(os.path.join(rel, "lab3"), subs / "starter")
    fixtures.build("rrvec", str(subs / "rrvec"))
    out = str(tmp_path_factory.mktemp("gradebook3"))
    r = _cli("grade-all", str(subs), "--lab", "3", "--jobs", "2", "--quick", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout, before


def test_lab3_gradebook(lab3):
    out, stdout, _ = lab3
    assert "3/3" in stdout
    with open(os.path.join(out, "gradebook.csv")) as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"reference", "starter", "rrvec"}
    assert all(not r["error"] for r in rows.values()), rows


def test_lab3_reference_gets_full_marks(lab3):
    res, t = _results(lab3[0], "reference")
    assert res["score"] == res["max_score"], [
        x for x in res["tests"] if x["score"] < x["max_score"]
    ]
    assert "Survived" in t["robustness"]["output"]
    assert "generator" in t["per-packet cost vs the reference (same run)"]["output"]
    assert any(n.startswith("hidden") for n in t)


def test_lab3_released_starter_scores_at_most_ten_percent(lab3):
    res, t = _results(lab3[0], "starter")
    assert res["score"] <= 0.10 * res["max_score"], res
    assert "NotImplementedError" in t[STARTS]["output"]


def test_lab3_per_packet_round_robin_loses_affinity(lab3):
    res, t = _results(lab3[0], "rrvec")
    assert t[STARTS]["score"] == t[STARTS]["max_score"], t[STARTS]["output"]  # runs, forwards
    assert t["affinity"]["score"] == 0 and "split flow" in t["affinity"]["output"]
    report = open(os.path.join(lab3[0], "rrvec", "report.md")).read()
    assert "flow id" in report and "reached b" in report


COST = "per-packet cost vs the reference (same run)"


def grade_forged_cost(tmp_path, fixture: str) -> tuple[dict, dict]:
    """Grade a lab 3 fixture that forges its busy counters, on only the tests the forgery aims
    at (starts, cost; quick): (results, tests by name). It must still start and forward."""
    from grader.grade import grade
    from vnf import dpdk

    if not dpdk.available() or not os.path.exists(
        "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
    ):
        pytest.skip("lab 3 needs the DPDK binding and ovs-vswitchd-dpdk")
    sub = fixtures.build(fixture, str(tmp_path / fixture))
    res = grade(
        sub, 3, str(tmp_path / "out"), quick=True, include_hidden=False, tests=["starts", "cost"]
    )
    t = {x["name"]: x for x in res["tests"]}
    assert t[STARTS]["score"] == t[STARTS]["max_score"], t[STARTS]["output"]
    return res, t


def test_lab3_a_forged_tsc_frequency_earns_no_cost_points(tmp_path):
    """Issue 12: the busy cycles are the LB's own word. ``busyhz`` (the reference, whose stats
    claim a TSC four times faster: a quarter of the busy time) loses the cost test with the
    reason; it still starts and forwards. Only the tests the forgery aims at are graded."""
    res, t = grade_forged_cost(tmp_path, "busyhz")
    cost = t[COST]
    assert cost["score"] == 0, cost["output"]
    assert "could not be measured" in cost["output"] and "TSC of" in cost["output"], cost["output"]
    assert "Grader note" not in res["output"], res["output"]  # the reference was measured


# Windows measured with the reference's styles (1 s; the generator's counts over the window):
# (busy_s, span_s, back_pressure, generator's CPU share). docs/grading.md, "Cost".
HONEST_WINDOWS = {
    "vector, quiet": (0.9455, 1.011, 0.569, 0.994),
    "per-packet, quiet": (0.9881, 1.014, 0.9703, 0.992),
    "vector, busy loop (nice 0) on the LB's core": (0.5905, 1.013, 0.9022, 0.637),
    "per-packet, busy loop (nice 0) on the generator's core": (0.4288, 1.021, 0.9807, 0.411),
    "fused, the generator the bottleneck": (0.4916, 1.015, 0.2939, 0.503),
}


@pytest.mark.parametrize("name", sorted(HONEST_WINDOWS))
def test_busy_floor_spares_the_references_windows_and_catches_half_the_cycles(name):
    from grader.inside import under_reported

    busy, span, bp, gen_share = HONEST_WINDOWS[name]
    gen = {"back_pressure": bp, "cpu_share": gen_share}
    assert under_reported(busy, span, gen) is None
    if bp >= 0.5:  # the LB held the generator back: half its cycles are caught
        assert "held the generator back" in under_reported(busy / 2, span, gen)
    else:  # the generator set the pace: few busy cycles are honest, nothing is said
        assert under_reported(busy / 10, span, gen) is None


def test_lab3_under_reported_busy_cycles_earn_no_cost_points(tmp_path):
    """Issue 12: ``busylow`` (the reference in the per-packet style, about 7x the vector
    style's cost, whose stats report a tenth of its busy cycles: an honest clock, too few
    cycles) holds the generator back, so it must be busy nearly all the time: its windows are
    scored on CPU time per packet that came back, and it loses the cost points, with the
    reason. The reference's windows are never re-scored."""
    res, t = grade_forged_cost(tmp_path, "busylow")
    cost = t[COST]
    assert cost["score"] <= 0.25 * cost["max_score"], cost["output"]
    assert "submission windows were scored on CPU time" in cost["output"], cost["output"]
    assert "reference windows were scored" not in cost["output"], cost["output"]
    assert "Grader note" not in res["output"], res["output"]


def test_lab3_leaves_nothing_behind(lab3):
    assert jail_leftovers()["processes"] == []  # the LBs of gradings that ended
    root = "/var/lib/vnflab/grading"
    for d in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, d, "plan.json")) as f:
                assert json.load(f)["lab"] != 3, d
        except OSError:
            pass
    assert set(_hugepage_files()) <= lab3[2]  # no huge-page files, no dpdk dirs
    # OVS-DPDK and the generator lived in the grading's PID namespace: gone with it (a pgrep for
    # them here would also see other people's demos on a shared machine)
