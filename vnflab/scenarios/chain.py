"""Scenario ``chain``: a firewall NF in front of the LB, in one process and in two.

Two ways to chain network functions, both on way 2's AF_PACKET rings:

* **pipeline in one process** (``mode: pipeline``): per RX batch, stage 1 (the firewall) turns
  denied flows into None, stage 2 (the LB) picks backends for the rest, one TX kick. The packet
  never leaves the process between the NFs.
* **two processes joined by a veth pair** (``mode: firewall`` | ``lb``): the firewall process
  reads ``lb-eth0`` and transmits allowed frames into ``fw0``; the LB process reads their copies
  on the other end, ``fw1``, and transmits to the backends on ``lb-eth0``. Each hop between
  NFs costs a TX ring copy, a veth crossing (an skb) and an RX ring copy.

The scenario measures the CPU time per forwarded packet of the LB alone (way 2's
``vnf.ways.afpacket_lb``), of the one-process chain, and of the two-process chain (both
processes), at the same offered load, and checks that flows the firewall denies (all of c2)
never reach a backend, while c1's flows all do.

The program (``python -m vnflab.scenarios.chain --config LB.json ...``) follows the way
contract (``vnf/ways/common.py``); ``io`` adds ``mode``, ``firewall`` (``{"rules": [...],
"default": "deny"}``, see ``vnflab/scenarios/firewall.py``), ``rx_iface``/``tx_iface`` and
``next_mac`` (where the firewall stage sends allowed frames).
"""

from __future__ import annotations

import time

from vnf.afpacket.ring import DROP, Rewrite, RxRing, TxRing, interface_mac
from vnf.lb import NOT_FOR_VIP
from vnf.ways.afpacket_lb import AfPacketLB
from vnf.ways.common import fail
from vnflab.scenarios.firewall import Firewall

MODES = ("pipeline", "firewall", "lb")


class ChainNF(AfPacketLB):
    """Way 2's LB with a firewall stage in front (or only one of the two stages)."""

    way = "chain"

    def open_rings(self) -> None:
        """Way 2 opens its rings in setup(); here RX and TX may be different interfaces."""
        self.rx_iface = self.io.get("rx_iface", self.iface)
        self.tx_iface = self.io.get("tx_iface", self.iface)
        self.rx, self.tx = RxRing(self.rx_iface), TxRing(self.tx_iface)

    def setup(self) -> None:
        super().setup()
        io = self.io
        if self.workers != 1 or self.mode != "dsr":
            fail("chain_mode", "a chain stage runs with workers=1 and mode=dsr")
        self.chain_mode = io.get("chain_mode", "pipeline")
        if self.chain_mode not in MODES:
            fail("chain_mode", f"must be one of {', '.join(MODES)}, got {self.chain_mode!r}")
        self.firewall = None
        if self.chain_mode in ("pipeline", "firewall"):
            spec = io.get("firewall") or fail("firewall", "rules are required in this mode")
            try:
                self.firewall = Firewall(spec.get("rules", []), spec.get("default", "deny"))
            except ValueError as exc:
                fail("firewall", str(exc))
        if self.chain_mode == "firewall":  # every allowed frame goes to the next NF's MAC
            next_mac = io.get("next_mac") or fail("next_mac", "required in firewall mode")
            self.rewrite = Rewrite.dsr(
                src_mac=interface_mac(self.tx_iface), backend_macs=[next_mac]
            )
        else:
            self.rewrite = Rewrite.dsr(
                src_mac=interface_mac(self.tx_iface),
                backend_macs=[b.mac for b in self.config.backends],
            )

    # --- the hot loop ------------------------------------------------------------------------
    def run(self) -> None:
        rx, tx = self.rx, self.tx
        firewall, lb, index = self.firewall, self.lb, self.backend_index
        balance = self.chain_mode != "firewall"
        try:
            while not self.stopping:
                batch = rx.next_batch(timeout_ms=100)
                if batch is None:
                    continue
                now = time.monotonic()
                flows = batch.flows()  # FiveTuple, or None: unparseable
                if firewall is not None:
                    flows = firewall.filter(flows)  # stage 1: denied flows -> None
                choices = []
                for flow in flows:  # stage 2: the LB (or pass on)
                    if flow is None:
                        choices.append(DROP)
                    elif not balance:
                        choices.append(0)
                    elif not lb.is_for_service(flow):
                        lb.count_drop(NOT_FOR_VIP)
                        choices.append(DROP)
                    else:
                        backend = lb.backend_for(flow, now)
                        choices.append(DROP if backend is None else index[backend.name])
                self.count_drops(batch)
                self.sent += tx.send_batch(batch, choices, self.rewrite)
                batch.release()
                self.batches += 1
        finally:
            self.close_rings()

    def extra_stats(self) -> dict:
        return {
            **super().extra_stats(),
            "chain_mode": self.chain_mode,
            "firewall": self.firewall.stats() if self.firewall else None,
        }


if __name__ == "__main__":
    ChainNF.main()


# --------------------------------------------------------------------------------------------
# the scenario (runs inside the sandbox; see vnflab.scenarios.runner)
# --------------------------------------------------------------------------------------------

RULES = [
    {"action": "deny", "src": "10.0.0.12/32"},  # c2 is not a customer
    {"action": "allow", "dst": "10.0.0.100/32", "dport": "8080", "proto": "udp"},
    {"action": "allow", "dst": "10.0.0.100/32", "dport": "8080", "proto": "tcp"},
]
SETUPS = ("lb alone", "chain, one process", "chain, two processes")


def _udp_packets(bed) -> int:
    """UDP datagrams all backends have received so far."""
    return sum(r.get("udp_packets", 0) for r in bed.backend_records())


def _start(bed, setup: str, base: dict, fw1_mac: str, phase: str) -> list:
    import copy

    firewall = {"rules": RULES, "default": "deny"}
    tag = setup.replace(", ", "-").replace(" ", "-") + "-" + phase
    if setup == "lb alone":  # way 2 itself, the baseline
        return [bed.start_lb("lb", base, tag, module="vnf.ways.afpacket_lb")]
    if setup == "chain, one process":
        cfg = copy.deepcopy(base)
        cfg["io"].update(chain_mode="pipeline", firewall=firewall)
        return [bed.start_lb("lb", cfg, tag, module="vnflab.scenarios.chain")]
    lb_cfg, fw_cfg = copy.deepcopy(base), copy.deepcopy(base)
    lb_cfg["io"].update(chain_mode="lb", rx_iface="fw1")
    fw_cfg["io"].update(chain_mode="firewall", firewall=firewall, tx_iface="fw0", next_mac=fw1_mac)
    return [
        bed.start_lb("lb", lb_cfg, tag + "-lb", module="vnflab.scenarios.chain"),
        bed.start_lb("lb", fw_cfg, tag + "-fw", module="vnflab.scenarios.chain"),
    ]


def _cpu(procs) -> float:
    """User + system CPU seconds of the NF processes, from their own getrusage (microsecond
    resolution; /proc ticks are 10 ms, too coarse for a few seconds at a few thousand pps)."""
    from vnflab.scenarios.base import live_stats

    total = 0.0
    for p in procs:
        stats = live_stats(p)
        total += stats["cpu_user_s"] + stats["cpu_sys_s"]
    return total


def run(workdir: str, quick: bool = False) -> dict:
    from testbed.experiment import log
    from topologies.lb import LBTopo, LBTopoConfig
    from vnflab.scenarios.base import Bed, Checks, flow_facts, lb_config, live_stats, setup_dsr

    rate, seconds, rounds = (8000, 1.5, 3) if quick else (10000, 3.0, 5)
    cfg = LBTopoConfig(clients=2, backends=3)
    checks = Checks()
    bed = Bed(workdir, LBTopo(cfg))
    results: dict[str, dict] = {}
    try:
        backends = cfg.backend_names()
        setup_dsr(bed, backends)
        for c in cfg.client_names():
            bed.cmd(c, f"ip neigh replace {cfg.vip} lladdr {cfg.host_mac('lb')} dev {c}-eth0")
        for command in (
            "sysctl -qw net.ipv4.ip_forward=0",
            "ip link add fw0 type veth peer name fw1",
            "sysctl -qw net.ipv6.conf.fw0.disable_ipv6=1 net.ipv6.conf.fw1.disable_ipv6=1",
            "ip link set fw0 up",
            "ip link set fw1 up",
        ):
            bed.cmd("lb", command)
        bed.offloads_off()
        bed.settle(cfg.client_names()[0])
        fw1_mac = bed.cmd("lb", "cat /sys/class/net/fw1/address").strip()
        base = lb_config(
            [(b, cfg.host_ip(b), cfg.host_mac(b)) for b in backends],
            "lb-eth0",
            cfg.host_mac("lb"),
            cfg.host_ip("lb"),
        )
        bed.start_backends(backends)
        for setup in SETUPS:  # 1. does the firewall keep c2 out?
            procs = _start(bed, setup, base, fw1_mac, "check")
            log(f"{setup}: allowed (c1) and denied (c2) flows")
            drivers = [
                bed.start_driver("c1", f"{setup}-allow", 1, 100, 3, 500, http_conns=6),
                bed.start_driver("c2", f"{setup}-deny", 2, 100, 3, 500, http_conns=4),
            ]
            clients = bed.wait_drivers(drivers, timeout=60)
            records = bed.backend_records()
            final = [p.stop() for p in procs]
            bed.restart_backends()  # fresh records for the next setup
            udp, tcp = flow_facts(records, "udp"), flow_facts(records, "tcp")
            results[setup] = {
                "processes": len(procs),
                "c1_udp_flows_arrived": sum(1 for f in udp if 1_000_000 <= f < 2_000_000),
                "c1_http_ok": sum(1 for h in clients[0]["http"] if h["ok"]),
                "c2_flows_at_backends": sum(1 for f in [*udp, *tcp] if 2_000_000 <= f < 3_000_000),
                "c2_http_ok": sum(1 for h in clients[1]["http"] if h["ok"]),
                "check_ring_drops": sum(st.get("ring_drops") or 0 for st in final),
                "offered_pps": rate,
                "sent": 0,
                "forwarded": 0,
                "cpu_s": 0.0,
                "runs_ns": [],
            }
        # 2. cost: the setups take turns, so a busy moment of a shared machine hits all of them
        per_flow = int(rate * seconds) // 64
        for rnd in range(rounds):
            for setup in SETUPS:
                r = results[setup]
                procs = _start(bed, setup, base, fw1_mac, f"cost{rnd}")
                log(f"{setup}: cost round {rnd + 1}/{rounds}, {rate} pps for {seconds:g} s")
                before = _udp_packets(bed)
                cpu0 = _cpu(procs)
                cost = bed.wait_drivers(
                    [bed.start_driver("c1", f"{setup}-cost{rnd}", 1, 64, per_flow, rate)],
                    timeout=seconds * 4 + 30,
                )
                cpu = _cpu(procs) - cpu0
                forwarded = _udp_packets(bed) - before
                stats = [live_stats(p) for p in procs]
                for p in procs:
                    p.stop()
                r["sent"] += cost[0]["udp_summary"]["sent"]
                r["forwarded"] += forwarded
                r["cpu_s"] = round(r["cpu_s"] + cpu, 4)
                r["runs_ns"].append(round(cpu / forwarded * 1e9) if forwarded else None)
                r["firewall"] = [s.get("firewall") for s in stats if s.get("firewall")]
        for r in results.values():
            runs = sorted(x for x in r["runs_ns"] if x is not None)
            r["ns_per_packet"] = runs[len(runs) // 2] if len(runs) == rounds else None
    finally:
        bed.close()

    alone = results["lb alone"]["ns_per_packet"]
    for setup, r in results.items():
        r["vs_lb_alone"] = (
            round(r["ns_per_packet"] / alone, 2) if alone and r["ns_per_packet"] else None
        )
        checks.add(
            f"{setup}: allowed flows arrive",
            r["c1_udp_flows_arrived"] >= 90 and r["c1_http_ok"] == 6,
            f"c1: {r['c1_udp_flows_arrived']} of 100 UDP flows, {r['c1_http_ok']} of 6 HTTP "
            f"(RX ring drops {r['check_ring_drops']})",
        )
        checks.add(
            f"{setup}: cost measured",
            r["ns_per_packet"] is not None and r["forwarded"] >= 0.9 * r["sent"] > 0,
            f"{r['forwarded']} of {r['sent']} packets forwarded, {r['ns_per_packet']} ns/packet "
            f"(runs: {r['runs_ns']})",
        )
        if setup == "lb alone":  # the contrast: without the firewall c2 gets through
            checks.add(
                "lb alone: c2 reaches the backends",
                r["c2_flows_at_backends"] >= 90,
                f"{r['c2_flows_at_backends']} of c2's flows at backends",
            )
        else:
            checks.add(
                f"{setup}: denied flows never reach a backend",
                r["c2_flows_at_backends"] == 0 and r["c2_http_ok"] == 0,
                f"{r['c2_flows_at_backends']} of c2's 104 flows at backends, "
                f"{r['c2_http_ok']} HTTP answered",
            )
    lines = [
        f"service chain: firewall -> LB on AF_PACKET rings; cost at {rate} pps offered, "
        f"64 allowed UDP flows, median of {rounds} runs of {seconds:g} s taking turns",
        f"  {'setup':<24}{'procs':>6}{'forwarded':>11}{'CPU s':>8}{'ns/pkt':>8}{'x alone':>9}"
        f"{'c2 flows at backends':>22}",
    ]
    for setup, r in results.items():
        lines.append(
            f"  {setup:<24}{r['processes']:>6}{r['forwarded']:>11}{r['cpu_s']:>8}"
            f"{str(r['ns_per_packet']):>8}{str(r['vs_lb_alone']):>9}{r['c2_flows_at_backends']:>22}"
        )
    lines.append(
        "  method: user+sys CPU of the NF processes (getrusage) / packets the backends "
        "received; the kernel's veth receive work for client->LB runs on the sender's core "
        "and is not charged; in the two-process chain the fw0->fw1 hop is charged to the "
        "firewall process."
    )
    return {"ok": checks.ok, "checks": checks.items, "figures": results, "lines": lines}
