"""``vnflab grade-mutants --lab N``: grade the mutation corpus and say which test caught each.

The corpus (``tests/grader_fixtures/mutants.py``, instructor-only) is the reference with one
realistic bug per mutant, each naming the test that must catch it. Every mutant is graded like a
class (``grader.grade.grade_all``); a mutant is *caught* when it loses points in its named
test. Prints the caught fraction and, per mutant, the tests where it lost points; writes
``mutants.json`` next to the gradebook. A full corpus run takes a while (about a minute per
mutant per job): a documented command, not part of CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile

from grader.grade import grade_all
from grader.labconfig import REPO


def corpus():
    """The corpus module (it lives with the tests: never released, never in a student's jail).
    The checkout's root goes on the path: the installed ``vnflab`` command does not have it."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from tests.grader_fixtures import mutants

    return mutants


COST_RATIO = re.compile(r"ratio (\d+(?:\.\d+)?)")


def _test_keys() -> dict[str, str]:
    """Test title (as results.json names them) -> the test's key (``unit``, ``cost``...)."""
    from grader.scoring import TEST_TITLES, UNIT_TITLES

    return {**{t: k for k, t in TEST_TITLES.items()}, **{t: "unit" for t in UNIT_TITLES.values()}}


def _results(out: str, name: str) -> tuple[dict, float | None, str | None]:
    """Points lost per test, the cost ratio, or why there are no results."""
    lost, ratio = {}, None
    keys = _test_keys()
    try:
        with open(os.path.join(out, name, "results.json")) as f:
            res = json.load(f)
        for t in res["tests"]:
            key = t.get("number") or keys.get(t["name"], t["name"])
            if t["score"] < t["max_score"]:
                lost[key] = round(t["max_score"] - t["score"], 2)
            if key == "cost":
                found = COST_RATIO.search(t.get("output", ""))
                ratio = float(found.group(1)) if found else None
    except (OSError, ValueError, KeyError) as exc:
        return {}, None, f"no results: {exc}"
    return lost, ratio, None


def grade_mutants(
    lab: int,
    out: str,
    jobs: int = 2,
    quick: bool = False,
    only: list[str] | None = None,
    references: int = 0,
    progress=print,
) -> dict:
    """Grade the lab's mutants (or ``only`` those) and ``references`` copies of the reference
    alongside (it must lose nothing: the reference-vs-reference cost ratios are the spread
    the cost thresholds must clear)."""
    m = corpus()
    from tests.grader_fixtures.make import LAB_FILES

    names = only or m.for_lab(lab)
    bad = [n for n in names if n not in m.MUTANTS or m.MUTANTS[n].lab != lab]
    if bad:
        raise ValueError(f"not lab {lab} mutants: {', '.join(bad)}")
    subs = tempfile.mkdtemp(prefix=f"vnflab-mutants-lab{lab}-")
    os.chmod(subs, 0o755)
    refs = [f"reference-{i + 1}" for i in range(references)]
    try:
        for n in names:
            m.build(n, os.path.join(subs, n))
        for r in refs:
            os.makedirs(os.path.join(subs, r))
            for student, ref in LAB_FILES[lab].items():
                shutil.copyfile(os.path.join(REPO, ref), os.path.join(subs, r, student))
        grade_all(subs, lab, out, jobs=jobs, quick=quick, include_hidden=False, progress=progress)
    finally:
        shutil.rmtree(subs, ignore_errors=True)
    rows = []
    for n in names:
        mut = m.MUTANTS[n]
        lost, ratio, error = _results(out, n)
        rows.append(
            {
                "mutant": n,
                "must_catch": mut.test,
                "why": mut.why,
                "caught": mut.test in lost,
                "lost": lost,
                "cost_ratio": ratio,
                "error": error,
            }
        )
    ref_rows = []
    for r in refs:
        lost, ratio, error = _results(out, r)
        ref_rows.append({"reference": r, "lost": lost, "cost_ratio": ratio, "error": error})
    caught = sum(r["caught"] for r in rows)
    summary = {
        "lab": lab,
        "quick": quick,
        "caught": caught,
        "total": len(rows),
        "fraction": round(caught / max(1, len(rows)), 3),
        "mutants": rows,
        "references": ref_rows,
    }
    with open(os.path.join(out, "mutants.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def table(summary: dict) -> str:
    lines = [
        f"lab {summary['lab']}: {summary['caught']}/{summary['total']} mutants caught "
        f"by their named test ({100 * summary['fraction']:.0f} %)",
        "",
    ]
    for r in summary["mutants"]:
        lost = ", ".join(f"{k} -{v:g}" for k, v in r["lost"].items()) or "nothing lost"
        mark = "caught " if r["caught"] else "MISSED "
        ratio = f" [cost ratio {r['cost_ratio']}]" if r.get("cost_ratio") is not None else ""
        lines.append(
            f"{mark} {r['mutant']:<32} must lose {r['must_catch']:<12} lost: {lost}"
            + ratio
            + (f" ({r['error']})" if r["error"] else "")
        )
    for r in summary.get("references", []):
        lost = ", ".join(f"{k} -{v:g}" for k, v in r["lost"].items()) or "nothing lost"
        lines.append(
            f"{'ok     ' if not r['lost'] else 'REF LOST'} {r['reference']:<32} "
            f"{lost} [cost ratio {r['cost_ratio']}]" + (f" ({r['error']})" if r["error"] else "")
        )
    return "\n".join(lines)
