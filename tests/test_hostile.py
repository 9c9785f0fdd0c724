"""The hostile corpus (``tests/hostile/corpus.py``) graded as one class, next to the reference.

Issue 12: no submission may read what it must not, raise its grade, forge its report, hurt
another grading or leave anything behind. One ``grade_all`` (quick profile, two jobs, the
tests the attacks aim at) grades the reference and every hostile submission; the tests below
read the results. Each hostile submission gives itself away when its attack works (a marker, a
line of /etc/shadow, the plan's contents, a forged score outside a code block).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

import grader.grade
from grader.grade import GRADING_ROOT, grade_all
from grader.labconfig import REPO
from grader.scoring import TEST_TITLES, UNIT_TITLES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile"))
import corpus  # noqa: E402

pytestmark = [pytest.mark.network, pytest.mark.slow]
TESTS = ["unit", "starts", "cost"]  # plus the hidden scenarios (eviction: by behaviour)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    subs = tmp_path_factory.mktemp("hostile")
    ref = subs / "reference"
    ref.mkdir()
    for student, path in corpus.FILES.items():
        shutil.copyfile(os.path.join(REPO, path), ref / student)
    for name in corpus.HOSTILE:
        corpus.build(name, str(subs / name))
    out = tmp_path_factory.mktemp("hostile-book")
    lines, workdirs = [], []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):  # the real one; this class's dirs noted
        path = real_mkdtemp(*args, **kwargs)
        workdirs.append(path)
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grader.grade.tempfile, "mkdtemp", mkdtemp)
        rows = grade_all(
            str(subs), 1, str(out), jobs=2, quick=True, tests=TESTS, progress=lines.append
        )
    return {
        "out": str(out),
        "rows": {r["student"]: r for r in rows},
        "progress": lines,
        "workdirs": [w for w in workdirs if w.startswith(GRADING_ROOT)],
    }


def _results(graded, name):
    with open(os.path.join(graded["out"], name, "results.json")) as f:
        res = json.load(f)
    with open(os.path.join(graded["out"], name, "report.md"), encoding="utf-8") as f:
        report = f.read()
    return res, {_key(t["name"]): t for t in res["tests"]}, report


def _key(title: str) -> str:
    """A test's key ("unit", "starts", "cost") from its title; hidden scenarios by title."""
    for key, t in TEST_TITLES.items():
        if t == title:
            return key
    return "unit" if title in UNIT_TITLES.values() else title


def _secrets() -> list[str]:
    """What must appear in no output: lines of /etc/shadow, the plan's own keys, the marker."""
    with open("/etc/shadow") as f:
        shadow = [line.strip() for line in f if line.strip()]
    return [*shadow, corpus.MARKER, '"overlay_ref"', '"student_dir"']


def _outside_code_blocks(markdown: str) -> list[str]:
    """The lines of ``markdown`` that render as Markdown (not inside a fenced code block)."""
    out, fence = [], None
    for line in markdown.splitlines():
        m = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if fence is None:
            if m:
                fence = m.group(1)
            else:
                out.append(line)
        elif (
            m
            and m.group(1)[0] == fence[0]
            and len(m.group(1)) >= len(fence)
            and not line.strip().strip(fence[0])
        ):
            fence = None
    return out


def test_every_submission_is_graded_without_error(graded):
    rows = graded["rows"]
    assert set(rows) == {"reference", *corpus.HOSTILE}
    assert all(r["error"] is None for r in rows.values()), rows


def test_nothing_leaks_into_any_output(graded):
    secrets = _secrets()
    texts = {"progress": "\n".join(graded["progress"])}
    for path in glob.glob(os.path.join(graded["out"], "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                texts[path] = f.read()
    for where, text in texts.items():
        for s in secrets:
            assert s not in text, f"{s[:20]!r}... leaked into {where}"


def test_no_report_renders_a_forged_score_or_html(graded):
    for name in graded["rows"]:
        _, _, report = _results(graded, name)
        rendered = _outside_code_blocks(report)
        assert not [x for x in rendered if "Score: 105" in x or "<script" in x or "<img" in x], name
        scores = [x for x in rendered if x.startswith("Score:")]
        assert len(scores) == 1, (name, scores)
    # and the forgeries were there to be rendered: they are shown, quoted
    _, tests, report = _results(graded, "reportforge")
    assert corpus.FORGED_SCORE in tests["unit"]["output"]  # its exception message
    assert corpus.FORGED_SCORE in tests["starts"]["output"]  # its log, quoted


def test_the_reference_in_the_same_class_gets_full_marks(graded):
    res, _, _ = _results(graded, "reference")
    assert res["score"] == res["max_score"], [
        t for t in res["tests"] if t["score"] < t["max_score"]
    ]


@pytest.mark.parametrize("name", sorted(corpus.HOSTILE))
def test_hostile_scores_no_more_than_its_honest_part(graded, name):
    res, tests, _ = _results(graded, name)
    honest = corpus.HOSTILE[name][1]
    over = {k: t["score"] for k, t in tests.items() if t["score"] > 0 and k not in honest}
    assert not over, f"{name} scored on tests its attack should not earn: {over}"
    # the reference's cost is unchanged beside it: never a grader error about the reference
    assert "Grader note" not in res["output"], res["output"]


def test_links_and_fifos_are_refused_with_a_message(graded):
    _, _, report = _results(graded, "links")
    assert "socket_lb.py is a symbolic link: submit the file itself" in report
    assert "flowtable.py is a FIFO" in report


EVICTION = "hidden: eviction under a 64-entry flow table"


def test_a_stats_link_is_not_followed(graded):
    """Its stats are only quoted (the eviction check is behavioural): the link is named, and
    its table, the reference's, passes."""
    _, tests, _ = _results(graded, "statslink")
    evict = tests[EVICTION]
    assert "stats.json is a symbolic link" in evict["output"], evict["output"]
    assert evict["score"] == evict["max_score"], evict["output"]


def test_a_table_that_lies_in_its_stats_loses_exactly_the_eviction_points(graded):
    """Issue 12, hole 5: a never-forgetting table whose stats claim evictions. The reference's
    flow table is the student file (the unit checks pass); the LB swaps in the liar. Judged by
    behaviour it loses the eviction scenario and nothing else; the reference passes it."""
    ref, ref_tests, _ = _results(graded, "reference")
    res, tests, _ = _results(graded, "tablelie")
    evict = tests[EVICTION]
    assert ref_tests[EVICTION]["score"] == ref_tests[EVICTION]["max_score"]
    assert "re-placed after the pool grew" in ref_tests[EVICTION]["output"]
    assert evict["score"] == 0, evict["output"]
    assert "0 of " in evict["output"] and "it never evicts" in evict["output"], evict["output"]
    assert "evictions" in evict["output"]  # its lie, quoted as not graded
    assert res["score"] == res["max_score"] - evict["max_score"], [
        (k, t["score"], t["output"][:300]) for k, t in tests.items() if t["score"] < t["max_score"]
    ]


def test_forged_unit_verdicts_earn_nothing(graded):
    _, tests, _ = _results(graded, "forger")
    assert tests["unit"]["score"] == 0


def test_a_flood_of_output_does_not_stop_the_grading(graded):
    _, tests, _ = _results(graded, "flood")
    unit = tests["unit"]
    assert unit["score"] == unit["max_score"], unit["output"]  # 1 GiB printed, still judged
    assert os.path.getsize(os.path.join(graded["out"], "flood", "report.md")) < 200_000


def test_a_results_file_written_by_the_submission_is_never_read(graded):
    res, _, _ = _results(graded, "tamper")
    assert "TAMPERED" not in json.dumps(res)
    assert res["score"] == res["max_score"], [
        x for x in res["tests"] if x["score"] < x["max_score"]
    ]  # otherwise the reference: graded normally
    assert not glob.glob("/tmp/results.json")  # its private /tmp vanished with it


def test_nothing_is_left_behind(graded):
    """No grading dir of this class remains, and no student process outlives its grading."""
    assert len(graded["workdirs"]) == 1 + len(corpus.HOSTILE)
    left = [d for d in graded["workdirs"] if os.path.lexists(d)]
    assert not left, left
    orphans = []
    r = subprocess.run(
        ["pgrep", "-u", "vnflab-student"], capture_output=True, text=True, check=False
    )
    for pid in r.stdout.split():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
        except OSError:
            continue
        overlay = env.get(b"PYTHONPATH", b"").decode(errors="replace")
        if any(overlay.startswith(w + "/") for w in graded["workdirs"]):
            orphans.append((pid, overlay))  # a student process of this class
    assert not orphans, orphans
