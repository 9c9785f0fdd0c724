"""A grading's files: the submission laid over a copy of the ``vnf`` package, and its work dir.

The LB program a submission is graded with is the reference package with the student's files
in place of the reference ones (``labs/labN/lab.toml`` says which file goes where), run as
``python -m vnf.ways.<way>_lb`` with the copy first on ``PYTHONPATH``: the way contract. A
second, untouched copy is the reference its per-packet cost is compared with.
"""
from __future__ import annotations

import os
import shutil

from grader.errors import GradeError
from grader.labconfig import REPO, Lab
from grader.markers import strip
from grader.sandbox_user import student_ids


def reference_files(lab: Lab) -> dict[str, str]:
    """student file -> the reference's path in this checkout."""
    return {name: os.path.join(REPO, ref) for name, ref in lab.files.items()}


def starter_text(lab: Lab, name: str) -> str:
    """The released starter of a student file: what a submission that lacks it is graded with."""
    path = os.path.join(REPO, lab.files[name])
    with open(path) as f:
        return strip(f.read(), lab.name, path)


def find_submission_files(submission: str, lab: Lab) -> tuple[dict[str, str], list[str]]:
    """student file -> path in the submission; and the names it lacks."""
    if submission == "reference":
        return reference_files(lab), []
    if not os.path.isdir(submission):
        raise GradeError(f"submission {submission!r} is not a directory")
    found, missing = {}, []
    for name in lab.files:
        top = os.path.join(submission, name)
        if os.path.isfile(top):
            found[name] = top
            continue
        hit = None
        for root, dirs, files in os.walk(submission):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "tests")
            if name in files:
                hit = os.path.join(root, name)
                break
        if hit:
            found[name] = hit
        else:
            missing.append(name)
    return found, missing


def copy_vnf(dest: str) -> None:
    """A copy of this checkout's ``vnf`` package (sources and built extensions) in ``dest``."""
    shutil.copytree(os.path.join(REPO, "vnf"), os.path.join(dest, "vnf"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.c", "*.o"))


def build_overlay(dest_dir: str, submission: str, lab: Lab) -> list[str]:
    """A copy of the vnf package in ``dest_dir`` with the submission's files in place of the
    reference ones (a missing file gets the starter: it imports, and raises where work is due).
    Put ``dest_dir`` first on PYTHONPATH to run the submission. Returns the missing names."""
    copy_vnf(dest_dir)
    files, missing = find_submission_files(submission, lab)
    for name, target in lab.files.items():
        dest = os.path.join(dest_dir, target)
        if name in files:
            shutil.copyfile(files[name], dest)
        else:
            with open(dest, "w") as f:
                f.write(starter_text(lab, name))
    return missing


def _unit_checks(lab: Lab, unit_dir: str, sub: str) -> dict | None:
    """Copy the lab's unit checks (``labs/labN/tests/checks.py``) and the helpers the release
    puts next to them (``[release.extra]`` under ``tests/``) into ``unit_dir``: the unit
    harness imports them as the student's own ``tests/`` would. None when the lab has none."""
    checks = os.path.join(lab.path, "tests", "checks.py")
    if not os.path.exists(checks):
        return None
    shutil.copyfile(checks, os.path.join(unit_dir, "checks.py"))
    hidden = os.path.join(lab.path, "hidden", "unit_checks.py")    # never released
    if os.path.exists(hidden):
        shutil.copyfile(hidden, os.path.join(unit_dir, "hidden_checks.py"))
    for rel, src in lab.raw.get("release", {}).get("extra", {}).items():
        if rel.startswith("tests/") and rel.endswith(".py"):
            shutil.copyfile(os.path.join(REPO, src), os.path.join(unit_dir, os.path.basename(rel)))
    mod_name = None
    with open(checks) as f:
        for line in f:
            if line.startswith("MODULE ="):
                mod_name = line.split("=", 1)[1].split("#")[0].strip().strip("\"'")
    target = next(t for n, t in lab.files.items() if n == f"{mod_name}.py")
    return {"checks": os.path.join(unit_dir, "checks.py"), "module": mod_name,
            "file": os.path.join(sub, target), "timeout_s": 60}


def prepare_workdir(lab: Lab, submission: str, workdir: str) -> dict:
    """Lay out one grading's ``workdir``: ``ref/`` and ``sub/`` (the two overlays), ``unit/``
    (the unit checks) and ``run/``, the only directory the student user owns (ready and stats
    files). Everything else is root's and read-only to others. Returns where things are, the
    unit-check plan (or None) and the student files the submission lacks."""
    os.chmod(workdir, 0o711)
    ref, sub = os.path.join(workdir, "ref"), os.path.join(workdir, "sub")
    copy_vnf(ref)
    missing = build_overlay(sub, submission, lab)
    unit_dir = os.path.join(workdir, "unit")
    os.makedirs(unit_dir)
    unit = _unit_checks(lab, unit_dir, sub)
    run = os.path.join(workdir, "run")
    os.makedirs(run)
    uid, gid, _ = student_ids()
    os.chown(run, uid, gid)
    os.chmod(run, 0o700)
    for root, dirs, fnames in os.walk(workdir):
        if root.startswith(run):
            continue
        for d in dirs:
            if os.path.join(root, d) != run:
                os.chmod(os.path.join(root, d), 0o755)
        for fn in fnames:
            os.chmod(os.path.join(root, fn), 0o644)
    return {"overlay_ref": ref, "overlay_sub": sub, "student_dir": run, "unit": unit,
            "missing": missing}
