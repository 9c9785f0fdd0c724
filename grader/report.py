"""What a grading writes: ``results.json`` (Gradescope's format) and ``report.md`` for one
submission, ``gradebook.csv`` and ``gradebook.json`` for a class."""
from __future__ import annotations

import csv
import os

from vnf.jsonfile import write_json_atomic

from grader.labconfig import Lab



def results_json(lab: Lab, tests: list[dict], facts: dict, elapsed: float, quick: bool) -> dict:
    """Gradescope's results.json from the scored tests (``grader.scoring.Scorer.score``)."""
    total = sum(t["score"] for t in tests)
    max_total = sum(t["max_score"] for t in tests)
    results = {
        "score": round(total, 2), "max_score": max_total,
        "execution_time": round(elapsed, 1),
        "output": f"vnflab lab {lab.number} ({lab.title}): {total:.1f} / {max_total:g}"
                  + (" [quick profile]" if quick else ""),
        "stdout_visibility": "hidden",
        "tests": [{k: v for k, v in t.items() if k != "number"} for t in tests],
    }
    if facts.get("grader_error") or facts.get("stopped"):
        note = facts.get("stopped") or facts["grader_error"][:500]
        results["output"] += "\nGrader note: " + note
    return results


def report_md(lab: Lab, results: dict, details: list[str], who: str, quick: bool) -> str:
    lines = [f"# vnflab lab {lab.number}: {lab.title}", "",
             f"Submission: `{who}`  ", f"Score: **{results['score']:g} / {results['max_score']:g}**"
             + (" (quick profile)" if quick else ""), "",
             "| test | score | max |", "|---|---:|---:|"]
    for t in results["tests"]:
        lines.append(f"| {t['name']} | {t['score']:g} | {t['max_score']:g} |")
    lines += ["", "## What failed and why", ""]
    lines += details or ["Nothing: every test passed."]
    lines += ["", "## All test outputs", ""]
    for t in results["tests"]:
        if t["visibility"] == "visible" or t["score"] < t["max_score"]:
            lines += [f"**{t['name']}** ({t['score']:g}/{t['max_score']:g})", "", t["output"], ""]
    return "\n".join(lines) + "\n"


def write_results(out: str, lab: Lab, results: dict, details: list[str], who: str,
                  quick: bool) -> None:
    """OUT/results.json and OUT/report.md of one submission."""
    write_json_atomic(os.path.join(out, "results.json"), results, indent=1)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report_md(lab, results, details, who, quick))


def write_gradebook(out: str, lab: Lab, quick: bool, rows: list[dict]) -> None:
    """OUT/gradebook.csv (one line per student, one column per test) and OUT/gradebook.json."""
    names = []
    for r in rows:
        for n in r["tests"]:
            if n not in names:
                names.append(n)
    with open(os.path.join(out, "gradebook.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "score", "max_score", "percent", *names, "error"])
        for r in rows:
            pct = round(100 * r["score"] / r["max_score"], 1) if r["max_score"] else 0
            w.writerow([r["student"], r["score"], r["max_score"], pct,
                        *[r["tests"].get(n, "") for n in names], r["error"] or ""])
    write_json_atomic(os.path.join(out, "gradebook.json"),
                      {"lab": lab.number, "title": lab.title, "quick": quick, "submissions": rows},
                      indent=1)
