"""The ``vnflab`` command: one entry point for students, instructors and CI."""
from __future__ import annotations

import argparse
import sys


def cmd_demo(args) -> int:
    from vnflab.demo import available_ways, run_demo
    from vnflab.sandbox import can_sandbox
    problem = can_sandbox()
    if problem:
        print(f"vnflab demo: {problem}", file=sys.stderr)
        return 2
    avail = available_ways()
    if args.way == "all":
        ways = [w for w, why in avail.items() if why is None]
        for w, why in avail.items():
            if why:
                print(f"(skipping way {w}: {why})")
    else:
        if avail.get(args.way):
            print(f"vnflab demo: way {args.way} is {avail[args.way]}", file=sys.stderr)
            return 2
        ways = [args.way]
    overrides = {}
    for name in ("clients", "backends", "udp_flows", "http_conns", "policy"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    from topologies.lb import TopologyError
    try:
        return run_demo(ways, args.json, quick=args.quick, **overrides)
    except TopologyError as exc:
        print(f"vnflab demo: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vnflab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    demo = sub.add_parser("demo", help="run the load balancer(s) on the default topology, "
                                       "check affinity, print the per-packet cost table")
    demo.add_argument("--way", default="all", choices=["all", "socket", "afpacket", "dpdk"])
    demo.add_argument("--json", metavar="PATH", help="write the results as JSON")
    demo.add_argument("--quick", action="store_true", help="fewer flows (for a fast check)")
    demo.add_argument("--clients", type=int)
    demo.add_argument("--backends", type=int)
    demo.add_argument("--udp-flows", type=int)
    demo.add_argument("--http-conns", type=int)
    demo.add_argument("--policy", choices=["maglev", "hash", "roundrobin"])
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
