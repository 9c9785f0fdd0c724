"""What the scenarios share: a Mininet network in the sandbox, backend servers, LB processes,
traffic drivers, and per-flow facts from the backends' records.

Everything here runs *inside* a sandbox (``vnflab.scenarios.runner``): processes and interfaces
die with it. Processes, the backend servers and the driver are the project's own
(``topologies.servers``, ``testbed.traffic``); the LB is ``vnflab.scenarios.lbctl`` (the AF_PACKET
way plus a health checker and a control file) unless a scenario says otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from testbed.experiment import (  # noqa: F401
    SERVICE_PORT,
    Driver,
    MininetBed,
    RunningLB,
    log,
    read_json,
    traffic_argv,
)
from vnf.addresses import VIP


class Checks:
    """The assertions of a scenario: each has a name, a verdict and the figures behind it."""

    def __init__(self):
        self.items: list[dict] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        log(f"check {'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(c["ok"] for c in self.items)


class Bed(MininetBed):
    """A started Mininet network plus the processes a scenario starts on its hosts (backends,
    LBs, drivers and their records: ``testbed.experiment.MininetBed``)."""

    def __init__(self, workdir: str, topo, switch=None, controller=None, **mn_kwargs):
        from mininet.link import Link
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge

        setLogLevel("error")
        Mininet.inited = True  # skip fixLimits(): its sysctls fail in a netns, harmlessly
        MininetBed.__init__(self, workdir)
        self.net = Mininet(
            topo=topo,
            switch=switch or LinuxBridge,
            controller=controller,
            link=Link,
            autoSetMacs=False,
            **mn_kwargs,
        )
        self.net.start()

    @property
    def backends(self) -> dict[str, subprocess.Popen]:
        """name -> server process of the running backends."""
        return {b: proc for b, (proc, _) in self.backend_procs.items()}

    def __getitem__(self, host: str):
        return self.net[host]

    def cmd(self, host: str, command: str) -> str:
        return self.net[host].cmd(command)

    def offloads_off(self) -> None:
        """Checksum/segmentation offloads would hand AF_PACKET partial checksums (and a netdev
        OVS bridge forwards them as bad ones)."""
        for host in self.net.hosts:
            for intf in host.intfNames():
                if intf != "lo":
                    host.cmd(
                        f"ethtool -K {intf} tx off rx off gso off tso off gro off >/dev/null 2>&1"
                    )

    def settle(self, target_host: str, tries: int = 6) -> None:
        """Every other host pings ``target_host`` until it answers, before the first LB starts:
        right after set-up a bridge port can stay out of the flood set for a few hundred ms,
        and the LB's first frames to a backend the switch has not heard from are flooded
        everywhere but there (seen: a quarter of the first run's flows lost). A ping from each
        host also teaches the switch every MAC."""
        target = self.net[target_host].IP()
        for host in self.net.hosts:
            if host.name == target_host:
                continue
            for _ in range(tries):
                if host.cmd(f"ping -c1 -W1 -q {target} >/dev/null 2>&1; echo $?").strip() == "0":
                    break

    # --- load balancers ----------------------------------------------------------------------
    def start_lb(
        self, host: str, config: dict, tag: str, module: str = "vnflab.scenarios.lbctl"
    ) -> RunningLB:
        return self.launch_lb(host, [sys.executable, "-m", module], config, tag)

    # --- traffic -----------------------------------------------------------------------------
    def start_driver(
        self,
        host: str,
        tag: str,
        client_id: int,
        flows: int,
        packets: int,
        rate: float,
        http_conns: int = 0,
        vip: str = VIP,
    ) -> Driver:
        """``testbed.traffic`` on ``host``: ``flows`` UDP flows of ``packets`` datagrams, sent in
        rounds (packet k of every flow, then k+1 ...) at ``rate`` packets/s. Flow ids start at
        ``client_id * 1_000_000``."""
        out = self.path(f"{tag}-{host}.json")
        argv = traffic_argv(
            vip,
            client_id,
            flows,
            packets,
            rate,
            http_conns,
            out,
            extra=("--http-timeout", "2", "--drain", "0.5"),
        )
        return Driver(self.popen(host, argv, f"{tag}-{host}"), out, host)


def setup_dsr(bed: Bed, backends: list[str], vip: str = VIP) -> None:
    """Direct server return: every backend owns the VIP on loopback but never answers ARP for
    it (nor uses it as an ARP source), so the LB (or the network) decides who gets a packet."""
    for b in backends:
        bed.cmd(b, f"ip addr add {vip}/32 dev lo")
        bed.cmd(b, "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")


def lb_config(
    backends: list[tuple[str, str, str]],
    iface: str,
    mac: str,
    ip: str,
    policy: str = "maglev",
    subnet: str | None = "10.0.0.0/24",
    lb: dict | None = None,
    io: dict | None = None,
) -> dict:
    """LB.json of the way contract; ``backends`` as (name, ip, mac)."""
    return {
        "lb": {
            "vip": VIP,
            "port": SERVICE_PORT,
            "protos": ["udp", "tcp"],
            "subnet": subnet,
            "policy": policy,
            "backends": [
                {"name": n, "ip": i, "mac": m, "port": SERVICE_PORT} for n, i, m in backends
            ],
            **(lb or {}),
        },
        "io": {"iface": iface, "mac": mac, "ip": ip, **(io or {})},
    }


def live_stats(lb: RunningLB, timeout: float = 3.0) -> dict:
    """Ask a running LB for its counters now (SIGUSR1) and read them."""
    before = os.path.getmtime(lb.stats_path) if os.path.exists(lb.stats_path) else 0
    lb.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(lb.stats_path) and os.path.getmtime(lb.stats_path) > before:
            stats = read_json(lb.stats_path)
            if stats:
                return stats
        time.sleep(0.05)
    return read_json(lb.stats_path, {}) or {}


def flow_facts(backend_records: list[dict], proto: str = "udp") -> dict[int, dict[str, dict]]:
    """flow id -> {backend: {"packets", "min_seq", "max_seq"}} for the flows of ``proto``."""
    out: dict[int, dict[str, dict]] = {}
    for rec in backend_records:
        for f in rec.get("flows", []):
            if f.get("proto") != proto:
                continue
            out.setdefault(int(f["flow_id"]), {})[rec["backend"]] = {
                "packets": f["packets"],
                "min_seq": f["min_seq"],
                "max_seq": f["max_seq"],
            }
    return out


def first_backend(where: dict[str, dict]) -> str:
    """The backend that got the flow's earliest packet."""
    return min(where, key=lambda b: where[b]["min_seq"])


def pct(n: float, d: float) -> str:
    return "-" if not d else f"{100.0 * n / d:.1f}%"
