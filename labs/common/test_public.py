"""Public tests of this lab: the unit checks (fast, no root) and the graded end-to-end check.

(One file for labs 1 and 2: ``vnflab release`` copies it into each lab's ``tests/`` through the
lab's ``[release.extra]``; the lab's own ``checks.py`` says which lab it is and what to check.)

    make unit                           # unit checks of your file(s) (= vnflab lab unit N)
    make check                          # + the end-to-end public tests (root: network namespaces)
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
LAB_DIR = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import checks  # noqa: E402

LAB = int(os.environ.get("VNFLAB_LAB") or checks.LAB)


def _student_module():
    path = os.environ.get("VNFLAB_STUDENT_FILE") or os.path.join(LAB_DIR, checks.MODULE + ".py")
    spec = importlib.util.spec_from_file_location(checks.MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("check", checks.CHECKS, ids=[c.__name__ for c in checks.CHECKS])
def test_unit(check):
    check(_student_module())


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("vnflab"),
    reason="the end-to-end check needs root and vnflab (run: make check)",
)
@pytest.mark.skipif(
    os.environ.get("VNFLAB_E2E") != "1", reason="set VNFLAB_E2E=1 (make check runs it)"
)
def test_end_to_end_public_tests():
    r = subprocess.run(
        ["vnflab", "lab", "check", str(LAB), "--submission", LAB_DIR],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
