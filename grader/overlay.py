"""A grading's files: the submission laid over a copy of the ``vnf`` package, and its work dir.

The LB program a submission is graded with is the reference package with the student's files
in place of the reference ones (``labs/labN/lab.toml`` says which file goes where), run as
``python -m vnf.ways.<way>_lb`` with the copy first on ``PYTHONPATH``: the way contract. A
second, untouched copy is the reference its per-packet cost is compared with.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys

from grader.errors import GradeError
from grader.labconfig import REPO, Lab
from grader.markers import blocks, strip
from grader.untrusted import SUBMISSION_FILE_MAX, copy_regular, kind


def reference_files(lab: Lab) -> dict[str, str]:
    """student file -> the reference's path in this checkout."""
    return {name: os.path.join(REPO, ref) for name, ref in lab.files.items()}


def starter_text(lab: Lab, name: str) -> str:
    """The released starter of a student file: what a submission that lacks it is graded with."""
    path = os.path.join(REPO, lab.files[name])
    with open(path) as f:
        return strip(f.read(), lab.name, path)


def find_submission_files(
    submission: str, lab: Lab
) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """student file -> path in the submission; the names it lacks; and the names refused, with
    why (a link, a FIFO, a device or a directory where the file should be: root never follows or
    opens such a thing on the student's behalf). Looked for at the top, then anywhere below
    (hidden dirs and tests/ aside) without following a link to a directory."""
    if submission == "reference":
        return reference_files(lab), [], {}
    if not os.path.isdir(submission):
        raise GradeError(f"submission {submission!r} is not a directory")
    found, missing, refused = {}, [], {}
    for name in lab.files:
        top = os.path.join(submission, name)
        hit: str | None = top if os.path.lexists(top) else None
        if hit is None:
            for root, dirs, files in os.walk(submission):  # never follows links
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "tests")
                if name in files or name in dirs:
                    hit = os.path.join(root, name)
                    break
        if hit is None:
            missing.append(name)
            continue
        mode = os.lstat(hit).st_mode
        if stat.S_ISREG(mode):
            found[name] = hit
        elif stat.S_ISLNK(mode):
            refused[name] = f"{name} is a symbolic link: submit the file itself"
        else:
            refused[name] = f"{name} is {kind(mode)}, not a regular file: submit the file itself"
    return found, missing, refused


def copy_vnf(dest: str) -> None:
    """A copy of this checkout's ``vnf`` package (sources and built extensions) in ``dest``."""
    shutil.copytree(
        os.path.join(REPO, "vnf"),
        os.path.join(dest, "vnf"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.c", "*.o"),
    )


def lb_command(overlay: str, lab: Lab) -> list[str]:
    """The lab's LB program on an overlay, unjailed (``vnflab lab run`` and ``lab shell`` on
    the student's own machine): the way contract, with the overlay first on the path."""
    return ["env", f"PYTHONPATH={overlay}", sys.executable, "-m", f"vnf.ways.{lab.way}_lb"]


def strip_later_labs(dest_dir: str, lab: Lab) -> None:
    """Replace, in the overlay's ``vnf`` copy, the solution blocks of the labs after ``lab`` by
    their TODOs: a lab-1 submission must not find lab 2's parser or lab 3's LB in the package
    it runs with. Earlier labs' blocks stay (the release hands them out too)."""
    for root, _, fnames in os.walk(os.path.join(dest_dir, "vnf")):
        for fn in fnames:
            if not fn.endswith(".py"):
                continue
            path = os.path.join(root, fn)
            with open(path) as f:
                text = f.read()
            if "# BEGIN SOLUTION" not in text:
                continue
            later = sorted({b.lab for b in blocks(text, path) if int(b.lab[3:]) > lab.number})
            for name in later:
                text = strip(text, name, path)
            if later:
                with open(path, "w") as f:
                    f.write(text)


def build_overlay(dest_dir: str, submission: str, lab: Lab) -> tuple[list[str], dict[str, str]]:
    """A copy of the vnf package in ``dest_dir`` with the submission's files in place of the
    reference ones (a missing or refused file gets the starter: it imports, and raises where
    work is due). Put ``dest_dir`` first on PYTHONPATH to run the submission. Each student file
    is read through ``grader.untrusted.copy_regular`` (a regular file, at most 1 MiB, read from
    the opened descriptor) and lands root-owned, mode 0644. Returns the missing names and the
    refused ones with why."""
    copy_vnf(dest_dir)
    strip_later_labs(dest_dir, lab)
    files, missing, refused = find_submission_files(submission, lab)
    for name, target in lab.files.items():
        dest = os.path.join(dest_dir, target)
        if name in files:
            try:
                copy_regular(files[name], dest, SUBMISSION_FILE_MAX)
                continue
            except OSError as exc:  # swapped for a link meanwhile, too big, ...
                refused[name] = f"{name} could not be taken: {exc}"
        with open(dest, "w") as f:
            f.write(starter_text(lab, name))
    return missing, refused


def _unit_checks(lab: Lab, unit_dir: str, sub: str) -> dict | None:
    """Copy the lab's unit checks (``labs/labN/tests/checks.py``) and the helpers the release
    puts next to them (``[release.extra]`` under ``tests/``) into ``unit_dir``: the unit
    harness imports them as the student's own ``tests/`` would. None when the lab has none."""
    checks = os.path.join(lab.path, "tests", "checks.py")
    if not os.path.exists(checks):
        return None
    shutil.copyfile(checks, os.path.join(unit_dir, "checks.py"))
    hidden = os.path.join(lab.path, "hidden", "unit_checks.py")  # never released
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
    return {
        "checks": os.path.join(unit_dir, "checks.py"),
        "module": mod_name,
        "file": os.path.join(sub, target),
        "timeout_s": 60,
    }


def prepare_workdir(lab: Lab, submission: str, workdir: str) -> dict:
    """Lay out one grading's ``workdir``: ``ref/`` and ``sub/`` (the two overlays) and ``unit/``
    (the unit checks). All root's: a jailed process sees only what its jail binds in (its own
    overlay, read-only; ``grader.jail``), never this directory. Returns where things are, the
    unit-check plan (or None), the student files the submission lacks and those refused."""
    os.chmod(workdir, 0o700)
    ref, sub = os.path.join(workdir, "ref"), os.path.join(workdir, "sub")
    copy_vnf(ref)
    missing, refused = build_overlay(sub, submission, lab)
    unit_dir = os.path.join(workdir, "unit")
    os.makedirs(unit_dir)
    unit = _unit_checks(lab, unit_dir, sub)
    # Readable through the jails' binds by the users the LBs run as (the dirs above are not).
    for root, dirs, fnames in os.walk(workdir):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for fn in fnames:
            os.chmod(os.path.join(root, fn), 0o644)
    return {
        "overlay_ref": ref,
        "overlay_sub": sub,
        "unit": unit,
        "missing": missing,
        "refused": refused,
    }
