"""vnflab release: the student tree is generated from the solution markers and leaks nothing."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from grader import labconfig, markers
from grader.labconfig import REPO

SAMPLE = """def f(x):
    y = 1
    # BEGIN SOLUTION lab1: double it
    z = x * 2 + y
    return z
    # END SOLUTION

def g():
    # BEGIN SOLUTION lab2-fast: later lab
    return 42
    # END SOLUTION
"""


def test_strip_replaces_the_lab_block_and_keeps_other_labs_code():
    out = markers.strip(SAMPLE, "lab1")
    assert "z = x * 2 + y" not in out
    assert "    # TODO (lab1): double it\n    raise NotImplementedError('lab1: double it')\n" in out
    assert "return 42" in out and "SOLUTION" not in out
    compile(out, "sample", "exec")
    out2 = markers.strip(SAMPLE, "lab2")
    assert "z = x * 2 + y" in out2 and "return 42" not in out2 and "SOLUTION" not in out2
    assert markers.solution_lines(SAMPLE, "lab1") == {
        "z = x * 2 + y"
    }  # short lines are not distinctive


@pytest.mark.parametrize(
    "text",
    [
        "# BEGIN SOLUTION lab1: a\n",
        "# END SOLUTION\n",
        "# BEGIN SOLUTION lab1\n# BEGIN SOLUTION lab1\n# END SOLUTION\n",
    ],
)
def test_unbalanced_markers_are_refused(text):
    with pytest.raises(markers.MarkerError):
        markers.blocks(text)


def test_every_lab_file_has_its_blocks():
    for n in labconfig.all_labs():
        lab = labconfig.load(n)
        if lab.available():
            continue
        for _name, ref in lab.files.items():
            with open(os.path.join(REPO, ref)) as f:
                found = [b for b in markers.blocks(f.read(), ref) if b.lab == lab.name]
            assert found, f"{ref} has no {lab.name} solution block"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    from grader.release import release

    out = str(tmp_path_factory.mktemp("student"))
    done = release(out, log=lambda *_: None)
    return out, done


def test_hidden_scenarios_are_instructor_only():
    """Every place hidden scenarios are read from is covered in the student's jail, and the
    shared ones (labs/hidden) reach every lab."""
    hidden_paths = {os.path.join(REPO, p) for p in labconfig.INSTRUCTOR_ONLY}
    shared = {os.path.splitext(f)[0] for f in os.listdir(labconfig.SHARED_HIDDEN)}
    assert shared, "no shared hidden scenario"
    for n in labconfig.all_labs():
        for d in labconfig.hidden_dirs(n):
            assert d in hidden_paths, f"{d} is not in INSTRUCTOR_ONLY"
        assert shared <= {h["id"] for h in labconfig.load(n).hidden}


def test_release_writes_labs_and_leaks_no_solution(released):
    out, done = released
    assert isinstance(done["lab1"], list) and isinstance(done["lab2"], list)
    assert set(os.listdir(out)) == {n for n, v in done.items() if isinstance(v, list)}
    for root, dirs, _ in os.walk(out):
        assert "hidden" not in dirs, f"a hidden directory in the release: {root}/hidden"
    for n in labconfig.all_labs():
        lab = labconfig.load(n)
        if not isinstance(done.get(lab.name), list):
            continue
        dest = os.path.join(out, lab.name)
        every = []
        for root, dirs, files in os.walk(dest):
            assert "hidden" not in dirs, "hidden scenarios must not be released"
            for fn in files:
                with open(os.path.join(root, fn), errors="replace") as f:
                    every.append((fn, f.read()))
        blob = "\n".join(text for _, text in every)
        assert "BEGIN SOLUTION" not in blob and "END SOLUTION" not in blob
        for h in lab.hidden:  # hidden scenario names never appear
            assert h["name"] not in blob
        for name, ref in lab.files.items():
            with open(os.path.join(REPO, ref)) as f:
                leaked = [
                    line
                    for line in markers.solution_lines(f.read(), lab.name)
                    if line in {x.strip() for x in blob.splitlines()}
                ]
            assert not leaked, f"{lab.name}/{name} leaks solution lines: {leaked[:3]}"
            starter = os.path.join(dest, name)
            subprocess.run([sys.executable, "-m", "py_compile", starter], check=True)
            with open(starter) as f:
                assert f"raise NotImplementedError('{lab.name}:" in f.read()
        musts = ["README.md", "Makefile", "tests/test_public.py"]
        if lab.raw["lab"].get("unit"):
            musts.append("tests/checks.py")
        for must in musts:
            assert os.path.exists(os.path.join(dest, must)), must


def test_released_loop_files_hold_the_students_part_not_the_rig(released):
    """Labs 2 and 3 hand out the hot loop and the forward functions; option parsing, set-up,
    workers/lcores and stats are provided modules (vnf/ways/*_program.py) the starter imports."""
    out, done = released
    for lab, name in ((2, "afpacket_lb.py"), (3, "dpdk_lb.py")):
        if not isinstance(done.get(f"lab{lab}"), list):
            continue
        with open(os.path.join(out, f"lab{lab}", name)) as f:
            text = f.read()
        assert len(text.splitlines()) < 150, f"lab{lab}/{name}: {len(text.splitlines())} lines"
        assert "def forward_perpacket" in text and "def forward_vector" in text
        assert "def setup" not in text and "def extra_stats" not in text


@pytest.mark.parametrize("lab", [1, 2])
def test_released_starter_imports_and_fails_its_public_tests(released, lab):
    out, _ = released
    dest = os.path.join(out, f"lab{lab}")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=dest,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stdout[-2000:]
    assert "NotImplementedError" in r.stdout and "error" not in r.stdout.splitlines()[-1]
    # the same public tests pass on the reference file
    lab_cfg = labconfig.load(lab)
    ref = next(
        os.path.join(REPO, p)
        for n, p in lab_cfg.files.items()
        if n.startswith(("flowtable", "packet"))
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=dest,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VNFLAB_STUDENT_FILE": ref},
    )
    assert r.returncode == 0, r.stdout[-2000:]
    for name in lab_cfg.files:  # the starter modules import
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import importlib.util as u; s = u.spec_from_file_location('m', '{dest}/{name}'); u.module_from_spec(s); s.loader.exec_module(u.module_from_spec(s))",
            ],
            check=True,
            cwd=dest,
            timeout=60,
        )


@pytest.mark.skipif(not shutil.which("make"), reason="make not installed")
def test_make_unit_uses_vnflabs_python_not_the_systems(released, tmp_path):
    """``make unit`` in a released lab runs through ``vnflab lab unit N``: it works where the
    system python3 has neither pytest nor vnf (a student VM), here a python3 that always fails."""
    out, _ = released
    dest = os.path.join(out, "lab1")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text("#!/bin/sh\necho 'no pytest here' >&2\nexit 3\n")
    (fake_bin / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "PYTHONPATH": REPO}
    make = ["make", "-s", "unit", f"VNFLAB={sys.executable} -m vnflab.cli"]
    r = subprocess.run(make, cwd=dest, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "NotImplementedError" in r.stdout, r.stdout + r.stderr
    assert "no pytest here" not in r.stderr
    ref = os.path.join(REPO, labconfig.load(1).files["flowtable.py"])
    r = subprocess.run(
        make,
        cwd=dest,
        env={**env, "VNFLAB_STUDENT_FILE": ref},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" in r.stdout.splitlines()[-1]
    r = subprocess.run(
        [sys.executable, "-m", "vnflab.cli", "lab", "unit", "1", "--submission", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no tests/" in r.stderr


def test_released_workflow_grades_nothing_and_holds_no_secret(released):
    """The student can edit this workflow: so it must hold nothing worth taking (no secret, no
    checkout of the course's private repository) and decide nothing (no grading)."""
    out, done = released
    for lab, files in done.items():
        if not isinstance(files, list):
            continue
        assert ".github/workflows/classroom.yml" in files
        with open(os.path.join(out, lab, ".github", "workflows", "classroom.yml")) as f:
            text = f.read()
        assert "secrets." not in text and "github.token" not in text
        assert not re.search(r"^\s*-?\s*(repository|token|ssh-key):", text, re.M)
        assert "vnflab grade" not in text and "install.sh" not in text
        assert f"VNFLAB_LAB: {labconfig.load(lab[3:]).number}" in text
        yaml = pytest.importorskip("yaml")
        doc = yaml.safe_load(text)
        assert doc["permissions"] == {"contents": "read"}
        for job in doc["jobs"].values():
            assert "permissions" not in job and "secrets" not in job
            for step in job["steps"]:
                assert set(step.get("with", {})) <= {"persist-credentials"}, step
