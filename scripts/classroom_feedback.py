#!/usr/bin/env python3
"""What a student sees of a grading: the commit status line and the feedback comment.

Used by the report job of ``.github/workflows/grade-class.yml`` (the course's grading
repository). It reads the ``results.json`` that ``vnflab grade`` wrote and shows the student
only what Gradescope would show before the grades are published: the tests marked ``visible``
in full, the hidden scenarios (``after_published``) as a count and nothing else, so that
pushing again and again cannot map out the hidden tests. Standard library only: the report job
does not install vnflab.

    classroom_feedback.py RESULTS_JSON --lab N --status     # one line, <= 140 characters
    classroom_feedback.py RESULTS_JSON --lab N --markdown   # the comment body
"""

from __future__ import annotations

import argparse
import json
import sys

VISIBLE = "visible"
STATUS_MAX = 140  # GitHub cuts a commit status description there


def longest_run(text: str, char: str) -> int:
    best = run = 0
    for c in text:
        run = run + 1 if c == char else 0
        best = max(best, run)
    return best


def visible_tests(results: dict) -> list[dict]:
    return [t for t in results.get("tests", []) if t.get("visibility", VISIBLE) == VISIBLE]


def status_line(results: dict) -> str:
    shown = visible_tests(results)
    score = sum(float(t.get("score", 0)) for t in shown)
    most = sum(float(t.get("max_score", 0)) for t in shown)
    hidden = len(results.get("tests", [])) - len(shown)
    line = f"public tests {score:g}/{most:g}"
    if hidden:
        line += f"; {hidden} hidden scenario(s) graded, scores after the deadline"
    return line[:STATUS_MAX]


def markdown(results: dict, lab: int, sha: str = "") -> str:
    shown = visible_tests(results)
    head = f"## vnflab lab {lab}" + (f": commit {sha[:12]}" if sha else "")
    lines = [
        head,
        "",
        f"**{status_line(results)}**",
        "",
        "| test | score | max |",
        "|---|---:|---:|",
    ]
    for t in shown:
        lines.append(
            f"| {t.get('name', '?')} | {float(t.get('score', 0)):g} "
            f"| {float(t.get('max_score', 0)):g} |"
        )
    failed = [t for t in shown if float(t.get("score", 0)) < float(t.get("max_score", 0))]
    lines += ["", "### What failed and why", ""]
    if not failed:
        lines.append("Nothing: every public test passed.")
    for t in failed:
        # the grader's own text, shown as text (it may quote what the submission printed)
        text = str(t.get("output", "")).strip()
        fence = "`" * max(3, longest_run(text, "`") + 1)
        lines += [f"**{t.get('name', '?')}**", "", fence + "text", text, fence, ""]
    lines += [
        "",
        "_Posted by the course's grader. Run `make check` to reproduce the public "
        "tests on your machine._",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--lab", type=int, required=True)
    p.add_argument("--sha", default="")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--status", action="store_true")
    what.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    sys.stdout.write(
        status_line(results) + "\n" if args.status else markdown(results, args.lab, args.sha)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
