"""Scenario ``ecmp``: a scale-out LB tier behind an ECMP router; which policy keeps flows put?

Set-up (``topologies.scenarios.EcmpTopo``): clients reach the VIP through a Linux router ``r``
whose route to the VIP is a multipath route over the LB instances::

    ip route replace 10.0.0.100/32 nexthop via 10.0.0.1 nexthop via 10.0.0.2
    sysctl net.ipv4.fib_multipath_hash_policy=1          # hash on the 5-tuple (L4)

Every LB instance is the AF_PACKET LB (DSR) with the *same* backend list; backends answer the
clients directly through the router. Each run drives long UDP flows and, mid-run, makes one change:

* ``add LB``: the route gets a third next hop. Linux's hash-threshold ECMP re-splits the hash
  space, so many flows arrive at another LB instance, which has no state for them: it asks its
  pool. Maglev and hash-mod-N give the answer every instance gives (same backends, same hash),
  so the flow stays on its backend; round-robin-on-miss gives whatever the new instance's
  counter says, so most of those flows break.
* ``remove LB``: the route loses a next hop; the same story.
* ``remove backend``: b4 leaves every instance's pool, with the connection table disabled
  (``flow_capacity=1``: every packet is a miss, as for a flow that reaches an instance with no
  state for it). Maglev moves about b4's share; hash-mod-N moves most flows.

Figure: the fraction of flows that *break* (are seen at more than one backend), per policy.
"""

from __future__ import annotations

import json
import time

from testbed.experiment import log
from vnf.addresses import VIP
from vnflab.scenarios.base import Bed, Checks, first_backend, flow_facts, lb_config, live_stats, pct

REMOVED = "b4"


def _route(bed: Bed, lbs: list[str]) -> None:
    from topologies.scenarios import ecmp_ip

    hops = " ".join(f"nexthop via {ecmp_ip(lb)}" for lb in lbs)
    out = bed.cmd("r", f"ip route replace {VIP}/32 {hops} 2>&1")
    if out.strip():
        raise RuntimeError(f"ip route: {out.strip()}")


def _one_run(
    bed: Bed,
    tag: str,
    policy: str,
    before: list[str],
    after: list[str],
    remove_backend: bool,
    flows: int,
    rounds: int,
    rate: int,
) -> dict:
    from topologies.scenarios import ecmp_ip, ecmp_mac

    backends = sorted(bed.backends)
    lb_names = sorted(set(before) | set(after))
    bed.restart_backends()
    lbs = {}
    for name in lb_names:
        control = bed.path(f"{tag}-{name}-control.json")
        cfg = lb_config(
            [(b, ecmp_ip(b), ecmp_mac(b)) for b in backends],
            f"{name}-eth0",
            ecmp_mac(name),
            ecmp_ip(name),
            policy=policy,
            lb={"flow_capacity": 1} if remove_backend else None,
            io={"control_file": control},
        )
        lbs[name] = (bed.start_lb(name, cfg, f"{tag}-{name}"), control)
    _route(bed, before)
    half = flows // 2
    drivers = [
        bed.start_driver(c, tag, i + 1, half, rounds, rate / 2) for i, c in enumerate(("c1", "c2"))
    ]
    duration = flows * rounds / rate
    time.sleep(duration * 0.45)
    if remove_backend:
        for _lb, control in lbs.values():
            with open(control, "w") as f:
                json.dump({"remove": [REMOVED]}, f)
    else:
        _route(bed, after)
    bed.wait_drivers(drivers, timeout=duration * 3 + 60)
    stats = {name: live_stats(lb).get("lb", {}) for name, (lb, _c) in lbs.items()}
    for lb, _c in lbs.values():
        lb.stop()
    facts = flow_facts(bed.backend_records())
    broken = {f for f, where in facts.items() if len(where) > 1}
    started = {f: first_backend(w) for f, w in facts.items()}
    on_removed = {f for f, b in started.items() if b == REMOVED}
    survivors = set(facts) - on_removed
    new_flows = {name: s.get("new_flows", 0) for name, s in stats.items()}
    # Stateful runs: a flow that reaches another instance is a miss there, so the new-flow
    # counts of all instances add up to the flows plus the flows that changed instance.
    changed_lb = None if remove_backend else sum(new_flows.values()) - len(facts)
    out = {
        "policy": policy,
        "flows": len(facts),
        "sent_flows": 2 * half,
        "broken": len(broken),
        "broken_fraction": len(broken) / max(1, len(facts)),
        "changed_lb": changed_lb,
        "new_flows_per_lb": new_flows,
        "lbs_before": before,
        "lbs_after": after,
    }
    if remove_backend:
        out.update(
            {
                "on_removed": len(on_removed),
                "removed_share": len(on_removed) / max(1, len(facts)),
                "broken_survivors": len(broken & survivors),
                "broken_survivor_fraction": len(broken & survivors) / max(1, len(survivors)),
            }
        )
    log(
        f"{tag}: {policy}: {len(broken)} of {len(facts)} flows broke"
        + (f", {changed_lb} changed LB" if changed_lb is not None else "")
    )
    return out


def run(workdir: str, quick: bool = False) -> dict:
    from topologies.scenarios import EcmpTopo, ecmp_ip

    flows, rounds, rate = (200, 20, 1500) if quick else (400, 30, 2000)
    checks = Checks()
    bed = Bed(workdir, EcmpTopo(clients=2, lbs=3, backends=4))
    runs: dict[str, dict] = {}
    try:
        setup = [
            "sysctl -qw net.ipv4.ip_forward=1",
            "sysctl -qw net.ipv4.fib_multipath_hash_policy=1",
            "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
        ]
        for command in setup:
            bed.cmd("r", command)
        backends = [f"b{i}" for i in range(1, 5)]
        for b in backends:
            bed.cmd(b, f"ip addr add {VIP}/32 dev lo")
            bed.cmd(b, "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")
        for lb in ("lb1", "lb2", "lb3"):
            bed.cmd(lb, "sysctl -qw net.ipv4.ip_forward=0")
        bed.offloads_off()
        for name in ("lb1", "lb2", "lb3", *backends):  # the router learns every MAC
            bed.cmd("r", f"ping -c1 -W1 {ecmp_ip(name)} >/dev/null")
        bed.start_backends(backends)
        for policy in ("maglev", "hash", "roundrobin"):
            runs[f"add-{policy}"] = _one_run(
                bed,
                f"add-{policy}",
                policy,
                ["lb1", "lb2"],
                ["lb1", "lb2", "lb3"],
                False,
                flows,
                rounds,
                rate,
            )
            runs[f"remove-{policy}"] = _one_run(
                bed,
                f"remove-{policy}",
                policy,
                ["lb1", "lb2", "lb3"],
                ["lb1", "lb2"],
                False,
                flows,
                rounds,
                rate,
            )
        for policy in ("maglev", "hash"):
            runs[f"backend-{policy}"] = _one_run(
                bed,
                f"backend-{policy}",
                policy,
                ["lb1", "lb2"],
                ["lb1", "lb2"],
                True,
                flows,
                rounds,
                rate,
            )
    finally:
        bed.close()

    for key, r in runs.items():
        checks.add(
            f"{key}: flows arrived",
            r["flows"] >= 0.98 * r["sent_flows"],
            f"{r['flows']} of {r['sent_flows']}",
        )
    for event in ("add", "remove"):
        for policy in ("maglev", "hash"):
            r = runs[f"{event}-{policy}"]
            checks.add(
                f"{event} LB, {policy}: no flow breaks",
                r["broken"] == 0 and r["changed_lb"] > 0,
                f"{r['changed_lb']} flows changed LB instance, {r['broken']} broke",
            )
        r = runs[f"{event}-roundrobin"]
        checks.add(
            f"{event} LB, roundrobin: flows that change LB break",
            r["changed_lb"] > 0 and r["broken"] >= 0.5 * r["changed_lb"],
            f"{r['changed_lb']} flows changed LB instance, {r['broken']} broke",
        )
    m, h = runs["backend-maglev"], runs["backend-hash"]
    checks.add(
        "remove backend, maglev: about 1/N moves",
        m["broken_survivor_fraction"] < 0.10 and m["broken"] >= 0.9 * m["on_removed"],
        f"{pct(m['broken'], m['flows'])} of flows broke ({REMOVED} had "
        f"{pct(m['on_removed'], m['flows'])}); {pct(m['broken_survivors'], m['flows'] - m['on_removed'])} "
        f"of the other backends' flows",
    )
    checks.add(
        "remove backend, hash-mod-N: most flows move",
        h["broken_survivor_fraction"] > 0.5,
        f"{pct(h['broken'], h['flows'])} of flows broke; "
        f"{pct(h['broken_survivors'], h['flows'] - h['on_removed'])} of the other backends' flows",
    )

    lines = [
        "scale-out LB tier: router r (ECMP, L4 hash) -> AF_PACKET LB instances (DSR) -> 4 backends",
        f"  {flows} UDP flows x {rounds} packets at {rate} pps per run; the change happens mid-run",
        "",
        f"  {'change':<30}{'policy':<12}{'flows':>7}{'changed LB':>12}{'broke':>8}{'broke %':>9}",
    ]
    names = {
        "add": "add LB (2 -> 3 next hops)",
        "remove": "remove LB (3 -> 2)",
        "backend": f"remove backend {REMOVED} (no state)",
    }
    for key, r in runs.items():
        event = key.split("-")[0]
        changed = "-" if r["changed_lb"] is None else str(r["changed_lb"])
        lines.append(
            f"  {names[event]:<30}{r['policy']:<12}{r['flows']:>7}{changed:>12}"
            f"{r['broken']:>8}{pct(r['broken'], r['flows']):>9}"
        )
    lines.append(
        f"  (remove backend: {REMOVED} carried {pct(m['on_removed'], m['flows'])} of the flows "
        f"under maglev, {pct(h['on_removed'], h['flows'])} under hash)"
    )
    return {"ok": checks.ok, "checks": checks.items, "figures": runs, "lines": lines}
