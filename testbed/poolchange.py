"""Pool changes under live traffic: does the LB keep affinity *because of its flow table*?

While the backend set stays the same, an LB that skips its flow table and asks Maglev for every
packet keeps every flow on one backend by luck. So here the pool changes mid-stream:

1. phase A: long UDP flows start on every client (``long_packets`` datagrams each, spread over
   ``long_seconds``: a packet of each flow every few hundred ms);
2. after ``change_after_s`` the orchestrator writes the control file (``vnf.control``: add a
   backend, drain one or fail one) and sends the LB a SIGHUP (the way contract's control
   interface, ``vnf/ways/common.py``); the wall-clock time of the signal is the change time;
3. phase B: the long flows go on; ``grace_s`` after the change, new short flows start;
4. ``fail`` only: ``recover_after_s`` after the change the backend recovers (the control file
   is ``{}`` again, another SIGHUP): a flapping backend;
5. ``testbed.checker.judge_pool_change`` judges every flow from the backends' per-flow records
   (first/last packet times), never from the LB's own counters.

``drive_pool_change(bed, lb_pid, control_file, plan)`` runs steps 1-5 against a running LB on
any ``MininetBed`` with the LB topology (the grader passes its jailed LB's pid). Tests run
whole plans in a sandbox with ``run_sandboxed``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

from testbed.checker import POOL_CHANGES, judge_pool_change
from testbed.experiment import Driver, ExperimentSpec, Testbed, log, traffic_argv
from vnf.addresses import SERVICE_PORT

NEW_FLOW_ID_OFFSET = 200_000  # new flows' ids inside a client's span (long flows: from 0)
# A shorter run of the same shape (quick gradings, self-tests): long flows still send every
# 0.2 s, the new flows still end before a failed backend recovers, and the long flows still
# outlive the recovery by 1.5 s, so every rule is judged as in the full plan.
QUICK_TIMING = {
    "long_packets": 28,
    "long_seconds": 5.5,
    "change_after_s": 1.5,
    "recover_after_s": 2.5,
}


@dataclass
class PoolChangePlan:
    kind: str  # add | drain | fail
    backend: str  # the backend that joins (add) or is drained / failed
    lb_backends: list[str] | None = None  # configured in the LB; None: all but an added one
    long_flows: int = 48
    long_packets: int = 40
    long_seconds: float = 8.0
    change_after_s: float = 2.5
    grace_s: float = 1.0  # the LB's time to act on the signal
    new_flows: int = 60
    new_packets: int = 3
    new_seconds: float = 1.2
    recover_after_s: float = 3.0  # fail: the backend is back this long after the change

    def validate(self, backends: list[str]) -> PoolChangePlan:
        if self.kind not in POOL_CHANGES:
            raise ValueError(f"kind: must be one of {', '.join(POOL_CHANGES)}, got {self.kind!r}")
        if self.backend not in backends:
            raise ValueError(f"backend: {self.backend!r} is not a backend of the topology")
        configured = self.configured(backends)
        if (self.backend in configured) == (self.kind == "add"):
            raise ValueError(
                f"backend: {self.backend} must {'not ' * (self.kind == 'add')}"
                f"be among the LB's backends for {self.kind}"
            )
        if len(configured) < 2:
            raise ValueError("lb_backends: need at least 2 (a change must leave one)")
        end_of_new = self.grace_s + self.new_seconds
        if self.kind == "fail" and self.recover_after_s and self.recover_after_s <= end_of_new:
            raise ValueError("recover_after_s: the new flows must be over before the recovery")
        if self.change_after_s + max(end_of_new, self.recover_after_s) >= self.long_seconds:
            raise ValueError("long_seconds: the long flows must outlast the change")
        return self

    def configured(self, backends: list[str]) -> list[str]:
        if self.lb_backends is not None:
            return list(self.lb_backends)
        return [b for b in backends if not (self.kind == "add" and b == self.backend)]

    def control_doc(self, bed) -> dict:
        """The control document of the change (the recovery is ``{}``)."""
        if self.kind == "add":
            cfg = bed.topo_cfg
            return {
                "add": [
                    {
                        "name": self.backend,
                        "ip": cfg.host_ip(self.backend),
                        "mac": cfg.host_mac(self.backend),
                        "port": SERVICE_PORT,
                    }
                ]
            }
        return {self.kind: [self.backend]}


def write_control(path: str, doc: dict) -> None:
    """Atomically, readable by the LB's user (the grader's LB runs as another user)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _start_drivers(
    bed, tag: str, flows: int, packets: int, seconds: float, id_offset: int
) -> list[Driver]:
    clients = bed.topo_cfg.client_names()
    drivers = []
    for i, c in enumerate(clients):
        n = flows // len(clients) + (1 if i < flows % len(clients) else 0)
        if not n:
            continue
        client_id = int(c[1:])
        out = bed.path(f"{tag}-{c}.json")
        extra = ("--flow-id-base", str(client_id * 1_000_000 + id_offset))
        argv = traffic_argv(
            bed.topo_cfg.vip, client_id, n, packets, n * packets / seconds, 0, out, extra
        )
        drivers.append(Driver(bed.popen(c, argv, f"{tag}-{c}"), out, c))
    return drivers


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.05))


def signal_change(lb_pid: int, control_file: str, doc: dict) -> float:
    """Write the control document, SIGHUP the LB; returns the wall-clock time of the signal."""
    write_control(control_file, doc)
    t = time.time()
    os.kill(lb_pid, signal.SIGHUP)
    return t


def drive_pool_change(
    bed, lb_pid: int, control_file: str, plan: PoolChangePlan, tag: str = "pool"
) -> dict:
    """Steps 1-5 of the module docstring against the LB running as ``lb_pid``, started with
    ``--control-file control_file`` (holding ``{}``) and ``plan.configured(...)``, on
    backends with fresh records. Returns the facts: the plan, the change times, the judge's
    report (``to_json``) and its table."""
    plan.validate(bed.topo_cfg.backend_names())
    t0 = time.time()
    drivers = _start_drivers(
        bed, f"{tag}-long", plan.long_flows, plan.long_packets, plan.long_seconds, 0
    )
    _sleep_until(t0 + plan.change_after_s)
    doc = plan.control_doc(bed)
    changed_at = signal_change(lb_pid, control_file, doc)
    log(f"pool change: {plan.kind} {plan.backend} at +{changed_at - t0:.2f} s")
    _sleep_until(changed_at + plan.grace_s)
    drivers += _start_drivers(
        bed, f"{tag}-new", plan.new_flows, plan.new_packets, plan.new_seconds, NEW_FLOW_ID_OFFSET
    )
    recovered_at = None
    if plan.kind == "fail" and plan.recover_after_s:
        _sleep_until(changed_at + plan.recover_after_s)
        recovered_at = signal_change(lb_pid, control_file, {})
    clients = bed.wait_drivers(drivers, timeout=plan.long_seconds * 3 + 30, strict=False)
    report = judge_pool_change(
        bed.backend_records(), plan.kind, plan.backend, changed_at, plan.grace_s, recovered_at
    )
    sent = sum(u.get("sent", 0) for c in clients for u in c.get("udp", []))
    return {
        "plan": asdict(plan),
        "control": doc,
        "changed_at": changed_at,
        "recovered_at": recovered_at,
        "udp_sent": sent,
        "drivers_reported": len(clients),
        "drivers_started": len(drivers),
        "report": report.to_json(),
        "table": report.table(),
    }


# --------------------------------------------------------------------------------------------
# whole plans in a sandbox (tests, demos)
# --------------------------------------------------------------------------------------------


@dataclass
class PoolChangeSpec:
    way: str = "socket"
    clients: int = 2
    backends: int = 4
    lb_command: list[str] | None = None
    lb_extra: dict = field(default_factory=dict)
    plans: list[dict] = field(default_factory=list)  # PoolChangePlan fields
    timeout_s: float = 150.0


def run_plans(spec: PoolChangeSpec, workdir: str) -> dict:
    """Each plan with a fresh LB and fresh backend records, in one topology."""
    exp = ExperimentSpec(
        way=spec.way,
        clients=spec.clients,
        backends=spec.backends,
        lb_command=spec.lb_command,
        lb_extra=spec.lb_extra,
    )
    bed = Testbed(exp.validate(), workdir)
    results = []
    try:
        for i, fields in enumerate(spec.plans):
            plan = PoolChangePlan(**fields).validate(bed.topo_cfg.backend_names())
            if i:
                bed.restart_backends()
            control = bed.path(f"control-{i}.json")
            write_control(control, {})
            lb = bed.start_lb(
                f"pool-{i}",
                plan.configured(bed.topo_cfg.backend_names()),
                ("--control-file", control),
            )
            facts = drive_pool_change(bed, lb.proc.pid, control, plan, tag=f"pool-{i}")
            facts["lb_alive"] = lb.alive()
            stats = lb.stop()
            facts["lb_control"] = stats.get("control")
            if not facts["lb_alive"]:
                facts["lb_log_tail"] = lb.log_tail()
            log(facts["table"])
            results.append(facts)
    finally:
        bed.close()
    return {"way": spec.way, "results": results}


def run_sandboxed(spec: PoolChangeSpec, keep_workdir: str | None = None) -> dict:
    from testbed import sandbox

    return sandbox.run_module_in_sandbox(
        "testbed.poolchange",
        asdict(spec),
        spec.timeout_s,
        keep_workdir,
        what="pool-change run",
        keep=bool(keep_workdir),
        prefix="vnflab-pool-",
    )


def main(argv: list[str]) -> int:
    from testbed import sandbox

    return sandbox.serve_module(
        argv, lambda spec, workdir: run_plans(PoolChangeSpec(**spec), workdir)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
