"""``vnflab demo``: the main job. Each way on the default topology, affinity check and cost table.

Every way runs in its own sandbox (fresh namespaces), one after the other, so they never share
a core's worth of leftovers; the cost figures are measured in the same ``demo`` run, so compare
them as ratios, not absolute numbers (these machines are shared and noisy).
"""
from __future__ import annotations

import json
import sys

from vnflab.experiment import WAYS, ExperimentSpec, run_sandboxed


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


def cost_table(results: list[dict]) -> str:
    rows = [("way", "split", "flows", "lost fwd+ret", "ns/pkt", "user ns", "sys ns", "Mpps(sat)", "vs socket")]
    base = next((r.get("ns_per_packet") for r in results if r.get("way") == "socket"), None)
    for r in results:
        cost = r.get("cost") or {}
        ns = r.get("ns_per_packet")
        ratio = f"{base / ns:.1f}x" if base and ns else "-"
        flows = (r.get("flows") or {}).get("seen", "-")
        lost = r.get("lost") or {}
        lost_txt = f"{lost['forward']}+{lost['return']}" if "forward" in lost else "-"
        rows.append((r.get("way", "?"),
                     str(r.get("split_flows", "-")), str(flows), lost_txt,
                     f"{ns:.0f}" if ns else "-",
                     f"{cost['user_ns_per_packet']:.0f}" if cost.get("user_ns_per_packet") else "-",
                     f"{cost['sys_ns_per_packet']:.0f}" if cost.get("sys_ns_per_packet") else "-",
                     f"{r['mpps']:.3f}" if r.get("mpps") else "-", ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_demo(ways: list[str], json_path: str | None, quick: bool = False, **overrides) -> int:
    results = []
    for way in ways:
        spec = ExperimentSpec(way=way, **overrides)
        if quick:
            spec.udp_flows, spec.http_conns, spec.cost_seconds, spec.saturation_seconds = 300, 30, 1.5, 1.0
        print(f"\n=== way: {way} ===", flush=True)
        result = run_sandboxed(spec)
        results.append(result)
        if "error" in result:
            print(f"{way}: ERROR: {result['error']}")
            continue
        print(result.get("report_table", ""))
        if not result.get("lb_alive_after_traffic", True):
            print(f"{way}: the LB died during the run:\n{result.get('lb_log_tail', '')}")
    print("\n=== per-packet cost (LB process CPU per forwarded packet) ===")
    print(cost_table(results))
    if results and results[0].get("method"):
        print(f"method: {results[0]['method']}")
    for r in results:
        if (r.get("cost") or {}).get("method"):
            print(f"method for {r['way']}: {r['cost']['method']}")
    if json_path:
        doc = results[0] if len(results) == 1 else {"ways": results}
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {json_path}")
    ok = all("error" not in r and r.get("split_flows") == 0 and (r.get("flows") or {}).get("seen", 0) > 0 for r in results)
    print("\naffinity:", "OK (0 split flows)" if ok else "BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo(sys.argv[1:] or ["socket"], None))
