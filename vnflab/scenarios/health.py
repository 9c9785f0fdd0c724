"""Scenario ``health``: health checks remove a dead backend, a drained backend keeps its flows.

Set-up: the default LB topology (2 clients, the LB, 4 backends, one bridge), direct server
return, the AF_PACKET LB with TCP health probes every 0.2 s (``vnflab.scenarios.lbctl``).

1. c1 starts long UDP flows (``old`` flows: every flow sends a packet every round).
2. Mid-run b2's server stops. Its flows' packets are lost until the probes notice (3 failed
   probes); then the pool marks b2 unhealthy and the LB moves b2's flows (flow-table hit on a
   backend that no longer serves -> a new choice). Every other flow stays where it is: the
   connection table remembers it.
3. b3 is drained (control file): no new flows, but its existing flows continue on it.
4. c2 starts ``new`` flows: none may land on b2 (dead) or b3 (drained).

Figure: the fraction of old flows that moved, next to the fraction that were on b2.
"""

from __future__ import annotations

import json
import time

from testbed.experiment import log
from vnflab.scenarios.base import (
    Bed,
    Checks,
    first_backend,
    flow_facts,
    lb_config,
    live_stats,
    pct,
    setup_dsr,
)

DEAD, DRAINED = "b2", "b3"


def _wait_state(path: str, backend: str, state: str, timeout: float) -> float | None:
    """Seconds until the LB's state file shows ``backend`` in ``state`` (None: never)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with open(path) as f:
                if json.load(f)["backends"].get(backend) == state:
                    return time.monotonic() - t0
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    return None


def run(workdir: str, quick: bool = False) -> dict:
    from topologies.lb import LBTopo, LBTopoConfig

    cfg = LBTopoConfig(clients=2, backends=4)
    old_flows, rounds, rate = (200, 30, 1000) if quick else (400, 40, 1600)
    new_flows = 200 if quick else 400
    round_s = old_flows / rate
    checks = Checks()
    bed = Bed(workdir, LBTopo(cfg))
    try:
        backends = cfg.backend_names()
        setup_dsr(bed, backends)
        for c in cfg.client_names():
            bed.cmd(c, f"ip neigh replace {cfg.vip} lladdr {cfg.host_mac('lb')} dev {c}-eth0")
        bed.cmd("lb", "sysctl -qw net.ipv4.ip_forward=0")
        bed.offloads_off()
        bed.settle(cfg.client_names()[0])
        bed.start_backends(backends)
        control, state = bed.path("control.json"), bed.path("state.json")
        config = lb_config(
            [(b, cfg.host_ip(b), cfg.host_mac(b)) for b in backends],
            "lb-eth0",
            cfg.host_mac("lb"),
            cfg.host_ip("lb"),
            # A probe must not call a live backend dead just because this
            # 2-core box is busy: a 0.2 s timeout with 2 fails flapped a live
            # backend under load (its flows moved). 0.5 s x 3 fails still
            # detects a dead one in about a second.
            io={
                "health": {"interval": 0.2, "timeout": 0.5, "fails": 3},
                "control_file": control,
                "state_file": state,
            },
        )
        lb = bed.start_lb("lb", config, "health")

        log(f"old flows: {old_flows} UDP flows x {rounds} packets at {rate} pps from c1")
        old = bed.start_driver("c1", "old", 1, old_flows, rounds, rate)
        time.sleep(rounds * round_s * 0.3)
        log(f"stopping the server on {DEAD}")
        bed.stop_backend(DEAD)
        detect = _wait_state(state, DEAD, "unhealthy", 10)
        log(f"{DEAD} marked unhealthy {detect} s after its server exited; draining {DRAINED}")
        with open(control, "w") as f:
            json.dump({"drain": [DRAINED]}, f)
        drain_took = _wait_state(state, DRAINED, "draining", 5)
        time.sleep(round_s)  # every old flow has sent at least once since
        log(f"new flows: {new_flows} UDP flows x 3 packets from c2")
        new = bed.start_driver("c2", "new", 2, new_flows, 3, rate / 2)
        bed.wait_drivers([old, new], timeout=rounds * round_s * 3 + 60)
        stats = live_stats(lb)
        lb.stop()
        facts = flow_facts(bed.backend_records())
    finally:
        bed.close()

    old_ids = set(range(1_000_000, 1_000_000 + old_flows))
    new_ids = set(range(2_000_000, 2_000_000 + new_flows))
    old_seen = {f: facts[f] for f in old_ids if f in facts}
    started_on = {f: first_backend(w) for f, w in old_seen.items()}
    moved = {f for f, w in old_seen.items() if len(w) > 1}
    on_dead = {f for f, b in started_on.items() if b == DEAD}
    on_drained = {f for f, b in started_on.items() if b == DRAINED}
    moved_live = moved - on_dead
    # Drained flows continued: the drained backend saw (nearly) their last round.
    continued = {
        f
        for f in on_drained
        if set(old_seen[f]) == {DRAINED} and old_seen[f][DRAINED]["max_seq"] >= rounds - 2
    }
    new_seen = {f: facts[f] for f in new_ids if f in facts}
    new_on = {b: sum(1 for w in new_seen.values() if b in w) for b in backends}
    lbs = stats.get("lb", {})

    figures = {
        "old_flows": len(old_seen),
        "moved": len(moved),
        "moved_fraction": len(moved) / max(1, len(old_seen)),
        "on_dead_backend": len(on_dead),
        "dead_share": len(on_dead) / max(1, len(old_seen)),
        "moved_from_live_backends": len(moved_live),
        "detect_s": detect,
        "drain_applied_s": drain_took,
        "drained_flows": len(on_drained),
        "drained_flows_continued": len(continued),
        "new_flows_seen": len(new_seen),
        "new_flows_per_backend": new_on,
        "lb_reassigned": lbs.get("reassigned"),
        "lb_backends": lbs.get("backends"),
        "health_probes": stats.get("health_probes"),
    }
    checks.add(
        "old flows arrived",
        len(old_seen) >= 0.98 * old_flows,
        f"{len(old_seen)} of {old_flows} seen at a backend",
    )
    checks.add(
        "only the dead backend's flows moved",
        bool(not moved_live and on_dead),
        f"{len(moved)} moved: {len(moved & on_dead)} of {len(on_dead)} from {DEAD}, "
        f"{len(moved_live)} from live backends",
    )
    checks.add(
        "the dead backend's flows were moved",
        len(moved & on_dead) >= 0.95 * len(on_dead),
        f"{len(moved & on_dead)} of {len(on_dead)} (LB reassigned {lbs.get('reassigned')})",
    )
    checks.add(
        "health check noticed the failure",
        detect is not None and detect < 2.0,
        f"{DEAD} unhealthy {detect if detect is None else round(detect, 2)} s after exit",
    )
    checks.add(
        "drained backend kept its flows",
        bool(on_drained and len(continued) >= 0.95 * len(on_drained)),
        f"{len(continued)} of {len(on_drained)} flows on {DRAINED} stayed and ran to the end",
    )
    checks.add(
        "new flows avoid dead and drained backends",
        new_on[DEAD] == 0 and new_on[DRAINED] == 0 and len(new_seen) >= 0.98 * new_flows,
        f"{len(new_seen)} new flows: " + ", ".join(f"{b}={n}" for b, n in new_on.items()),
    )
    detect_txt = "never" if detect is None else f"{detect:.2f} s"
    lines = [
        "health and drain (AF_PACKET LB, DSR, TCP probes every 0.2 s, 2 failures = down)",
        f"  {'old flows (c1)':<34}{len(old_seen):>6}",
        f"  {f'started on {DEAD} (server stopped)':<34}{len(on_dead):>6}  ({pct(len(on_dead), len(old_seen))})",
        f"  {'moved to another backend':<34}{len(moved):>6}  ({pct(len(moved), len(old_seen))})",
        f"  {'  of them from live backends':<34}{len(moved_live):>6}",
        f"  {'failure detected after':<34}{detect_txt:>6}",
        f"  {f'started on {DRAINED} (drained)':<34}{len(on_drained):>6}  "
        f"({len(continued)} stayed on {DRAINED} to the end)",
        f"  {'new flows (c2) per backend':<34}" + "  ".join(f"{b}={n}" for b, n in new_on.items()),
    ]
    return {"ok": checks.ok, "checks": checks.items, "figures": figures, "lines": lines}
