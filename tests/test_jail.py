"""The jail holds against hostile submissions (issue 12): real gradings, real cgroups.

A class of lab 1 submissions, each the reference plus one attack at the LB's start
(``tests/grader_fixtures/make.py``): a double-forked daemon, 6 GB in memfds over twelve
processes, a fork bomb graded next to an honest submission, a snoop that prints a marker for
every file it manages to read. And one jail on its own: what its root holds.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from grader.labconfig import REPO

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "grader_fixtures"))
import make as fixtures  # noqa: E402
from leftovers import NOTHING, jail_leftovers  # noqa: E402

pytestmark = [pytest.mark.network, pytest.mark.slow]
CLI = [sys.executable, "-m", "grader.cli"]
DAEMON = "vnfdaemon86399"
LEAK = "VNFLAB-LEAK"


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) << 10
    raise AssertionError("no MemAvailable")


class Watch(threading.Thread):
    """While the class is graded: was the daemon ever running, and how low did the machine's
    available memory go."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.daemon_seen = threading.Event(), False
        self.baseline = self.lowest = _mem_available()

    def run(self):
        while not self.stop.is_set():
            if (
                subprocess.run(["pgrep", "-x", DAEMON], capture_output=True, check=False).returncode
                == 0
            ):
                self.daemon_seen = True
            self.lowest = min(self.lowest, _mem_available())
            time.sleep(0.1)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    subs = tmp_path_factory.mktemp("hostile")
    # Sorted names: the fork bomb and an honest submission are graded side by side first.
    for name in ("a-forkbomb", "a-honest", "b-memhog", "c-daemon", "d-snoop"):
        kind = name.split("-", 1)[1]
        if kind == "honest":
            (subs / name).mkdir()
            for student, ref in fixtures.LAB_FILES[1].items():
                shutil.copyfile(os.path.join(REPO, ref), subs / name / student)
        else:
            fixtures.build(kind, str(subs / name))
    out = str(tmp_path_factory.mktemp("hostile-book"))
    watch = Watch()
    watch.start()
    try:
        r = subprocess.run(
            [*CLI, "grade-all", str(subs), "--lab", "1", "--jobs", "2", "--quick", "--out", out],
            capture_output=True,
            text=True,
            timeout=1500,
            cwd=REPO,
            check=False,
        )
    finally:
        watch.stop.set()
        watch.join()
    assert r.returncode == 0, r.stdout + r.stderr
    return out, watch, r.stdout + r.stderr


def _results(out, name):
    with open(os.path.join(out, name, "results.json")) as f:
        res = json.load(f)
    return res, {t["name"].split(":")[0]: t for t in res["tests"]}


@pytest.mark.extended
def test_every_hostile_grading_finishes(hostile):
    out, _, log = hostile
    with open(os.path.join(out, "gradebook.json")) as f:
        book = json.load(f)
    assert [s["error"] for s in book["submissions"]] == [None] * 5, log


@pytest.mark.extended
def test_daemon_is_gone_after_stop_and_cannot_reach_the_reference(hostile):
    out, watch, _ = hostile
    assert watch.daemon_seen, "the daemon fixture never ran: the test would prove nothing"
    assert subprocess.run(["pgrep", "-x", DAEMON], capture_output=True, check=False).returncode == 1
    _, t = _results(out, "c-daemon")
    # The reference (another user, another PID namespace) ran its cost windows untouched.
    cost = t["per-packet cost vs the reference (same run)"]
    assert "reference" in cost["output"] and cost["score"] > 0, cost["output"]
    for name, test in t.items():
        if not name.startswith("per-packet"):
            assert test["score"] == test["max_score"], (name, test["output"])


@pytest.mark.extended
def test_memory_cap_holds_across_processes_memfd_and_tmpfs(hostile):
    _, watch, _ = hostile
    drop = watch.baseline - watch.lowest
    # Without the cgroup the hog takes 6 GB; the cap is the lab's memory_mb (1.5 GB).
    assert drop < 3 << 30, f"available memory fell by {drop >> 20} MB"


@pytest.mark.extended
def test_fork_bomb_does_not_hurt_the_parallel_grading(hostile):
    out, _, _ = hostile
    res, _ = _results(out, "a-honest")
    assert res["score"] == res["max_score"], [
        x for x in res["tests"] if x["score"] < x["max_score"]
    ]


@pytest.mark.extended
def test_no_marker_in_any_output_and_nothing_left(hostile):
    out, _, log = hostile
    assert LEAK not in log
    for path in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, errors="replace") as f:
                assert LEAK not in f.read(), path
    assert jail_leftovers() == NOTHING


@pytest.mark.extended
def test_snoop_reads_nothing_and_reference_gets_full_marks(tmp_path):
    """Graded alone with --keep, so that its LB's own output (every log) can be searched too."""
    sub = tmp_path / "snoop"
    fixtures.build("snoop", str(sub))
    out = tmp_path / "out"
    r = subprocess.run(
        [*CLI, "grade", str(sub), "--lab", "1", "--quick", "--keep", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    kept = r.stderr.split("kept ", 1)[1].split()[0]
    try:
        logs = ""
        for path in glob.glob(os.path.join(kept, "*.log")):
            with open(path, errors="replace") as f:
                logs += f.read()
        assert "VNFLAB-SNOOP-RAN" in logs  # it did run and look
        assert LEAK not in logs, [ln for ln in logs.splitlines() if LEAK in ln][:10]
        for name in ("results.json", "report.md"):
            assert LEAK not in (out / name).read_text()
        res = json.loads((out / "results.json").read_text())
        assert res["score"] == res["max_score"]  # otherwise the reference: full marks
    finally:
        shutil.rmtree(kept, ignore_errors=True)


JAIL_VIEW = r'''
import json, os, sys
from grader.jail import CODE, Jail
from grader.sandbox_user import STUDENT_USER
work = sys.argv[1]
j = Jail("grade-jailtest", work, user=STUDENT_USER, limits={"memory_mb": 256, "processes": 16},
         binds={CODE: os.path.join(sys.argv[2], "vnf")}, files={"config.json": "{}"})
code = """
import json, os
print(json.dumps({"root": sorted(os.listdir("/")), "uid": os.getuid(), "pid": os.getpid(),
                  "procs": sorted(p for p in os.listdir("/proc") if p.isdigit()),
                  "run": sorted(os.listdir("/vnflab/run")), "cwd": os.getcwd(),
                  "cgroup": open("/proc/self/cgroup").read()}))
"""
r = j.run([sys.executable, "-c", code], timeout=60)
print(json.dumps({"rc": r.returncode, "out": r.stdout, "err": r.stderr,
                  "cgroup_left": os.path.isdir(j.cgroup.dirs["memory"])}))
'''


def test_a_jail_holds_only_the_allow_list(tmp_path):
    from testbed import sandbox

    work = tmp_path / "work"
    work.mkdir()
    r = sandbox.run(
        [sys.executable, "-c", JAIL_VIEW, str(work), REPO],
        timeout=120,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    from grader import cgroups

    cgroups.remove_grading("grade-jailtest")
    assert r.returncode == 0, r.stderr.decode()
    res = json.loads(r.stdout.decode().splitlines()[-1])
    assert res["rc"] == 0 and not res["cgroup_left"], res
    view = json.loads(res["out"])
    top = os.path.realpath(sys.prefix).split("/")[1]
    assert set(view["root"]) <= {
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "usr",
        "etc",
        "dev",
        "proc",
        "sys",
        "tmp",
        "vnflab",
        top,
    }, view["root"]
    assert view["uid"] != 0 and view["pid"] == 1 and view["procs"] == ["1"]
    assert view["run"] == ["config.json", "jail.ok", "out"] and view["cwd"] == "/vnflab/run/out"
    assert all(line.endswith(":/") for line in view["cgroup"].split()), view["cgroup"]
