"""Multi-core: AF_PACKET fanout workers 1..N, and the DPDK LB's lcores/queues in both models.

    sudo .venv/bin/python notebooks/measure_multicore.py --workers 1,2 \
        --dpdk rtc:1,rtc:2,pipeline:1,pipeline:2 --json notebooks/data/multicore.json [--small]

AF_PACKET (``results``): the way-2 LB with ``workers`` = 1..N (PACKET_FANOUT_HASH: software
RSS, one ring and flow table per worker process) on the default topology with
``testbed.experiment.run_sandboxed`` (the same harness as ``vnflab demo``), one fresh sandbox per
worker count. Each result is the demo's result dict (affinity check, CPU time per packet at a
fixed offered load, forwarding rate at saturation of the traffic driver) plus the worker count.

DPDK (``dpdk``): ``bench.runner.run_bench`` with ``ways=["dpdk"]`` and ``dpdk_io`` set to each
MODEL:N of ``--dpdk`` (``rtc:N``: N lcores polling N queues, run to completion; ``pipeline:N``:
an RX lcore handing bursts through rte_rings to N worker lcores, N queues). The DPDK generator
(CPU 0) sends flow i on queue i % N. One bench run per config per round, rounds interleaved
(rtc:1, rtc:2, ..., rtc:1, ...) so machine drift hits every config alike; each config keeps the
list of its runs (both styles: ``vector`` and ``perpacket``, see ``bench.dpdk.DpdkDriver``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testbed.experiment import ExperimentSpec, run_sandboxed  # noqa: E402

DPDK_CONFIGS = "rtc:1,rtc:2,pipeline:1,pipeline:2"


def dpdk_configs(text: str) -> list[dict]:
    """``"rtc:1,pipeline:2"`` -> the DPDK LB io options of each config."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        model, _, n = item.partition(":")
        if model not in ("rtc", "pipeline") or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--dpdk: expected MODEL:N with MODEL rtc or pipeline, got {item!r}")
        out.append({"model": model, "lcores": int(n), "queues": int(n)})
    return out


class Progress:
    """``step 3/16, 1:02 elapsed, about 4:10 left``: one line before each step (a sandboxed run),
    so that whoever waits sees how far the measurement is."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def step(self, what: str) -> None:
        from bench.runner import progress_note

        note = progress_note(self.done, self.total, time.monotonic() - self.t0)
        print(f"{what} ({note})", flush=True)
        self.done += 1


def measure_dpdk(configs: list[dict], rounds: int, seconds: float, progress: Progress) -> dict:
    """Each config through vnflab bench's DPDK driver, rounds interleaved across configs."""
    from bench.runner import run_bench
    from bench.spec import BenchSpec, estimate_seconds

    entries = [{**io, "runs": [], "errors": []} for io in configs]
    method = None
    for i in range(rounds):
        for io, entry in zip(configs, entries):
            spec = BenchSpec(
                ways=["dpdk"], runs=1, seconds=seconds, whole_core=False, dpdk_io=dict(io)
            )
            spec.timeout_s = estimate_seconds(spec) * 2 + 120
            progress.step(f"dpdk {io['model']}, {io['lcores']} lcore(s), round {i + 1}/{rounds}")
            r = run_bench(spec)
            way = (r.get("ways") or [{}])[0]
            err = r.get("error") or way.get("error")
            if err:
                entry["errors"].append(err)
                continue
            method = method or r.get("method")
            entry["machine"] = r.get("machine")
            for run in way.get("runs", []):
                (
                    entry["errors"].append(run["error"])
                    if "error" in run
                    else entry["runs"].append(
                        {"round": i, "vector": run.get("vector"), "perpacket": run.get("perpacket")}
                    )
                )
    return {"method": method, "rounds": rounds, "seconds": seconds, "configs": entries}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2,4")
    p.add_argument("--json", required=True)
    p.add_argument("--dpdk", default=DPDK_CONFIGS, help="DPDK configs MODEL:N ('' for none)")
    p.add_argument(
        "--dpdk-rounds",
        type=int,
        help="interleaved bench runs per DPDK config (default 3; 1 with --small)",
    )
    p.add_argument(
        "--dpdk-seconds", type=float, help="measurement window (default 2; 1 with --small)"
    )
    p.add_argument("--small", action="store_true", help="fewer flows, shorter phases")
    args = p.parse_args(argv)
    configs = dpdk_configs(args.dpdk)
    workers = [int(x) for x in args.workers.split(",")]
    rounds = args.dpdk_rounds or (1 if args.small else 3)
    seconds = args.dpdk_seconds or (1.0 if args.small else 2.0)
    progress = Progress(len(workers) + rounds * len(configs))
    results = []
    for n in workers:
        spec = ExperimentSpec(way="afpacket", lb_extra={"workers": n})
        if args.small:
            spec.udp_flows, spec.http_conns, spec.cost_seconds, spec.saturation_seconds = (
                300,
                30,
                1.5,
                1.0,
            )
        progress.step(f"afpacket, {n} worker(s)")
        r = run_sandboxed(spec)
        r["workers"] = n
        r.pop("report_table", None)
        results.append(r)
    doc = {
        "what": "afpacket fanout workers; dpdk lcores/queues, rtc and pipeline",
        "cores": os.cpu_count(),
        "results": results,
    }
    if configs:
        doc["dpdk"] = measure_dpdk(configs, rounds, seconds, progress)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    bad = [r for r in results if "error" in r]
    bad += [e for c in (doc.get("dpdk") or {}).get("configs", []) for e in c["errors"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
