"""What a grading writes: ``results.json`` (Gradescope's format) and ``report.md`` for one
submission, ``gradebook.csv`` and ``gradebook.json`` for a class."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence

from grader.labconfig import Lab
from vnf.jsonfile import write_json_atomic


def quote(text: str) -> str:
    """``text`` as a Markdown code block that nothing in it can close or turn into markup.

    What a submission printed (its log tail, an exception's message) is shown as it is, never
    rendered: the fence is longer than any run of backticks in the text (a Markdown fence only
    closes on a run at least as long), and inside a fenced block HTML is shown, not rendered.
    A submission that prints "```" and "# Score: 105/105" gets those characters in a box."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def inline(text: str) -> str:
    """A short piece of outside text (a submission's label) as inline code on one line."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)[:200]
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    tick = "`" * (longest + 1)
    return f"{tick} {text} {tick}"


def results_json(
    lab: Lab,
    tests: list[dict],
    facts: dict,
    elapsed: float,
    quick: bool,
    grader_errors: Sequence[str] = (),
) -> dict:
    """Gradescope's results.json from the scored tests (``grader.scoring.Scorer.score``); the
    grader's own faults (``grader_errors``, a sandbox stopped) are noted in its output."""
    total = sum(t["score"] for t in tests)
    max_total = sum(t["max_score"] for t in tests)
    results = {
        "score": round(total, 2),
        "max_score": max_total,
        "execution_time": round(elapsed, 1),
        "output": f"vnflab lab {lab.number} ({lab.title}): {total:.1f} / {max_total:g}"
        + (" [quick profile]" if quick else ""),
        "stdout_visibility": "hidden",
        # outputs quote what the submission printed: shown as plain text, never as HTML/Markdown
        "output_format": "text",
        "test_output_format": "text",
        "tests": [{k: v for k, v in t.items() if k != "number"} for t in tests],
    }
    notes = [
        n
        for n in (facts.get("stopped"), (facts.get("grader_error") or "")[:500], *grader_errors)
        if n
    ]
    for note in notes:
        results["output"] += "\nGrader note: " + note
    return results


def report_md(
    lab: Lab, results: dict, details: list[tuple[str, str]], who: str, quick: bool
) -> str:
    """report.md: the score table, then what failed and every test output. Every output and
    detail may quote the submission, so each is a ``quote`` block: only the grader's own words
    (titles, the table, the score line) are Markdown."""
    lines = [
        f"# vnflab lab {lab.number}: {lab.title}",
        "",
        f"Submission: {inline(who)}  ",
        f"Score: **{results['score']:g} / {results['max_score']:g}**"
        + (" (quick profile)" if quick else ""),
        "",
        "| test | score | max |",
        "|---|---:|---:|",
    ]
    for t in results["tests"]:
        lines.append(f"| {t['name']} | {t['score']:g} | {t['max_score']:g} |")
    lines += ["", "## What failed and why", ""]
    for name, text in details:
        lines += [f"### {name}", "", quote(text), ""]
    if not details:
        missed = [t["name"] for t in results["tests"] if t["score"] < t["max_score"]]
        lines.append(
            "Nothing: every test passed."
            if not missed
            else "See the outputs below of: " + "; ".join(missed) + "."
        )
    lines += ["", "## All test outputs", ""]
    for t in results["tests"]:
        if t["visibility"] == "visible" or t["score"] < t["max_score"]:
            lines += [
                f"**{t['name']}** ({t['score']:g}/{t['max_score']:g})",
                "",
                quote(t["output"]),
                "",
            ]
    return "\n".join(lines) + "\n"


def write_results(
    out: str, lab: Lab, results: dict, details: list[tuple[str, str]], who: str, quick: bool
) -> None:
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
            w.writerow(
                [
                    r["student"],
                    r["score"],
                    r["max_score"],
                    pct,
                    *[r["tests"].get(n, "") for n in names],
                    r["error"] or "",
                ]
            )
    write_json_atomic(
        os.path.join(out, "gradebook.json"),
        {"lab": lab.number, "title": lab.title, "quick": quick, "submissions": rows},
        indent=1,
    )
