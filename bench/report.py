"""What a bench run says: the summary of its runs, the ratios, the table, the results page.

``summarize`` turns the runs into the result dict (the JSON of ``vnflab bench --json``); every
other function here reads only that dict, so a table or a page can be made again from a saved
JSON, on another machine, long after the run: ``vnflab results BENCH.json --out docs/results.md``
writes the page. Figures in the docs come from such a page, never from typing numbers in.
"""

from __future__ import annotations

import collections
import json
import statistics
import sys
from dataclasses import asdict

from bench.machine import CALIBRATION, machine_info
from bench.spec import BenchSpec, variant_label

# ------------------------------------------------------------------------------------------
# statistics over runs
# ------------------------------------------------------------------------------------------


def median(xs):
    """Median of the values that are not None (None if there are none)."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cv(xs):
    """Coefficient of variation (stdev / mean) of the values that are not None; 0.0 for one."""
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return 0.0 if xs else None
    mean = statistics.fmean(xs)
    return statistics.stdev(xs) / mean if mean else None


def rounded(x, nd=1):
    return None if x is None else round(x, nd)


def fmt_cv(x) -> str:
    """A CV as a percentage for the text ("-": fewer than two runs measured it)."""
    return f"{x:.1%}" if x is not None else "-"


def fmt_ns(x) -> str:
    """A cost in whole ns for a table cell ("-": not measured)."""
    return f"{x:.0f}" if x else "-"


# ------------------------------------------------------------------------------------------
# the summary
# ------------------------------------------------------------------------------------------


def summarize(
    spec: BenchSpec, runs: dict[str, list[dict]], unavailable: dict, sink: str, drivers: dict
) -> dict:
    """The result of a bench: one entry per (way, batch) with medians and CVs over its runs,
    the ratios, the machine and its drift, and the method (full and in brief)."""
    ways = []
    for way, batch in spec.variants():
        label = variant_label(way, batch)
        if way in unavailable:
            ways.append(
                {
                    "way": way,
                    "batch": batch,
                    "ns_per_packet": None,
                    "user_ns": None,
                    "sys_ns": None,
                    "mpps": None,
                    "cv": None,
                    "runs": [],
                    "whole_core_ns_per_packet": None,
                    "livelock": False,
                    "error": unavailable[way],
                }
            )
            continue
        rs = runs.get(label, [])
        ok = [r for r in rs if "error" not in r]
        ns = [r.get("ns_per_packet") for r in ok]
        wc = [r.get("whole_core_ns_per_packet") for r in ok]
        notes = collections.Counter(r["whole_core_note"] for r in ok if r.get("whole_core_note"))
        entry = {
            "way": way,
            "batch": batch,
            "ns_per_packet": rounded(median(ns)),
            "user_ns": rounded(median([r.get("user_ns") for r in ok])),
            "sys_ns": rounded(median([r.get("sys_ns") for r in ok])),
            "mpps": rounded(median([r.get("mpps") for r in ok]), 4),
            "cv": rounded(cv(ns), 3),
            "whole_core_ns_per_packet": rounded(median(wc)),
            "whole_core_cv": rounded(cv(wc), 3),
            "machine_cv": rounded(cv([r.get("machine_ms") for r in ok]), 3),
            "livelock": any(r.get("livelock") for r in ok),
            "livelock_runs": sum(1 for r in ok if r.get("livelock")),
            "whole_core_notes": [
                f"{note} ({n} of {len(ok)} runs)" for note, n in sorted(notes.items())
            ],
            "runs": rs,
        }
        entry.update(drivers[way].summary(ok))
        if ok:
            detail = drivers[way].detail(entry)
            if detail:
                entry["detail"] = detail
        if len(ok) < len(rs):
            entry["errors"] = [r["error"] for r in rs if "error" in r]
        ways.append(entry)
    used = list({id(drivers[w]): drivers[w] for w in spec.ways}.values())  # each driver once
    cal = [r.get("machine_ms") for rs in runs.values() for r in rs if "error" not in r]
    drift = {
        "calibration_ms": rounded(median(cal), 2),
        "calibration_cv": rounded(cv(cal), 3),
        "calibration": CALIBRATION,
    }
    return {
        "method": " ".join(d.method(spec, sink) for d in used),
        "method_brief": [d.brief(spec, sink) for d in used],
        "sink": sink,
        "machine": {**machine_info(), **drift},
        "spec": asdict(spec),
        "ways": ways,
        "ratios": ratios(ways),
    }


def ratios(ways: list[dict]) -> dict:
    """Every variant against the first way listed (the baseline): how many times cheaper."""
    good = [w for w in ways if w.get("ns_per_packet")]
    if len(good) < 2:
        return {}
    base = good[0]
    bl = variant_label(base["way"], base["batch"])
    out = {}
    for w in good[1:]:
        label = variant_label(w["way"], w["batch"])
        r = base["ns_per_packet"] / w["ns_per_packet"]
        entry = {
            "ns_per_packet": round(r, 2),
            "mpps": (
                round(w["mpps"] / base["mpps"], 2) if w.get("mpps") and base.get("mpps") else None
            ),
            "text": (
                f"{label} is {r:.1f}x cheaper per packet than {bl}"
                if r >= 1
                else f"{label} is {1 / r:.1f}x more expensive per packet than {bl}"
            ),
        }
        if w.get("whole_core_ns_per_packet") and base.get("whole_core_ns_per_packet"):
            entry["whole_core"] = round(
                base["whole_core_ns_per_packet"] / w["whole_core_ns_per_packet"], 2
            )
        out[f"{label}/{bl}"] = entry
    return out


# ------------------------------------------------------------------------------------------
# the terminal
# ------------------------------------------------------------------------------------------

HEADER = ("way", "batch", "ns/pkt", "user ns", "sys ns", "cv", "Mpps(sat)", "whole-core ns/pkt")


def table_rows(result: dict) -> list[tuple[str, ...]]:
    """One row per way (``HEADER``'s columns), as text."""
    rows: list[tuple[str, ...]] = []
    for w in result["ways"]:
        if w.get("error"):
            rows.append((w["way"], "-", w["error"], "", "", "", "", ""))
            continue
        ns_wc = w.get("whole_core_ns_per_packet")
        wc = f"{ns_wc:.0f}" if ns_wc else "-"
        if w.get("livelock"):
            wc = f"{wc} (livelock)" if ns_wc else "LIVELOCK"
        rows.append(
            (
                w["way"],
                str(w["batch"] if w["batch"] is not None else "-"),
                fmt_ns(w["ns_per_packet"]),
                fmt_ns(w["user_ns"]),
                fmt_ns(w["sys_ns"]),
                fmt_cv(w.get("cv")),
                f"{w['mpps']:.3f}" if w.get("mpps") else "-",
                wc,
            )
        )
    return rows


def drift_text(result: dict) -> str | None:
    m = result.get("machine") or {}
    if m.get("calibration_cv") is None:
        return None
    return (
        f"machine drift: a fixed memory-bound workload on the LB core took "
        f"{m['calibration_ms']:.1f} ms (median), cv {m['calibration_cv']:.1%} across the "
        f"runs; a way's cv near that is the machine's, not the way's"
    )


def notes(result: dict) -> list[str]:
    """The lines under the table: ratios, drift, way details, whole-core notes, errors."""
    lines = [v["text"] for v in result.get("ratios", {}).values()]
    if drift_text(result):
        lines.append(drift_text(result))
    lines += [w["detail"] for w in result["ways"] if w.get("detail")]
    for w in result["ways"]:
        label = variant_label(w["way"], w["batch"])
        lines += [f"whole-core, {label}: {note}" for note in w.get("whole_core_notes") or []]
        lines += [f"error, {label}: {err}" for err in w.get("errors") or []]
    return lines


def aligned(rows: list[tuple[str, ...]], left: tuple[int, ...] = (0, 1)) -> list[str]:
    """Text columns: a header row, a rule under it, then the rows; the ``left`` columns are
    left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(wd) if i in left else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths))
        ).rstrip()
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return lines


def table(result: dict) -> str:
    lines = aligned([HEADER, *table_rows(result)])
    lines += [f"  {line}" for line in notes(result)]
    return "\n".join(lines)


def method_brief(result: dict) -> str:
    """The method in a few lines for the terminal (the JSON and ``--method`` have it all)."""
    spec, m = result.get("spec") or {}, result.get("machine") or {}
    lines = result.get("method_brief") or [result.get("method", "")[:300] + " ..."]
    return "\n".join(
        [
            "Method: in brief (in full: vnflab bench --method, or the JSON's):",
            *[f"  {line}" for line in lines],
            f"  generator CPU {m.get('gen_cpu', '?')}, LB CPU {m.get('lb_cpu', '?')}; "
            f"median of {spec.get('runs', '?')} interleaved runs; cv = stdev/mean",
        ]
    )


# ------------------------------------------------------------------------------------------
# the results page
# ------------------------------------------------------------------------------------------


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def results_page(result: dict, source: str = "") -> str:
    """A Markdown page made from a bench result, every figure from the JSON."""
    m = result.get("machine") or {}
    spec = result.get("spec") or {}
    cmd = result.get("command") or "(not recorded: a bench JSON from before the command was kept)"
    lines = [
        "# vnflab bench: results",
        "",
        "Generated by `vnflab results"
        + (f" {source}" if source else "")
        + "` from a `vnflab bench --json` file; do not "
        "edit by hand, run the bench again and regenerate.",
        "",
        f"- Date: {result.get('date') or 'not recorded'}",
        f"- Machine: {m.get('cores', '?')} cores, {m.get('cpu_model') or 'unknown CPU'}, "
        f"Linux {m.get('kernel', '?')}, Python {m.get('python', '?')}; generator on CPU "
        f"{m.get('gen_cpu', '?')}, LB on CPU {m.get('lb_cpu', '?')}",
        f"- Command: `{cmd}`",
        f"- Runs: {spec.get('runs', '?')} x {spec.get('seconds', '?')} s per way, "
        f"{spec.get('flows', '?')} flows; sink: {result.get('sink', '?')}",
        "",
        "## Per-packet cost",
        "",
        _md_row(HEADER + ("machine cv",)),
        _md_row(["---"] * (len(HEADER) + 1)),
    ]
    for w, row in zip(result["ways"], table_rows(result)):
        mcv = w.get("machine_cv")
        lines.append(_md_row(row + (fmt_cv(mcv),)))
    lines.append("")
    if result.get("ratios"):
        lines += [
            "## Ratios (against the first way)",
            "",
            _md_row(("ways", "ns/pkt", "Mpps", "whole-core", "")),
            _md_row(["---"] * 5),
        ]
        lines += [
            _md_row(
                (
                    k,
                    v.get("ns_per_packet"),
                    v.get("mpps") or "-",
                    v.get("whole_core") or "-",
                    v["text"],
                )
            )
            for k, v in result["ratios"].items()
        ]
        lines.append("")
    lines += ["## The machine's drift next to the ways' CV", ""]
    lines.append((drift_text(result) or "not measured") + ".")
    if m.get("calibration"):
        lines.append(f"(Calibration: {m['calibration']}.)")
    lines.append("")
    rest = [
        n
        for n in notes(result)
        if n != drift_text(result)
        and n not in [v["text"] for v in result.get("ratios", {}).values()]
    ]
    if rest:
        lines += ["## Notes", "", *[f"- {n}" for n in rest], ""]
    lines += ["## Method", "", result.get("method") or "(none)", ""]
    return "\n".join(lines)


def cmd_results(args) -> int:
    try:
        with open(args.bench_json) as f:
            result = json.load(f)
        if result.get("kind") == "http":
            raise ValueError("a `vnflab bench --http` result: its table is the command's output")
        page = results_page(result, source=args.bench_json)
    except (OSError, ValueError, KeyError) as exc:
        print(f"vnflab results: {args.bench_json}: {exc}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w") as f:
            f.write(page)
        print(f"(results page written to {args.out})")
    else:
        print(page, end="")
    return 0


def register(sub) -> None:
    """``vnflab results BENCH.json [--out PAGE.md]`` (found by vnflab.cli's FEATURE_MODULES)."""
    p = sub.add_parser(
        "results",
        help="a Markdown results page from a `vnflab bench --json` "
        "file (table, ratios, machine drift, method)",
    )
    p.add_argument("bench_json", metavar="BENCH.json")
    p.add_argument("--out", metavar="PAGE.md", help="write the page here (default: stdout)")
    p.set_defaults(func=cmd_results)
