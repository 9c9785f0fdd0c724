"""``vnflab scenario NAME``: the scenarios that show why production load balancers look the way
they do (issue 7). Each scenario runs in its own sandbox (``testbed.sandbox``), prints what it
measured and exits non-zero when its assertion fails.

=========  ====================================================================================
health     health checks remove a dead backend; live flows stay put; a drained backend keeps its
           flows but gets no new ones                              (``vnflab/scenarios/health.py``)
ecmp       a scale-out LB tier behind an ECMP router: which policies keep flows on their backend
           when LB instances or backends come and go               (``vnflab/scenarios/ecmp.py``)
sdn        OVS (userspace) + an os-ken app steers VIP traffic through the VNF; without the rule
           the VNF is bypassed                                     (``vnflab/scenarios/sdn.py``)
chain      a firewall NF in front of the LB, in one process and as two processes joined by a
           veth pair; per-packet cost of each                      (``vnflab/scenarios/chain.py``)
=========  ====================================================================================

Layout: ``runner.py`` re-runs a scenario inside a sandbox; ``base.py`` holds what they share
(Mininet set-up, backends, traffic drivers, checks); ``lbctl.py`` is the AF_PACKET LB with a
health checker and a control file; ``firewall.py`` the firewall NF; ``sdn_app.py`` the os-ken app.
"""

from __future__ import annotations

import sys

SCENARIOS = ("health", "ecmp", "sdn", "chain")


def cmd_scenario(args) -> int:
    from testbed.sandbox import can_sandbox
    from vnflab.scenarios.runner import print_result, run_scenario

    problem = can_sandbox()
    if problem:
        print(f"vnflab scenario: {problem}", file=sys.stderr)
        return 2
    print(f"vnflab scenario {args.name}: running in a fresh sandbox ...", flush=True)
    result = run_scenario(args.name, quick=args.quick, keep_workdir=args.workdir)
    print_result(result)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"(JSON written to {args.json})")
    return 0 if result.get("ok") else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scenario",
        help="run a scenario (health, ecmp, sdn, chain), print "
        "its measured figures; exit 1 if its check fails",
    )
    p.add_argument("name", choices=SCENARIOS)
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--quick", action="store_true", help="fewer flows (what the tests run)")
    p.add_argument("--workdir", metavar="DIR", help="keep logs and records in DIR")
    p.set_defaults(func=cmd_scenario)
