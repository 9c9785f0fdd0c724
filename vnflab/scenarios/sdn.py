"""Scenario ``sdn``: service insertion. An os-ken app steers VIP traffic through the VNF.

Set-up (``topologies.scenarios.SdnTopo``): the default hosts on one OVS switch with the
userspace datapath, run by a private ``ovsdb-server`` + ``ovs-vswitchd`` inside the sandbox
(``testbed.ovsdpdk.PrivateOVSDPDK`` with ``dpdk=False``, whose run dir is the default
``/var/run/openvswitch``: the sandbox mounts a private one there, so Mininet's ``OVSSwitch``
finds it at the default paths). The switch obeys an OpenFlow 1.3 controller, the
os-ken app ``vnflab/scenarios/sdn_app.py`` (L2 learning + VIP steering).

The service used to live on b1: clients send VIP traffic to b1's MAC. The LB (AF_PACKET, DSR)
sits on switch port 1.

1. **No steering rule**: the learning switch delivers VIP traffic straight to b1. The VNF is
   bypassed: it sees none of these flows, and every flow lands on b1.
2. **Steering on** (the app installs two table-0 rules): every VIP packet goes to the VNF
   first, which spreads the flows over b1..b3. Evidence: the LB's counters (a new flow per
   client flow) and the steering rule's packet count in ``ovs-ofctl dump-flows``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from functools import partial

from testbed.experiment import log
from vnflab.scenarios.base import Bed, Checks, flow_facts, lb_config, live_stats, setup_dsr

OVS_RUN = "/var/run/openvswitch"  # a private tmpfs inside the sandbox
OF_PORT = 6653


def start_ovs(workdir: str):
    """ovsdb-server + the plain (non-DPDK) ovs-vswitchd at the default paths of a sandbox
    (``testbed.ovsdpdk.PrivateOVSDPDK`` with ``dpdk=False``), logs in ``workdir``."""
    from testbed.ovsdpdk import PrivateOVSDPDK

    if not os.path.ismount(OVS_RUN):
        raise RuntimeError(f"{OVS_RUN} is not a private mount: run inside testbed.sandbox")
    return PrivateOVSDPDK(OVS_RUN, dpdk=False, log_dir=workdir).start()


def dump_flows(bridge: str = "s1") -> str:
    return subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout


def steering_packets(flows: str) -> int | None:
    """Packets matched by the rule that sends VIP traffic to the VNF (None: no such rule)."""
    for line in flows.splitlines():
        if "table=0," in line and "priority=100," in line and "nw_dst=" in line:
            m = re.search(r"n_packets=(\d+)", line)
            return int(m.group(1)) if m else None
    return None


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def run(workdir: str, quick: bool = False) -> dict:
    from mininet.node import RemoteController

    from topologies.scenarios import SdnTopo

    flows, packets, rate = (200, 5, 1000) if quick else (500, 5, 1500)
    checks = Checks()
    control = os.path.join(workdir, "sdn-control.json")
    ovs = start_ovs(workdir)
    app_log = open(os.path.join(workdir, "os-ken.log"), "wb")
    app = subprocess.Popen(
        [sys.executable, "-m", "vnflab.scenarios.sdn_app", "--port", str(OF_PORT)],
        env=dict(os.environ, VNFLAB_SDN_CONTROL=control),
        stdout=app_log,
        stderr=subprocess.STDOUT,
    )
    bed = None
    try:
        time.sleep(1.0)  # let the controller listen before the switch connects
        if app.poll() is not None:
            raise RuntimeError(f"the os-ken app exited ({app.returncode}); see os-ken.log")
        topo = SdnTopo(clients=2, backends=3)
        cfg = topo.config
        bed = Bed(workdir, topo, controller=partial(RemoteController, ip="127.0.0.1", port=OF_PORT))
        switch = bed["s1"]
        if not _wait_for(lambda: "table=1," in dump_flows(), 15):
            raise RuntimeError("the switch did not get the controller's table-miss rules")
        backends = cfg.backend_names()
        setup_dsr(bed, backends)
        bed.cmd("lb", "sysctl -qw net.ipv4.ip_forward=0")
        bed.offloads_off()
        loss = bed.net.pingAll(timeout=1)  # the learning switch learns every MAC
        service_mac = cfg.host_mac("b1")
        for c in cfg.client_names():
            bed.cmd(c, f"ip neigh replace {cfg.vip} lladdr {service_mac} dev {c}-eth0")
        bed.start_backends(backends)
        lb_port = switch.ports[switch.connectionsTo(bed["lb"])[0][0]]
        config = lb_config(
            [(b, cfg.host_ip(b), cfg.host_mac(b)) for b in backends],
            "lb-eth0",
            cfg.host_mac("lb"),
            cfg.host_ip("lb"),
        )
        lb = bed.start_lb("lb", config, "sdn")

        log(f"steering off: {flows} UDP flows x {packets} packets from c1 to the VIP")
        bed.wait_drivers([bed.start_driver("c1", "off", 1, flows, packets, rate)], timeout=60)
        off_stats = live_stats(lb).get("lb", {})
        off_facts = flow_facts(bed.backend_records())
        off_rule = steering_packets(dump_flows())

        with open(control, "w") as f:
            json.dump(
                {"steer": True, "vip": cfg.vip, "vnf_port": lb_port, "vnf_mac": cfg.host_mac("lb")},
                f,
            )
        installed = _wait_for(lambda: steering_packets(dump_flows()) is not None, 10)
        log(f"steering on (rule installed: {installed}): {flows} new flows from c2")
        bed.wait_drivers([bed.start_driver("c2", "on", 2, flows, packets, rate)], timeout=60)
        on_stats = live_stats(lb).get("lb", {})
        on_facts = flow_facts(bed.backend_records())
        flow_dump = dump_flows()
        on_rule = steering_packets(flow_dump)
        lb.stop()
    finally:
        if bed is not None:
            bed.close()
        app.terminate()
        try:
            app.wait(5)
        except subprocess.TimeoutExpired:
            app.kill()
        ovs.stop()

    off_ids = range(1_000_000, 1_000_000 + flows)
    on_ids = range(2_000_000, 2_000_000 + flows)
    off_seen = {f: off_facts[f] for f in off_ids if f in off_facts}
    on_seen = {f: on_facts[f] for f in on_ids if f in on_facts}
    off_per = {b: sum(1 for w in off_seen.values() if b in w) for b in backends}
    on_per = {b: sum(1 for w in on_seen.values() if b in w) for b in backends}
    lb_new_off = off_stats.get("new_flows", 0)
    lb_new_on = on_stats.get("new_flows", 0) - lb_new_off
    sent_on = flows * packets
    figures = {
        "ping_loss_pct": loss,
        "vnf_port": lb_port,
        "off": {
            "flows_seen": len(off_seen),
            "per_backend": off_per,
            "lb_new_flows": lb_new_off,
            "lb_forwarded": off_stats.get("forwarded", 0),
            "steering_rule_packets": off_rule,
        },
        "on": {
            "flows_seen": len(on_seen),
            "per_backend": on_per,
            "lb_new_flows": lb_new_on,
            "lb_forwarded": on_stats.get("forwarded", 0) - off_stats.get("forwarded", 0),
            "steering_rule_packets": on_rule,
            "packets_sent": sent_on,
        },
        "dump_flows": flow_dump.splitlines(),
    }
    checks.add(
        "without the rule the VNF is bypassed",
        off_rule is None and lb_new_off == 0 and off_per["b1"] == len(off_seen) >= 0.98 * flows,
        f"steering rule absent: {off_rule is None}; LB new flows {lb_new_off}; "
        f"{off_per['b1']} of {len(off_seen)} flows on b1",
    )
    checks.add(
        "with the rule every VIP flow traverses the VNF",
        len(on_seen) >= 0.98 * flows
        and lb_new_on == flows
        and sum(1 for n in on_per.values() if n) == len(backends),
        f"LB new flows {lb_new_on} for {flows} client flows; {len(on_seen)} arrived: "
        + ", ".join(f"{b}={n}" for b, n in on_per.items()),
    )
    checks.add(
        "the steering rule counts every VIP packet",
        on_rule is not None and on_rule >= sent_on,
        f"dump-flows n_packets={on_rule} for {sent_on} packets sent",
    )
    lines = [
        "SDN service insertion: OVS userspace switch + os-ken (OpenFlow 1.3): L2 learning, "
        "then a steering rule for the VIP",
        f"  {'':<26}{'steering off':>14}{'steering on':>14}",
        f"  {'client flows arrived':<26}{len(off_seen):>14}{len(on_seen):>14}",
        f"  {'LB new flows':<26}{lb_new_off:>14}{lb_new_on:>14}",
        f"  {'steering rule n_packets':<26}{str(off_rule or '-'):>14}{str(on_rule):>14}",
    ]
    for b in backends:
        lines.append(f"  {'flows on ' + b:<26}{off_per[b]:>14}{on_per[b]:>14}")
    lines += ["", "  ovs-ofctl -O OpenFlow13 dump-flows s1 (after the steered run):"]
    lines += [f"    {ln.strip()}" for ln in flow_dump.splitlines() if "table=" in ln]
    return {"ok": checks.ok, "checks": checks.items, "figures": figures, "lines": lines}
