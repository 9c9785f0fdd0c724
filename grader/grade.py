"""The autograder: ``vnflab grade SUBMISSION --lab N --out DIR`` and ``vnflab grade-all``.

How one grading goes:

1. **Overlay.** A temp copy of the ``vnf`` package with the submission's files in place of the
   reference ones (``labs/labN/lab.toml`` says which file goes where); a second, untouched copy is
   the reference the per-packet cost is compared with. Both are put first on ``PYTHONPATH`` of
   the LB program they run: ``python -m vnf.ways.<way>_lb`` — the way contract
   (``grader.overlay``).
2. **Sandbox.** ``python -m grader.inside PLAN FACTS`` runs in a fresh network + PID + mount
   namespace (``testbed.sandbox``) with a wall-clock limit: one topology, then phase after phase
   (unit checks, smoke, affinity + balance + captured frames, the 5-tuple key probe, the
   malformed-frame corpus, cost windows alternating reference/submission, hidden scenarios). The
   submission's processes run in a jail per start: a cgroup (memory, processes, CPU), their own
   PID/IPC/mount namespaces, a root that holds only the venv, their overlay and a fresh run dir,
   another user with only its way's capabilities (``grader.jail``, ``grader.studentlb``).
   Whatever they do, the namespaces take every interface, process and huge-page file with them.
3. **Scores.** After the sandbox has exited, the facts are scored (``grader.scoring``) and
   ``results.json`` (Gradescope's format) and ``report.md`` are written into DIR
   (``grader.report``) — a directory the submission's user cannot write.

This module only puts those steps in order, for one submission (``grade``) or a class
(``grade_all``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from grader import cgroups, labconfig
from grader.errors import GradeError
from grader.labconfig import Lab, LabError
from grader.overlay import prepare_workdir
from grader.pcaps import ship_split_flows
from grader.report import results_json, write_gradebook, write_results
from grader.sandbox_user import ensure_users
from grader.scoring import Scorer
from grader.untrusted import MIB, load_json_or, read_text_tail
from testbed.poolchange import QUICK_TIMING

GRADING_ROOT = "/var/lib/vnflab/grading"
CAPS = {"socket": (), "afpacket": ("net_raw",), "dpdk": ()}
LOCK_NAME = "grading.lock"  # held (flock) for as long as the grading runs
# Held (flock) by the one DPDK-way grading running on this machine: each pins its poll-mode LB
# and OVS-DPDK's PMD to the same cores, so two at once (two grade-all runs, say) starve each
# other's LB and a correct submission can lose traffic points. Others wait for it.
DPDK_LOCK = os.path.join(GRADING_ROOT, "dpdk-grading.lock")
PUBLIC_TESTS = [
    "unit",
    "starts",
    "affinity",
    "balance",
    "correctness",
    "paths",
    "pool_changes",
    "key",
    "robustness",
    "cost",
]
# The flow mix of each graded path's run (``[[paths]]`` in lab.toml), smaller than affinity's.
PATH_TRAFFIC = {"udp_flows": 600, "packets_per_flow": 3, "rate_pps": 4000, "http_conns": 40}
QUICK_PATH_TRAFFIC = {"udp_flows": 200, "packets_per_flow": 3, "rate_pps": 3000, "http_conns": 20}


def make_plan(
    lab: Lab, files: dict, workdir: str, quick: bool, include_hidden: bool, tests: list[str]
) -> dict:
    """What the sandbox runs (``grader.inside``): the lab's profile and where the files are
    (``grader.overlay.prepare_workdir``). Root-only: it names the hidden scenarios."""
    return {
        "lab": lab.number,
        "way": lab.way,
        "quick": quick,
        "workdir": workdir,
        "grading_id": os.path.basename(workdir),
        "overlay_sub": files["overlay_sub"],
        "overlay_ref": files["overlay_ref"],
        "unit": files["unit"],
        "topology": dict(lab.raw.get("topology", {"clients": 2, "backends": 3})),
        "traffic": lab.traffic(quick),
        "cost": lab.cost(quick),
        "limits": lab.limits(quick),
        "caps": list(CAPS.get(lab.way, ())),
        "hidden": lab.hidden if include_hidden else [],
        "paths": [dict(p) for p in lab.raw.get("paths", [])],
        "path_traffic": dict(QUICK_PATH_TRAFFIC if quick else PATH_TRAFFIC),
        "tests": tests,
        "fuzz_frames": 300 if quick else 2000,
        "pool_changes": dict(QUICK_TIMING) if quick else {},
    }


def grading_alive(grading: str) -> bool:
    """Whether the grading ``grading`` (its work dir's name) still runs: its work dir exists
    and its lock is held. A crashed grading's cgroups are removed by the next one."""
    try:
        fd = os.open(os.path.join(GRADING_ROOT, grading, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def run_sandbox(plan: dict, workdir: str) -> dict:
    """``python -m grader.inside PLAN FACTS`` in a fresh sandbox, under the lab's wall clock;
    the facts it left (whatever it measured before a time-out), or why there are none.

    The plan (it names the hidden scenarios), the facts and the sandbox's output live in
    WORKDIR/grader, a directory only root can enter: the submission's user, which can reach
    WORKDIR, reads none of them. The sandbox's stdin is /dev/null (nothing it starts reads
    the instructor's terminal); its output goes to a file of which only the end is read."""
    from testbed import sandbox

    private = os.path.join(workdir, "grader")
    os.makedirs(private, mode=0o700)
    plan_path = os.path.join(private, "plan.json")
    facts_path = os.path.join(private, "facts.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    os.chmod(plan_path, 0o600)
    wall = float(plan["limits"].get("wall_s", 420))
    stopped = None
    log_path = os.path.join(private, "sandbox.log")
    with open(log_path, "wb") as log_file:
        try:
            sandbox.run(
                [sys.executable, "-m", "grader.inside", plan_path, facts_path],
                timeout=wall,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        except subprocess.TimeoutExpired:
            stopped = f"the grading exceeded {wall:.0f} s and was stopped"
    stderr = read_text_tail(log_path, 3000)
    facts = load_json_or(facts_path, {}, max_bytes=64 * MIB)
    if not isinstance(facts, dict):
        facts = {}
    if stopped:
        facts["stopped"] = stopped
    if not facts:
        facts["grader_error"] = "the grading sandbox produced no facts:\n" + stderr[-3000:]
    return facts


# --------------------------------------------------------------------------------------------
# one grading
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def machine_cores(way: str):
    """A DPDK-way grading holds ``DPDK_LOCK`` while its sandbox runs (see there); other ways
    share the machine freely."""
    if way != "dpdk":
        yield
        return
    fd = os.open(DPDK_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                "vnflab grade: another DPDK grading runs on this machine; waiting for it",
                file=sys.stderr,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def grade(
    submission: str,
    lab_number,
    out: str,
    quick: bool = False,
    include_hidden: bool = True,
    tests: list[str] | None = None,
    keep: bool = False,
    label: str | None = None,
) -> dict:
    """Grade one submission; writes OUT/results.json and OUT/report.md; returns the results."""
    from testbed import sandbox

    problem = sandbox.can_sandbox()
    if problem:
        raise GradeError(problem)
    try:
        lab = labconfig.load(lab_number)
    except LabError as exc:
        raise GradeError(str(exc)) from None
    why = lab.gradable()
    if why:
        raise GradeError(f"lab {lab.number} cannot be graded here: {why}")
    ensure_users()
    tests = list(tests or PUBLIC_TESTS)
    os.makedirs(out, exist_ok=True)
    os.chmod(out, 0o755)
    t0 = time.monotonic()
    os.makedirs(GRADING_ROOT, mode=0o711, exist_ok=True)
    cgroups.sweep_stale(grading_alive)
    workdir = tempfile.mkdtemp(prefix="grade-", dir=GRADING_ROOT)
    try:
        with open(os.path.join(workdir, LOCK_NAME), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # "this grading runs" (see grading_alive)
            try:
                files = prepare_workdir(lab, submission, workdir)
                plan = make_plan(lab, files, workdir, quick, include_hidden, tests)
                with machine_cores(lab.way):
                    facts = run_sandbox(plan, workdir)
                scorer = Scorer(lab, plan, facts, files["missing"], quick, refused=files["refused"])
                results_tests = scorer.score()
                scorer.details.extend(ship_split_flows(facts, workdir, out))
            finally:
                # The sandbox has exited, its jails' processes with it: their cgroups go too.
                cgroups.remove_grading(os.path.basename(workdir))
    finally:
        if keep:
            print(f"vnflab grade: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = results_json(
        lab, results_tests, facts, time.monotonic() - t0, quick, scorer.grader_errors
    )
    write_results(out, lab, results, scorer.details, label or submission, quick)
    return results


# --------------------------------------------------------------------------------------------
# a class
# --------------------------------------------------------------------------------------------


def grade_all(
    submissions_dir: str,
    lab_number,
    out: str,
    jobs: int = 2,
    quick: bool = False,
    include_hidden: bool = True,
    progress=print,
    tests: list[str] | None = None,
) -> list[dict]:
    subs = sorted(
        d
        for d in os.listdir(submissions_dir)
        if os.path.isdir(os.path.join(submissions_dir, d)) and not d.startswith(".")
    )
    if not subs:
        raise GradeError(f"no submission directories in {submissions_dir}")
    lab = labconfig.load(lab_number)
    if lab.way == "dpdk" and jobs > 1:
        # Every DPDK grading pins its poll-mode LB and OVS-DPDK's PMD thread to the same core
        # (CPU 1): two at once share it, and a vhost-user port can then miss its 30 s to come
        # up, which would cost a correct submission every traffic test. One at a time.
        progress("lab 3 gradings spin on the same core: grading them one at a time")
        jobs = 1
    # The users exist before the first grading thread starts (see ensure_users).
    ensure_users()
    os.makedirs(out, exist_ok=True)
    os.chmod(out, 0o755)
    done = 0
    lock = threading.Lock()
    rows = {}
    t0 = time.monotonic()
    progress(f"grading {len(subs)} submissions of lab {lab.number} with {jobs} job(s)")

    def one(name: str) -> dict:
        path = os.path.join(submissions_dir, name)
        sub_out = os.path.join(out, name)
        t = time.monotonic()
        try:
            res = grade(
                path,
                lab.number,
                sub_out,
                quick=quick,
                include_hidden=include_hidden,
                tests=tests,
                label=name,
            )
            return {
                "student": name,
                "score": res["score"],
                "max_score": res["max_score"],
                "tests": {tt["name"]: tt["score"] for tt in res["tests"]},
                "seconds": round(time.monotonic() - t, 1),
                "error": None,
            }
        except Exception as exc:  # noqa: BLE001 - one bad grading must not stop a class
            return {
                "student": name,
                "score": 0.0,
                "max_score": lab.total_points(include_hidden),
                "tests": {},
                "seconds": round(time.monotonic() - t, 1),
                "error": f"{type(exc).__name__}: {exc}",
            }

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, s): s for s in subs}
        for fut in as_completed(futures):
            row = fut.result()
            with lock:
                done += 1
                rows[row["student"]] = row
                width = 30
                bar = "#" * (width * done // len(subs))
                note = (
                    f"ERROR {row['error']}"
                    if row["error"]
                    else f"{row['score']:g}/{row['max_score']:g}"
                )
                progress(
                    f"[{bar:<{width}}] {done}/{len(subs)} {row['student']}: {note} "
                    f"({row['seconds']:.0f} s, {time.monotonic() - t0:.0f} s total)"
                )
    ordered = [rows[s] for s in subs]
    write_gradebook(out, lab, quick, ordered)
    return ordered
