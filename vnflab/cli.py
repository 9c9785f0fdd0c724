"""The ``vnflab`` command: one entry point for students, instructors and CI."""

from __future__ import annotations

import argparse
import sys


def cmd_demo(args) -> int:
    from testbed.sandbox import can_sandbox
    from vnflab.demo import available_ways, run_demo

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
    if args.pcap:
        overrides["pcap_dir"] = args.pcap
    from topologies.lb import TopologyError

    try:
        return run_demo(ways, args.json, quick=args.quick, **overrides)
    except TopologyError as exc:
        print(f"vnflab demo: {exc}", file=sys.stderr)
        return 2


def cmd_shell(args) -> int:
    from testbed.sandbox import can_sandbox
    from testbed.shell import ShellSpec, run_shell
    from vnflab.demo import available_ways

    problem = can_sandbox() or available_ways().get(args.way)
    if problem:
        print(f"vnflab shell: {problem}", file=sys.stderr)
        return 2
    return run_shell(ShellSpec(way=args.way, policy=args.policy, pcap_dir=args.pcap or ""))


def cmd_bench(args) -> int:
    import shlex

    from bench import runner
    from bench.report import method_brief, table
    from bench.spec import BenchSpec, estimate_seconds, parse_io_options
    from testbed.sandbox import can_sandbox
    from vnf.jsonfile import write_json_atomic

    problem = can_sandbox()
    if problem:
        print(f"vnflab bench: {problem}", file=sys.stderr)
        return 2
    ways = bench_ways(args)
    if args.http:
        return cmd_bench_http(args, ways)
    try:
        batches = [int(b) for b in args.batch.split(",")] if args.batch else None
        spec = BenchSpec(
            ways=ways,
            runs=5 if args.runs is None else args.runs,
            seconds=3.0 if args.seconds is None else args.seconds,
            batches=batches,
            flows=args.flows,
            whole_core=not args.no_whole_core,
            baseline=args.baseline,
            style=args.style,
            tx=args.tx,
            dpdk_io=parse_io_options(args.dpdk_io) if args.dpdk_io else None,
        ).validate()
    except ValueError as exc:
        print(f"vnflab bench: {exc}", file=sys.stderr)
        return 2
    spec.timeout_s = estimate_seconds(spec) * 2 + 120
    print(
        f"vnflab bench: {', '.join(ways)}; {spec.runs} runs x {spec.seconds:g} s "
        f"(about {estimate_seconds(spec):.0f} s)",
        flush=True,
    )
    result = runner.run_bench(spec)
    if "error" in result:
        print(f"vnflab bench: {result['error']}", file=sys.stderr)
        return 1
    result["command"] = shlex.join(["vnflab", *args.argv])
    print(table(result))
    print("\nMethod: " + result["method"] if args.method else "\n" + method_brief(result))
    if args.json:
        write_json_atomic(args.json, result, indent=1)
        print(f"(JSON written to {args.json}; vnflab results {args.json} makes a page of it)")
    measured = [w for w in result["ways"] if w.get("ns_per_packet")]
    return 0 if measured else 1


def bench_ways(args) -> list[str]:
    """The ways ``vnflab bench`` runs: ``--compare A,B``, or ``--way`` (``all``: every way)."""
    from bench.spec import WAYS

    if args.compare:
        return [w.strip() for w in args.compare.split(",") if w.strip()]
    return list(WAYS) if args.way == "all" else [args.way]


def cmd_bench_http(args, ways: list[str]) -> int:
    """``vnflab bench --http``: wrk through each way, who bounds it (``bench.http``)."""
    import shlex
    from dataclasses import replace

    from bench.http import HttpSpec, run_http_bench, table, text_summary
    from vnf.jsonfile import write_json_atomic

    packet_only = {
        "--batch": args.batch,
        "--baseline": args.baseline,
        "--dpdk-io": args.dpdk_io,
        "--no-whole-core": args.no_whole_core,
        "--runs": args.runs,
    }
    given = [flag for flag, value in packet_only.items() if value not in (None, False)]
    seconds = 5 if args.seconds is None else args.seconds
    try:
        if given:
            raise ValueError(f"{', '.join(given)}: not for --http (the packet bench's)")
        if seconds != int(seconds):
            raise ValueError(f"--seconds: wrk runs whole seconds, got {seconds:g}")
        spec = HttpSpec(
            seconds=int(seconds),
            threads=args.threads,
            connections=args.connections,
            style=args.style,
            tx=args.tx,
        )
        for way in ways:
            replace(spec, way=way).validate()
    except ValueError as exc:
        print(f"vnflab bench: {exc}", file=sys.stderr)
        return 2
    print(
        f"vnflab bench --http: {', '.join(ways)}; wrk -t{spec.threads} -c{spec.connections} "
        f"-d{spec.seconds}s, a sandbox per way (about {len(ways) * (spec.seconds + 10)} s)",
        flush=True,
    )
    result = run_http_bench(ways, spec)
    result["command"] = shlex.join(["vnflab", *args.argv])
    print(table(result))
    print("\nMethod: " + result["method"] if args.method else "\n" + text_summary(result))
    if args.json:
        write_json_atomic(args.json, result, indent=1)
        print(f"(JSON written to {args.json})")
    return 0 if all(w.get("wrk") for w in result["ways"]) else 1


def notebooks_module(name: str):
    """A module of the checkout's ``notebooks/`` directory, or None outside a checkout (it is
    not an installed package: the notebooks and their data live in the source tree)."""
    import importlib
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent / "notebooks"
    if not (here / f"{name}.py").exists():
        return None
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    return importlib.import_module(name)


def cmd_notebook_data(args) -> int:
    return notebooks_module("nbdata").run(args)


def cmd_notebooks(args) -> int:
    return notebooks_module("render").run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vnflab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    demo = sub.add_parser(
        "demo",
        help="run the load balancer(s) on the default topology, "
        "check affinity, print the per-packet cost table",
    )
    demo.add_argument("--way", default="all", choices=["all", "socket", "afpacket", "dpdk"])
    demo.add_argument("--json", metavar="PATH", help="write the results as JSON")
    demo.add_argument("--quick", action="store_true", help="fewer flows (for a fast check)")
    demo.add_argument("--clients", type=int)
    demo.add_argument("--backends", type=int)
    demo.add_argument("--udp-flows", type=int)
    demo.add_argument("--http-conns", type=int)
    demo.add_argument("--policy", choices=["maglev", "hash", "roundrobin"])
    demo.add_argument(
        "--pcap",
        metavar="DIR",
        help="keep captures of the LB's and the backends' interfaces (affinity traffic)",
    )
    demo.set_defaults(func=cmd_demo)

    shell = sub.add_parser(
        "shell",
        help="the topology with the reference LB running, at "
        "Mininet's prompt with vnflab's commands (traffic, "
        "stats, flows, pcap, drain, fail, add, restart)",
    )
    shell.add_argument("--way", default="socket", choices=["socket", "afpacket", "dpdk"])
    shell.add_argument("--policy", default="maglev", choices=["maglev", "hash", "roundrobin"])
    shell.add_argument(
        "--pcap",
        metavar="DIR",
        help="where pcap writes its captures (default: a new directory, printed)",
    )
    shell.set_defaults(func=cmd_shell)

    bench = sub.add_parser(
        "bench",
        help="per-packet cost of a way (CPU ns/packet, Mpps, whole-core "
        "cost with RPS), median of runs; --compare runs ways side by side; --http: "
        "requests/s through each way with wrk, and what bounds them",
    )
    bench.add_argument(
        "--style",
        default="vector",
        choices=["vector", "perpacket"],
        help="AF_PACKET style: the reference fast path (vector) or the lab 2 loop",
    )
    bench.add_argument(
        "--tx",
        default="sendmmsg",
        choices=["sendmmsg", "ring"],
        help="AF_PACKET transmit: sendmmsg from the RX ring, or the TPACKET TX ring",
    )
    bench.add_argument("--way", default="socket", choices=["socket", "afpacket", "dpdk", "all"])
    bench.add_argument(
        "--compare",
        metavar="A,B",
        help="ways to run interleaved in one invocation (the first is the baseline of the ratios)",
    )
    bench.add_argument(
        "--http",
        action="store_true",
        help="requests/s instead: wrk from a client through each way's LB to the backends, "
        "each part's CPU share, and what bounds the rate (a sandbox per way)",
    )
    bench.add_argument("--threads", type=int, default=2, help="--http: wrk's threads (-t)")
    bench.add_argument("--connections", type=int, default=50, help="--http: wrk's connections (-c)")
    bench.add_argument("--runs", type=int, help="runs per way (default 5)")
    bench.add_argument(
        "--seconds",
        type=float,
        help="measurement window per phase (default 3); --http: wrk's duration (default 5)",
    )
    bench.add_argument(
        "--batch", metavar="N,N,...", help='sweep the io "batch" option (afpacket, dpdk)'
    )
    bench.add_argument(
        "--flows", type=int, default=1024, help="distinct UDP flows the generator cycles"
    )
    bench.add_argument("--no-whole-core", action="store_true", help="skip the RPS whole-core phase")
    bench.add_argument(
        "--baseline",
        choices=["testpmd"],
        help="dpdk: also run dpdk-testpmd "
        "--forward-mode=io (and the binding's io-forward) on the same vdevs",
    )
    bench.add_argument(
        "--dpdk-io",
        metavar="K=V,...",
        help="dpdk: extra LB io options, e.g. "
        "model=pipeline,lcores=2,queues=2 (the generator uses the LB's queues)",
    )
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.add_argument(
        "--method",
        action="store_true",
        help="print the full method text (default: a few lines; the JSON has it all)",
    )
    bench.set_defaults(func=cmd_bench)

    if notebooks_module("nbdata"):  # a source checkout: the notebooks are here
        nbdata = sub.add_parser(
            "notebook-data",
            help="measure the notebooks' data on this "
            "machine (progress streamed; --quick or --full)",
        )
        notebooks_module("nbdata").add_arguments(nbdata)
        nbdata.set_defaults(func=cmd_notebook_data)
        notebooks = sub.add_parser(
            "notebooks",
            help="render the notebooks on the reference "
            "data into docs/notebooks/, or check that it is up to date",
        )
        notebooks_module("render").add_arguments(notebooks)
        notebooks.set_defaults(func=cmd_notebooks)
    register_features(sub)
    register_vm(sub)
    return parser


def register_vm(sub) -> None:
    """``vnflab vm build OUT ...`` and ``vnflab vm boot-test IMAGE ...``: run vm/build.sh or
    vm/boot-test.sh of this checkout with the arguments given (see vm/README.md)."""
    vm = sub.add_parser(
        "vm",
        help="build the student VM image (vm/build.sh) or boot it in QEMU "
        "and try the labs there (vm/boot-test.sh)",
    )
    vm.add_argument("action", choices=["build", "boot-test"])
    vm.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    vm.set_defaults(func=cmd_vm)


def cmd_vm(args) -> int:
    import os

    script = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vm", args.action + ".sh"
    )
    os.execvp("bash", ["bash", script, *args.args])


# Each feature lives in its own module with a ``register(subparsers)`` function, so adding a
# subcommand never means editing this file's logic. A module missing its optional dependency
# simply does not register.
FEATURE_MODULES = ("bench.report", "vnflab.doctor", "vnflab.labs", "grader.cli", "vnflab.scenarios")


def register_features(sub) -> None:
    import importlib

    for name in FEATURE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # the feature is not there yet
                continue
            raise
        register = getattr(module, "register", None)
        if register:
            register(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line, recorded in the bench's JSON
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
