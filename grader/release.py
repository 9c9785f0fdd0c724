"""``vnflab release OUT``: the student tree, generated from the instructor tree.

For each lab: ``OUT/labN/`` holds the handout (README.md), the student's files (the reference
files with the lab's solution blocks replaced by a TODO and ``raise NotImplementedError``), the
public tests, a Makefile (``make unit``, ``make run``, ``make check``: all through ``vnflab``, so
its own Python and venv, never the system ``python3``) and the GitHub Classroom workflow. Hidden
scenarios (``labs/hidden``, ``labs/labN/hidden``) and every other solution stay behind: only the
files named here are copied. The starter imports and runs, and fails the tests.
"""

from __future__ import annotations

import os
import shutil

from grader import labconfig
from grader.labconfig import REPO
from grader.markers import strip

MAKEFILE = """\
# vnflab lab {n}: run your load balancer in the topology, and check it with the public tests.
LAB := {n}
VNFLAB ?= vnflab
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run check unit shell
run:            ## your LB in the default topology: affinity report and per-packet cost
\t$(SUDO) $(VNFLAB) lab run $(LAB) --submission .

shell:          ## Mininet's prompt on the topology with your LB running (traffic, flows, pcap)
\t$(SUDO) $(VNFLAB) lab shell $(LAB) --submission .

unit:           ## the fast unit checks only (no root needed; vnflab's Python has pytest)
\t$(VNFLAB) lab unit $(LAB) --submission .

check: unit     ## the public tests, graded like the real thing (hidden tests excluded)
\t$(SUDO) $(VNFLAB) lab check $(LAB) --submission .
"""


def release_lab(lab: labconfig.Lab, out: str) -> list[str]:
    dest = os.path.join(out, lab.name)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(os.path.join(dest, "tests"))
    written = []
    for name, ref in lab.files.items():
        with open(os.path.join(REPO, ref)) as f:
            text = strip(f.read(), lab.name, ref)
        with open(os.path.join(dest, name), "w") as f:
            f.write(text)
        written.append(name)
    readme = os.path.join(lab.path, "README.md")
    if os.path.exists(readme):
        shutil.copyfile(readme, os.path.join(dest, "README.md"))
        written.append("README.md")
    tests = os.path.join(lab.path, "tests")
    for fn in sorted(os.listdir(tests)) if os.path.isdir(tests) else []:
        if fn.endswith(".py"):
            shutil.copyfile(os.path.join(tests, fn), os.path.join(dest, "tests", fn))
            written.append(f"tests/{fn}")
    for rel, src in lab.raw.get("release", {}).get("extra", {}).items():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(REPO, src), target)
        written.append(rel)
    with open(os.path.join(dest, "Makefile"), "w") as f:
        f.write(MAKEFILE.format(n=lab.number))
    written.append("Makefile")
    wf = os.path.join(REPO, "labs", "common", "classroom.yml")
    if os.path.exists(wf):
        os.makedirs(os.path.join(dest, ".github", "workflows"))
        with open(wf) as f:
            text = f.read().replace("VNFLAB_LAB: 1", f"VNFLAB_LAB: {lab.number}")
        with open(os.path.join(dest, ".github", "workflows", "classroom.yml"), "w") as f:
            f.write(text)
        written.append(".github/workflows/classroom.yml")
    return written


def release(out: str, labs: list[int] | None = None, log=print) -> dict[str, list[str] | str]:
    os.makedirs(out, exist_ok=True)
    done: dict[str, list[str] | str] = {}
    for n in labs or labconfig.all_labs():
        lab = labconfig.load(n)
        why = lab.available()
        if why:
            done[lab.name] = f"skipped: {why}"
            log(f"{lab.name}: skipped ({why})")
            continue
        files = release_lab(lab, out)
        done[lab.name] = files
        log(f"{lab.name}: {os.path.join(out, lab.name)} ({', '.join(files)})")
    return done
