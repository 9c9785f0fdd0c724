"""Subcommands of ``vnflab`` for the labs and the autograder (registered by ``vnflab.cli``).

vnflab lab list
vnflab lab unit N [--submission DIR]       # the lab's public unit checks (no root)
vnflab lab run N [--submission DIR]        # your LB in the topology (not graded)
vnflab lab shell N [--submission DIR]      # ... and Mininet's prompt, to poke at it
vnflab lab check N [--submission DIR]      # the public tests, graded (hidden ones excluded)
vnflab release OUT [--lab N]               # the student tree, from the solution markers
vnflab grade SUBMISSION --lab N --out DIR  # results.json (Gradescope) + report.md
vnflab grade-all SUBMISSIONS --lab N --jobs J --out DIR   # a class: gradebook.csv/.json
"""

from __future__ import annotations

import os
import sys
import tempfile


def _print_results(res: dict, out: str) -> None:
    print(res["output"])
    for t in res["tests"]:
        mark = "ok  " if t["score"] >= t["max_score"] else "FAIL"
        print(f"  {mark} {t['score']:>5g}/{t['max_score']:<4g} {t['name']}")
    print(
        f"results: {os.path.join(out, 'results.json')}\nreport:  {os.path.join(out, 'report.md')}"
    )


def cmd_grade(args) -> int:
    from grader.errors import GradeError
    from grader.grade import grade

    try:
        res = grade(
            args.submission,
            args.lab,
            args.out,
            quick=args.quick,
            include_hidden=not args.no_hidden,
            keep=args.keep,
        )
    except GradeError as exc:
        print(f"vnflab grade: {exc}", file=sys.stderr)
        return 2
    _print_results(res, args.out)
    return 0


def cmd_grade_all(args) -> int:
    from grader.errors import GradeError
    from grader.grade import grade_all

    try:
        rows = grade_all(
            args.submissions,
            args.lab,
            args.out,
            jobs=args.jobs,
            quick=args.quick,
            include_hidden=not args.no_hidden,
            progress=lambda m: print(m, flush=True),
        )
    except GradeError as exc:
        print(f"vnflab grade-all: {exc}", file=sys.stderr)
        return 2
    print(
        f"gradebook: {os.path.join(args.out, 'gradebook.csv')} and gradebook.json "
        f"({len(rows)} submissions)"
    )
    return 0


def cmd_grade_mutants(args) -> int:
    from grader.errors import GradeError
    from grader.mutants import grade_mutants, table

    only = [n for n in (args.only or "").split(",") if n] or None
    try:
        summary = grade_mutants(
            args.lab,
            args.out,
            jobs=args.jobs,
            quick=args.quick,
            only=only,
            references=args.references,
            progress=lambda m: print(m, flush=True),
        )
    except (GradeError, ValueError) as exc:
        print(f"vnflab grade-mutants: {exc}", file=sys.stderr)
        return 2
    print(table(summary))
    refs_ok = not any(r["lost"] or r["error"] for r in summary["references"])
    return 0 if summary["caught"] == summary["total"] and refs_ok else 1


def cmd_release(args) -> int:
    from grader.release import release

    done = release(args.out, [args.lab] if args.lab else None)
    return 0 if any(isinstance(v, list) for v in done.values()) else 2


def _overlay(lab, submission: str) -> str:
    """A temp vnf package with the submission's files in place (grader.overlay.build_overlay)."""
    from grader.overlay import build_overlay

    tmp = tempfile.mkdtemp(prefix="vnflab-lab-")
    os.chmod(tmp, 0o755)
    missing, refused = build_overlay(tmp, submission, lab)
    for name in missing:
        print(f"(no {name} in {submission}: using the starter)")
    for why in refused.values():
        print(f"({why}; using the starter)")
    return tmp


def run_unit_checks(number: int, submission: str) -> int:
    """The public unit checks of a released lab directory (``make unit``), with vnflab's own
    Python: the one that has pytest and vnf, which the system ``python3`` of a lab VM has not."""
    import subprocess

    tests = os.path.join(submission, "tests")
    if not os.path.isdir(tests):
        print(
            f"vnflab lab unit: no tests/ in {os.path.abspath(submission)} (run it in your lab "
            f"directory, the one 'vnflab release' wrote)",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "VNFLAB_LAB": str(number)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=submission,
        env=env,
    ).returncode


def cmd_lab(args) -> int:
    from grader import labconfig

    if args.action == "list":
        for n in labconfig.all_labs():
            lab = labconfig.load(n)
            why = lab.available()
            pending = None if why else lab.gradable()
            print(
                f"lab {n}: {lab.title} (way {lab.way}; you write {', '.join(lab.files)})"
                + (f" [not available: {why}]" if why else "")
                + (f" [grading {pending}]" if pending else "")
            )
        return 0
    if args.number is None:
        print("vnflab lab: which lab? (vnflab lab run N)", file=sys.stderr)
        return 2
    lab = labconfig.load(args.number)
    if args.action == "unit":  # no root, no DPDK: these check the student's files alone
        return run_unit_checks(lab.number, args.submission)
    why = lab.available()
    if why:
        print(f"vnflab lab: lab {lab.number} is not available here: {why}", file=sys.stderr)
        return 2
    if args.action == "shell":
        from grader.labshell import lab_shell

        return lab_shell(lab, args.submission, args.pcap)
    if args.action == "check":
        from grader.errors import GradeError
        from grader.grade import grade

        out = args.out or os.path.join(tempfile.gettempdir(), f"vnflab-check-lab{lab.number}")
        try:
            res = grade(args.submission, lab.number, out, quick=args.quick, include_hidden=False)
        except GradeError as exc:
            print(f"vnflab lab check: {exc}", file=sys.stderr)
            return 2
        _print_results(res, out)
        return 0 if res["score"] >= res["max_score"] else 1
    # run
    import shutil

    from grader.overlay import lb_command
    from testbed.experiment import ExperimentSpec, run_sandboxed
    from testbed.sandbox import can_sandbox

    problem = can_sandbox()
    if problem:
        print(f"vnflab lab run: {problem}", file=sys.stderr)
        return 2
    overlay = _overlay(lab, args.submission)
    t = lab.traffic(args.quick)
    try:
        spec = ExperimentSpec(
            way=lab.way,
            policy=t.get("policy", "maglev"),
            udp_flows=t["udp_flows"],
            packets_per_flow=t["packets_per_flow"],
            rate_pps=t["rate_pps"],
            http_conns=t["http_conns"],
            lb_command=lb_command(overlay, lab),
            saturation_seconds=0,
            timeout_s=300,
            pcap_dir=args.pcap,
        )
        print(
            f"lab {lab.number}: your {lab.way} LB, {spec.udp_flows} UDP flows + "
            f"{spec.http_conns} HTTP connections, then the per-packet cost",
            flush=True,
        )
        result = run_sandboxed(spec)
    finally:
        shutil.rmtree(overlay, ignore_errors=True)
    if "error" in result:
        print(f"vnflab lab run: {result['error']}", file=sys.stderr)
        return 1
    print(result.get("report_table", ""))
    if result.get("pcaps"):
        print(f"\ncaptures of the affinity traffic: {', '.join(result['pcaps'])}")
    if not result.get("lb_alive_after_traffic", True):
        print("\nyour LB died during the run; its last output:\n" + result.get("lb_log_tail", ""))
    if result.get("ns_per_packet"):
        print(f"\nper-packet cost: {result['ns_per_packet']} ns of LB CPU per forwarded packet")
    return 0 if result.get("split_flows") == 0 and result.get("lb_alive_after_traffic", True) else 1


def register(subparsers) -> None:
    lab = subparsers.add_parser(
        "lab",
        help="the labs: list, unit-check your files, run your LB, check it with the public tests",
    )
    lab.add_argument("action", choices=["list", "unit", "run", "check", "shell"])
    lab.add_argument("number", nargs="?", type=int)
    lab.add_argument("--submission", default=".", help="your lab directory (default: .)")
    lab.add_argument("--quick", action="store_true", help="fewer flows")
    lab.add_argument("--out", help="check: where results.json and report.md go")
    lab.add_argument(
        "--pcap",
        metavar="DIR",
        help="run: keep captures of the LB's and the "
        "backends' interfaces; shell: where pcap writes",
    )
    lab.set_defaults(func=cmd_lab)

    rel = subparsers.add_parser(
        "release",
        help="write the student tree (handouts, starters, public tests) from the solution markers",
    )
    rel.add_argument("out")
    rel.add_argument("--lab", type=int)
    rel.set_defaults(func=cmd_release)

    g = subparsers.add_parser(
        "grade", help="grade one submission: results.json (Gradescope format) and report.md"
    )
    g.add_argument("submission", help='a directory with the lab\'s files, or "reference"')
    g.add_argument("--lab", required=True, type=int)
    g.add_argument("--out", required=True)
    g.add_argument("--quick", action="store_true", help="the short profile (fewer flows)")
    g.add_argument("--no-hidden", action="store_true", help="public tests only")
    g.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    g.set_defaults(func=cmd_grade)

    ga = subparsers.add_parser(
        "grade-all",
        help="grade every submission in a directory, in parallel: gradebook.csv and gradebook.json",
    )
    ga.add_argument("submissions")
    ga.add_argument("--lab", required=True, type=int)
    ga.add_argument("--out", required=True)
    ga.add_argument("--jobs", type=int, default=2)
    ga.add_argument("--quick", action="store_true")
    ga.add_argument("--no-hidden", action="store_true")
    ga.set_defaults(func=cmd_grade_all)
    gm = subparsers.add_parser(
        "grade-mutants",
        help="grade the grader's mutation corpus (the "
        "reference with one bug each): which test "
        "caught each, the caught fraction",
    )
    gm.add_argument("--lab", required=True, type=int)
    gm.add_argument("--out", required=True)
    gm.add_argument("--jobs", type=int, default=2)
    gm.add_argument("--quick", action="store_true")
    gm.add_argument("--only", help="comma-separated mutant names (default: all of the lab's)")
    gm.add_argument(
        "--references",
        type=int,
        default=0,
        help="also grade this many copies of the reference (must lose nothing)",
    )
    gm.set_defaults(func=cmd_grade_mutants)


def main(argv: list[str] | None = None) -> int:
    """``python -m grader.cli ...``: the same subcommands without the rest of ``vnflab``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="vnflab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
