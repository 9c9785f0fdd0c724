"""AF_PACKET fanout workers 1..N through the experiment harness: affinity, CPU per packet, rate.

    sudo .venv/bin/python notebooks/measure_multicore.py --workers 1,2 --json notebooks/data/multicore.json [--small]

`vnflab bench` has no workers sweep yet, so this runs the way-2 LB with ``workers`` = 1..N
(PACKET_FANOUT_HASH: software RSS, one ring and flow table per worker process) on the default
topology with ``vnflab.experiment.run_sandboxed`` (the same harness as ``vnflab demo``), one
fresh sandbox per worker count. Each result is the demo's result dict (affinity check,
CPU time per packet at a fixed offered load, forwarding rate at saturation of the traffic
driver) plus the worker count.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vnflab.experiment import ExperimentSpec, run_sandboxed  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2,4")
    p.add_argument("--json", required=True)
    p.add_argument("--small", action="store_true", help="fewer flows, shorter phases")
    args = p.parse_args(argv)
    results = []
    for n in [int(x) for x in args.workers.split(",")]:
        spec = ExperimentSpec(way="afpacket", lb_extra={"workers": n})
        if args.small:
            spec.udp_flows, spec.http_conns, spec.cost_seconds, spec.saturation_seconds = 300, 30, 1.5, 1.0
        print(f"afpacket, {n} worker(s)", flush=True)
        r = run_sandboxed(spec)
        r["workers"] = n
        r.pop("report_table", None)
        results.append(r)
    doc = {"what": "afpacket fanout workers", "cores": os.cpu_count(), "results": results}
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    bad = [r for r in results if "error" in r]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
