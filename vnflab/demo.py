"""``vnflab demo``: the main job. Each way on the default topology, affinity check and cost table.

Every way runs in its own sandbox (fresh namespaces), one after the other, so they never share
a core's worth of leftovers; the cost figures are measured in the same ``demo`` run, so compare
them as ratios, not absolute numbers (these machines are shared and noisy).
"""

from __future__ import annotations

import json
import sys

from testbed.experiment import WAYS, ExperimentSpec, run_sandboxed


def available_ways() -> dict[str, str | None]:
    """way -> None if it can run here, else why not."""
    out: dict[str, str | None] = {}
    for way in WAYS:
        try:
            __import__(f"vnf.ways.{way}_lb")
            out[way] = None
        except ImportError as exc:
            out[way] = f"not available: {exc}"
    return out


def summary_table(results: list[dict]) -> str:
    """Affinity per way, one line each (the full per-way tables are printed as they finish)."""
    rows = [("way", "flows seen", "split", "lost fwd+ret", "http failures", "balance max/mean")]
    for r in results:
        if "error" in r:
            rows.append((r.get("way", "?"), "ERROR", r["error"][:60], "", "", ""))
            continue
        lost = r.get("lost") or {}
        rows.append(
            (
                r["way"],
                str((r.get("flows") or {}).get("seen", "-")),
                str(r.get("split_flows", "-")),
                f"{lost.get('forward', '-')}+{lost.get('return', '-')}",
                str((r.get("http") or {}).get("failures", "-")),
                f"{(r.get('balance') or {}).get('max_mean') or 0:.3f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_demo(ways: list[str], json_path: str | None, quick: bool = False, **overrides) -> int:
    """Affinity through each way in its own sandbox, then one `vnflab bench` run of all of them
    side by side for the per-packet cost table (interleaved runs, so drift hits every way)."""
    from bench.report import method_brief, table
    from bench.runner import run_bench
    from bench.spec import BenchSpec

    results = []
    for way in ways:
        spec = ExperimentSpec(way=way, cost_rate_pps=0, saturation_seconds=0, **overrides)
        if quick:
            spec.udp_flows, spec.http_conns = 300, 30
        print(f"\n=== way: {way} ===", flush=True)
        result = run_sandboxed(spec)
        results.append(result)
        if "error" in result:
            print(f"{way}: ERROR: {result['error']}")
            continue
        print(result.get("report_table", ""))
        if result.get("pcaps"):
            print(f"captures ({way}, the affinity traffic): {', '.join(result['pcaps'])}")
        if not result.get("lb_alive_after_traffic", True):
            print(f"{way}: the LB died during the run:\n{result.get('lb_log_tail', '')}")
    print("\n=== affinity: every packet of a connection to one backend ===")
    print(summary_table(results))

    print("\n=== per-packet cost, measured side by side (vnflab bench) ===", flush=True)
    bench_spec = BenchSpec(
        ways=list(ways), runs=1 if quick else 3, seconds=1.0 if quick else 2.0, whole_core=False
    )
    bench = run_bench(bench_spec)
    if "error" in bench:
        print(f"bench: ERROR: {bench['error']}")
    else:
        print(table(bench))
        print(method_brief(bench))
        by_way = {w["way"]: w for w in bench.get("ways", []) if not w.get("error")}
        for r in results:
            w = by_way.get(r.get("way"))
            if w:
                r.update(
                    ns_per_packet=w.get("ns_per_packet"),
                    mpps=w.get("mpps"),
                    cost={
                        k: w.get(k) for k in ("ns_per_packet", "user_ns", "sys_ns", "mpps", "cv")
                    },
                    method=bench.get("method"),
                )
    if json_path:
        doc = results[0] if len(results) == 1 else {"ways": results}
        if len(results) > 1:
            doc["bench"] = bench
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {json_path}")
    ok = all(
        "error" not in r and r.get("split_flows") == 0 and (r.get("flows") or {}).get("seen", 0) > 0
        for r in results
    )
    print("\naffinity:", "OK (0 split flows)" if ok else "BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo(sys.argv[1:] or ["socket"], None))
