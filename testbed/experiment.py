"""One experiment: build the LB topology, start backends and a load balancer, drive traffic, check.

This module runs *inside* a sandbox (``testbed.sandbox``): it creates Mininet hosts freely and
relies on the namespaces for cleanup. ``run_sandboxed()`` is the entry point from outside: it
re-runs this module as ``python -m testbed.experiment SPEC.json RESULT.json`` in a fresh sandbox.

The LB program is any command that follows the way contract (see ``vnf/ways/__init__.py``):
``--config LB.json --ready-file F --stats-file F``; the grader swaps in a student's program.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from testbed.process import stop_process, wait_for_file
from testbed.procfs import CpuTimes, cpu_times
from topologies.lb import LBTopoConfig
from vnf.addresses import SERVICE_PORT

if TYPE_CHECKING:  # it imports mininet: _start_ovs_dpdk imports it when used
    from testbed.ovsdpdk import PrivateOVSDPDK

WAYS = ("socket", "afpacket", "dpdk")
# One service, VIP:8080, over TCP (HTTP) and UDP (the echo the driver uses), like a service
# that listens on both protocols. Backends listen on the same port.
UDP_PORT = HTTP_PORT = SERVICE_PORT


@dataclass
class ExperimentSpec:
    way: str = "socket"
    clients: int = 2
    backends: int = 3
    udp_flows: int = 2000
    packets_per_flow: int = 3
    rate_pps: int = 4000
    http_conns: int = 200
    policy: str = "maglev"
    lb_command: list[str] | None = None  # default: python -m vnf.ways.<way>_lb
    lb_extra: dict = field(default_factory=dict)  # way-specific settings passed in LB.json
    cost_rate_pps: int = 5000  # offered load of the cost phase (0 = skip)
    cost_seconds: float = 3.0
    saturation_seconds: float = 2.0  # throughput at saturation (0 = skip)
    fuzz_frames: int = 0  # robustness phase: malformed + fuzzed frames (0 = skip)
    pcap_dir: str | None = None  # keep captures of the affinity phase here
    timeout_s: float = 240.0

    def validate(self) -> ExperimentSpec:
        from topologies.lb import TopologyError

        if self.way not in WAYS:
            raise TopologyError("way", f"must be one of {', '.join(WAYS)}, got {self.way!r}")
        for name in ("udp_flows", "packets_per_flow", "http_conns", "rate_pps", "cost_rate_pps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise TopologyError(name, f"must be a whole number >= 0, got {value!r}")
        if self.rate_pps == 0 and self.udp_flows:
            raise TopologyError("rate_pps", "must be > 0 when udp_flows > 0")
        self.topo_config().validate()
        if self.pcap_dir:  # the sandbox runs elsewhere: where the user meant, now
            self.pcap_dir = os.path.abspath(self.pcap_dir)
        return self

    def topo_config(self) -> LBTopoConfig:
        switch = "ovs-dpdk" if self.way == "dpdk" else "lxbr"
        return LBTopoConfig(clients=self.clients, backends=self.backends, switch=switch)


def log(msg: str) -> None:
    print(f"[vnflab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# helpers that run inside the sandbox
# --------------------------------------------------------------------------------------------


def read_json(path: str, default=None):
    """The JSON in ``path``, or ``default`` when it is missing or not (yet) valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def request_stats(proc: subprocess.Popen, path: str, timeout: float = 10) -> dict:
    """An LB program's counters now: SIGUSR1 makes it rewrite its stats file (the way
    contract), so the old file is removed first and the new one waited for. Raises when the
    program exits or stays silent for ``timeout`` seconds."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = read_json(path)
        if data is not None:
            return data
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    raise RuntimeError(f"the LB wrote no stats to {os.path.basename(path)}")


def traffic_argv(
    vip: str,
    client_id: int,
    udp_flows: int,
    packets_per_flow: int,
    rate: float,
    http_conns: int,
    out: str,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """``testbed.traffic`` on a client: ``udp_flows`` UDP flows of ``packets_per_flow`` datagrams
    at ``rate`` packets/s and ``http_conns`` HTTP connections to ``vip``; flow ids start at
    ``client_id * 1_000_000``; its record goes to ``out``."""
    return [
        sys.executable,
        "-m",
        "testbed.traffic",
        "--vip",
        vip,
        "--udp-port",
        str(UDP_PORT),
        "--http-port",
        str(HTTP_PORT),
        "--client-id",
        str(client_id),
        "--udp-flows",
        str(udp_flows),
        "--packets-per-flow",
        str(packets_per_flow),
        "--rate",
        str(rate),
        "--http-conns",
        str(http_conns),
        *extra,
        "--out",
        out,
    ]


class MininetBed:
    """A started Mininet network and the processes run on its hosts, with their logs and records
    in ``workdir``: backend servers, load balancers, traffic drivers. ``Testbed`` (the LB
    topology of an experiment) and the scenarios' ``Bed`` (any topology) build on it; the
    subclass sets ``self.net``."""

    net: Any = None  # a mininet.net.Mininet once started (mininet ships no types)

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.backend_procs: dict[str, tuple[subprocess.Popen, str]] = {}  # name -> (proc, ready)

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def popen(self, host: str, argv: list[str], log_name: str) -> subprocess.Popen:
        """Start ``argv`` on ``host``, output to WORKDIR/LOG_NAME.log; stopped by close()."""
        out = open(self.path(f"{log_name}.log"), "ab")
        proc = self.net[host].popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    _popen = popen

    # --- backends ------------------------------------------------------------------------------
    def start_backends(self, names: list[str], timeout: float = 30) -> None:
        """A ``topologies.servers`` backend on each host of ``names`` (records WORKDIR/NAME.json),
        started together, then waited for."""
        started = {}
        for b in names:
            for suffix in (".json", ".ready"):
                try:
                    os.unlink(self.path(b + suffix))
                except FileNotFoundError:
                    pass
            ready = self.path(f"{b}.ready")
            started[b] = (
                self.popen(
                    b,
                    [
                        sys.executable,
                        "-m",
                        "topologies.servers",
                        "--name",
                        b,
                        "--bind",
                        "0.0.0.0",
                        "--http-port",
                        str(HTTP_PORT),
                        "--udp-port",
                        str(UDP_PORT),
                        "--address",
                        self.net[b].IP(),
                        "--record",
                        self.path(f"{b}.json"),
                        "--ready-file",
                        ready,
                    ],
                    f"server-{b}",
                ),
                ready,
            )
        for b, (proc, ready) in started.items():
            wait_for_file(ready, proc, timeout, f"backend server {b}")
            self.backend_procs[b] = (proc, ready)

    def stop_backend(self, name: str) -> None:
        """The server process exits (SIGTERM: it writes its final record first)."""
        stop_process(self.backend_procs[name][0])

    def restart_backends(self) -> None:
        """Fresh servers (and empty records) on the same hosts."""
        names = list(self.backend_procs)
        for proc, _ in self.backend_procs.values():
            stop_process(proc)
        self.start_backends(names)

    def backend_records(self) -> list[dict]:
        """Every backend's record: live ones are asked to write it now (SIGUSR1)."""
        for proc, _ in self.backend_procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR1)
        time.sleep(0.4)
        records = (read_json(self.path(f"{b}.json")) for b in self.backend_procs)
        return [r for r in records if r is not None]

    # --- load balancers and traffic ------------------------------------------------------------
    def launch_lb(
        self, host: str, argv: list[str], config: dict, tag: str, timeout: float = 30
    ) -> RunningLB:
        """Start an LB program of the way contract on ``host``: ``argv`` + ``--config
        WORKDIR/lb-TAG.json --ready-file .. --stats-file ..``, and wait until it is ready."""
        path = self.path(f"lb-{tag}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        ready, stats = self.path(f"lb-{tag}.ready"), self.path(f"lb-{tag}-stats.json")
        for p in (ready, stats):
            if os.path.exists(p):
                os.unlink(p)
        proc = self.popen(
            host,
            [*argv, "--config", path, "--ready-file", ready, "--stats-file", stats],
            f"lb-{tag}",
        )
        wait_for_file(ready, proc, timeout, f"load balancer {tag}")
        return RunningLB(proc, stats, self.path(f"lb-{tag}.log"))

    def wait_drivers(self, drivers: list, timeout: float, strict: bool = True) -> list[dict]:
        """Wait for traffic drivers (objects with ``proc``, ``out``, ``host``) and read their
        records; a driver without a record raises (``strict``) or is logged and left out."""
        deadline = time.monotonic() + timeout
        records = []
        for d in drivers:
            try:
                d.proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
                log(f"traffic driver on {d.host} timed out")
            rec = read_json(d.out)
            if rec is not None:
                records.append(rec)
            elif strict:
                raise RuntimeError(
                    f"traffic driver on {d.host} wrote no record (exit {d.proc.returncode})"
                )
            else:
                log(
                    f"traffic driver on {d.host} wrote no record (exit {d.proc.returncode}); "
                    f"see {os.path.basename(d.out)[:-5]}.log"
                )
        return records

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, timeout=2)
        self.net.stop()


@dataclass
class Driver:
    """A traffic driver started on ``host``; its record goes to ``out``."""

    proc: subprocess.Popen
    out: str
    host: str


class Testbed(MininetBed):
    """A started topology with backend servers; the LB comes and goes per phase."""

    def __init__(self, spec: ExperimentSpec, workdir: str, start_servers: bool = True):
        from mininet.link import Link, TCLink
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge

        from topologies.lb import LBTopo

        setLogLevel("error")
        Mininet.inited = True  # skip fixLimits(): its sysctls fail in a netns, harmlessly
        MininetBed.__init__(self, workdir)
        self.spec = spec
        self.topo_cfg = spec.topo_config().validate()
        cfg = self.topo_cfg
        self.ovs: PrivateOVSDPDK | None = None  # the DPDK way's switch
        switch = LinuxBridge
        if cfg.switch == "ovs-dpdk":
            switch = self._start_ovs_dpdk()
        try:
            self.net = Mininet(
                topo=LBTopo(cfg),
                controller=None,
                switch=switch,
                link=TCLink if cfg.bw_mbit else Link,
                autoSetMacs=False,
            )
            self.net.start()
            if self.ovs is not None:
                self._plug_lb_into_ovs()
        except BaseException:
            if self.ovs is not None:
                self.ovs.stop()
            raise
        if spec.way == "socket":
            self.vip_mode = "local"
        else:
            self.vip_mode = "nat" if spec.lb_extra.get("mode") == "nat" else "dsr"
        self._configure_vip()
        self.wait_network_settled()
        if start_servers:  # vnflab bench sinks traffic on the backends instead (no servers)
            self.start_backends(cfg.backend_names())

    def raw_sender(self, client: str, module: str, *action: str) -> list[str]:
        """``python -m MODULE ACTION`` for a raw-frame sender on ``client`` (``testbed.corpus``,
        ``testbed.probe robust|mixed``), with what they all need: the client's interface and
        addresses, the LB's MAC, the service."""
        cfg = self.topo_cfg
        return [
            sys.executable,
            "-m",
            module,
            *action,
            "--iface",
            f"{client}-eth0",
            "--dst-mac",
            cfg.host_mac("lb"),
            "--src-mac",
            cfg.host_mac(client),
            "--src-ip",
            cfg.host_ip(client),
            "--vip",
            cfg.vip,
            "--port",
            str(SERVICE_PORT),
        ]

    def wait_network_settled(self, tries: int = 6) -> None:
        """Every host pings the first client until it answers, before any LB starts.

        Right after set-up (links created, offloads changed) a bridge port can stay out of the
        flood set for a few hundred ms: frames the LB sends to a backend nobody has heard from
        yet are flooded everywhere *but* there (seen: a backend missing the first 0.4 s of its
        flows). A ping from each host also teaches the switch every MAC, as a real network would
        have learnt them long before a test starts."""
        cfg = self.topo_cfg
        first = cfg.client_names()[0]
        others = [n for n in cfg.host_names() if n != first and not (n == "lb" and self.ovs)]
        backends = cfg.backend_names()
        for name in others:
            host = self.net[name]
            target = cfg.host_ip(first)
            if self.vip_mode == "nat" and name in backends:
                # NAT routes a backend's packets to the clients through the LB, which is not up
                # yet (and the LB host does not forward): a backend pings a neighbour backend.
                neighbours = [b for b in backends if b != name] or ["lb"]
                target = cfg.host_ip(neighbours[0])
            for _ in range(tries):
                if host.cmd(f"ping -c1 -W1 -q {target} >/dev/null 2>&1; echo $?").strip() == "0":
                    break
            else:
                log(f"warning: {name} could not reach {target} after set-up")
        self.net[first].cmd(
            f"ping -c1 -W1 -q {cfg.host_ip(cfg.backend_names()[0])} >/dev/null 2>&1"
        )

    # --- the DPDK way: a private OVS-DPDK is the switch ----------------------------------------
    OVS_SOCKET_MEM_MB = 128
    LB_DPDK_MEM_MB = 128

    def _start_ovs_dpdk(self):
        """Start a private OVS-DPDK (own db and sockets in the sandbox's private run dir; PMD on
        CPU 0 with pmd-maxsleep, the LB gets CPU 1) and return the Mininet switch class."""
        from functools import partial

        from testbed import ovsdpdk
        from vnf.dpdk import hugepages

        # OVS's memory + the LB's, twice over (vnf.dpdk.init keeps headroom against races)
        hugepages.ensure_free(self.OVS_SOCKET_MEM_MB + 2 * self.LB_DPDK_MEM_MB + 64)
        self.ovs = ovsdpdk.PrivateOVSDPDK(
            f"/var/run/openvswitch/vnflab{os.getpid()}",
            socket_mem=self.OVS_SOCKET_MEM_MB,
            pmd_cpu_mask="0x1",
            pmd_maxsleep=1000,
        )
        self.ovs.start()
        return partial(ovsdpdk.OVSDPDKSwitch, ovs=self.ovs)

    lb_generation = 0  # one vhost-user port per LB process (see _fresh_vhost_port)

    @property
    def vhost_port(self) -> str:
        return f"vhu-lb{self.lb_generation}"

    @property
    def vhost_socket(self) -> str:
        assert self.ovs is not None, "the DPDK way only"
        return os.path.join(self.ovs.workdir, f"lb{self.lb_generation}.sock")

    def _fresh_vhost_port(self) -> None:
        """Each LB process gets a new vhost-user port and socket. Reusing one across LB restarts
        left OVS's PMD no longer draining the new virtio-user's TX queue (the LB's tx_burst
        stalled after the first 256 descriptors), so a restart swaps the port instead."""
        bridge = self.net["s1"]
        if self.lb_generation:
            assert self.ovs is not None, "the DPDK way only"
            self.ovs.del_port(bridge.name, self.vhost_port)
        self.lb_generation += 1
        bridge.add_vhost_client_port(self.vhost_port, self.vhost_socket)

    def _plug_lb_into_ovs(self) -> None:
        """The LB's MAC lives on its virtio-user port now: take the LB host's veth off the
        bridge (and down), so the bridge learns 02:00:00:00:00:01 on the vhost-user port, and
        add that port (OVS is the vhost-user client; the LB listens with server=1)."""
        lb = self.net["lb"]
        link = lb.intf().link
        sw_intf = link.intf2 if link.intf1.node is lb else link.intf1
        assert self.ovs is not None, "the DPDK way only"
        self.ovs.del_port(sw_intf.node.name, sw_intf.name)
        lb.cmd("ip link set lb-eth0 down")

    def wait_vhost_up(self, timeout: float = 20) -> None:
        assert self.ovs is not None, "the DPDK way only"
        self.ovs.vsctl(
            f"--timeout={int(timeout)}",
            "wait-until",
            "Interface",
            self.vhost_port,
            "link_state=up",
            timeout=timeout + 5,
        )

    # --- addressing of the VIP -------------------------------------------------------------
    def _configure_vip(self) -> None:
        cfg, vip = self.topo_cfg, self.topo_cfg.vip
        lb = self.net["lb"]
        if self.vip_mode == "local":
            # Socket way: the VIP is simply an address of the LB host; its kernel terminates
            # the clients' connections and the LB opens new ones to the backends (a proxy).
            lb.cmd(f"ip addr add {vip}/{cfg.prefixlen} dev lb-eth0")
        elif self.vip_mode == "nat":
            # NAT: backends know nothing of the VIP; the LB rewrites VIP:port to theirs. Their
            # replies must come back through the LB to be rewritten back, so each backend routes
            # the clients via the LB (host routes beat the on-link /24 route).
            for b in cfg.backend_names():
                for c in cfg.client_names():
                    self.net[b].cmd(f"ip route add {cfg.host_ip(c)}/32 via {cfg.host_ip('lb')}")
            for c in cfg.client_names():
                self.net[c].cmd(f"ip neigh replace {vip} lladdr {cfg.host_mac('lb')} dev {c}-eth0")
            lb.cmd("sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0")
        else:
            # Direct server return: every backend also owns the VIP (on loopback, so it accepts
            # packets for it) but must neither answer ARP for it nor use it as an ARP source,
            # or clients would bypass the LB. The clients reach the VIP at the LB's MAC through
            # a static neighbour entry (the LB does not need to run ARP).
            for b in cfg.backend_names():
                h = self.net[b]
                h.cmd(f"ip addr add {vip}/32 dev lo")
                h.cmd("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")
            for c in cfg.client_names():
                self.net[c].cmd(f"ip neigh replace {vip} lladdr {cfg.host_mac('lb')} dev {c}-eth0")
            # The LB host must not answer for the VIP itself nor route packets it sees.
            lb.cmd("sysctl -qw net.ipv4.ip_forward=0")
        for name in cfg.host_names():  # offloads would hand AF_PACKET/DPDK partial checksums
            self.net[name].cmd(
                f"ethtool -K {name}-eth0 tx off rx off gso off tso off gro off >/dev/null 2>&1"
            )

    def set_vip_mode(self, mode: str) -> None:
        """Switch a raw-frame bed between direct server return and NAT, between two LB runs
        (the grader runs a NAT-mode LB in a bed set up for DSR). NAT only adds the backends'
        routes to the clients via the LB; the VIP left on their loopback is then unused."""
        if mode == self.vip_mode:
            return
        if {mode, self.vip_mode} != {"dsr", "nat"}:
            raise ValueError(f"cannot switch the VIP from {self.vip_mode!r} to {mode!r}")
        cfg = self.topo_cfg
        if mode == "nat":
            self.vip_mode = "nat"
            self._configure_vip()
            return
        for b in cfg.backend_names():
            for c in cfg.client_names():
                self.net[b].cmd(f"ip route del {cfg.host_ip(c)}/32 via {cfg.host_ip('lb')}")
        self.vip_mode = "dsr"

    # --- the load balancer -------------------------------------------------------------------
    def lb_config(self) -> dict:
        cfg = self.topo_cfg
        return {
            "lb": {
                "vip": cfg.vip,
                "port": SERVICE_PORT,
                "protos": ["udp", "tcp"],
                "subnet": cfg.subnet,
                "policy": self.spec.policy,
                "backends": [
                    {"name": b, "ip": cfg.host_ip(b), "mac": cfg.host_mac(b), "port": SERVICE_PORT}
                    for b in cfg.backend_names()
                ],
            },
            "io": {
                "iface": "lb-eth0",
                "mac": cfg.host_mac("lb"),
                "ip": cfg.host_ip("lb"),
                **(
                    {"vhost_socket": self.vhost_socket, "cpus": [1], "mem_mb": self.LB_DPDK_MEM_MB}
                    if self.ovs is not None
                    else {}
                ),
                **self.spec.lb_extra,
            },
        }

    def start_lb(
        self, tag: str, backends: list[str] | None = None, extra_argv: tuple[str, ...] = ()
    ) -> RunningLB:
        """The spec's LB program with ``lb_config()`` (only ``backends``, if given) and
        ``extra_argv`` (e.g. ``--control-file F``)."""
        if self.ovs is not None:
            self._fresh_vhost_port()  # before lb_config(): it names the new port
        config = self.lb_config()
        if backends is not None:
            config["lb"]["backends"] = [
                b for b in config["lb"]["backends"] if b["name"] in backends
            ]
        argv = list(self.spec.lb_command or [sys.executable, "-m", f"vnf.ways.{self.spec.way}_lb"])
        lb = self.launch_lb(
            "lb", argv + list(extra_argv), config, tag, 45 if self.ovs is not None else 30
        )
        if self.ovs is not None:
            self.wait_vhost_up()
        return lb

    # --- traffic -------------------------------------------------------------------------------
    def drive(
        self,
        tag: str,
        udp_flows: int,
        packets_per_flow: int,
        rate_pps: int,
        http_conns: int,
        clients: list[str] | None = None,
        timeout: float = 120,
    ) -> list[dict]:
        clients = clients or self.topo_cfg.client_names()
        k = len(clients)
        drivers = []
        for i, c in enumerate(clients):
            flows = udp_flows // k + (1 if i < udp_flows % k else 0)
            conns = http_conns // k + (1 if i < http_conns % k else 0)
            out = self.path(f"{tag}-{c}.json")
            argv = traffic_argv(
                self.topo_cfg.vip,
                int(c[1:]),
                flows,
                packets_per_flow,
                max(1, rate_pps // k),
                conns,
                out,
            )
            drivers.append(Driver(self.popen(c, argv, f"{tag}-{c}"), out, c))
        return self.wait_drivers(drivers, timeout, strict=False)

    def close(self) -> None:
        try:
            MininetBed.close(self)
        finally:
            if self.ovs is not None:
                self.ovs.stop()


@dataclass
class RunningLB:
    proc: subprocess.Popen
    stats_path: str
    log_path: str

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> CpuTimes:
        return cpu_times(self.proc.pid)

    def stats_now(self, timeout: float = 10) -> dict:
        """Its counters at this moment (``request_stats``), e.g. busy cycles at a window's ends."""
        return request_stats(self.proc, self.stats_path, timeout)

    def stop(self) -> dict:
        code = stop_process(self.proc)
        stats = read_json(self.stats_path, {}) or {}
        stats["exit_code"] = code
        return stats

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------


def measure_cost(bed: Testbed, spec: ExperimentSpec) -> dict:
    """CPU time of the LB process per forwarded packet at a stated offered load.

    Method: a fresh LB; read its CPU time (``cpu_times``: exact total, user/sys split), drive
    ``cost_rate_pps`` of UDP request/reply traffic for ``cost_seconds``, read it again, divide
    by the packets the LB forwarded in that window as counted at the endpoints (requests the
    backends received, plus — for the socket way, which is a proxy — replies relayed back).
    Blind spot: the kernel's receive work (softirq) for packets the LB receives over veth runs
    on the *sender's* core and is not charged to the LB; `vnflab bench` steers it with RPS.
    """
    if not spec.cost_rate_pps:
        return {}
    from testbed.checker import check

    bed.restart_backends()
    lb = bed.start_lb("cost")
    flows = 64
    per_flow = max(1, int(spec.cost_rate_pps * spec.cost_seconds) // flows)
    c0 = lb.cpu()
    t0 = time.monotonic()
    clients = bed.drive(
        "cost",
        flows,
        per_flow,
        spec.cost_rate_pps,
        0,
        clients=[bed.topo_cfg.client_names()[0]],
        timeout=spec.cost_seconds * 4 + 30,
    )
    wall = time.monotonic() - t0
    user, system, cpu = lb.cpu().since(c0)
    stats = lb.stop()
    report = check(bed.backend_records(), clients)
    delivered = report.udp_arrived
    replies = report.udp_replies_received if bed.vip_mode == "local" else 0
    forwarded = delivered + replies
    busy = (stats.get("busy") or {}).get("ns_per_packet")
    out: dict[str, Any] = {
        "offered_pps": spec.cost_rate_pps,
        "seconds": round(wall, 3),
        "forwarded": forwarded,
        "user_s": round(user, 4),
        "sys_s": round(system, 4),
        "ns_per_packet": round(cpu / forwarded * 1e9, 1) if forwarded else None,
        "user_ns_per_packet": round(user / forwarded * 1e9, 1) if forwarded else None,
        "sys_ns_per_packet": round(system / forwarded * 1e9, 1) if forwarded else None,
        "lb_stats": stats,
    }
    if busy:
        # A poll-mode driver spins at 100 % of its core whatever the load, so its CPU time per
        # packet only says how idle the run was. Its per-packet cost is the busy TSC cycles
        # (non-empty polls through tx) per packet, as DPDK's telemetry counts them.
        out["cpu_ns_per_packet"] = out["ns_per_packet"]
        out["ns_per_packet"] = round(busy, 1)
        out["user_ns_per_packet"] = out["sys_ns_per_packet"] = None
        out["method"] = "busy TSC cycles of non-empty polls per packet (the LB polls at 100 % CPU)"
    return out


def forget_poisoned_neighbours(bed) -> None:
    """After a malformed-frame corpus, flush the hosts' learnt ARP entries.

    Fuzzed ARP frames carry bit-flipped sender MACs for real addresses; a kernel that accepts
    them (the socket way's LB host owns the VIP, so it does) then sends replies to a MAC that
    does not exist. That is the kernel's ARP cache being poisoned, not the LB program failing,
    so the normal-flow check after the corpus starts from clean neighbour tables (permanent
    entries, such as the clients' VIP entry in the DSR ways, stay)."""
    for name in bed.topo_cfg.host_names():
        bed.net[name].cmd("ip neigh flush nud reachable nud stale nud delay nud probe nud failed")


def measure_robustness(bed: Testbed, spec: ExperimentSpec) -> dict:
    """Throw the malformed corpus and ``fuzz_frames`` fuzzed frames at the LB's MAC from a client,
    then check the LB is alive and still forwards a normal flow mix with affinity."""
    from testbed.checker import check

    cfg = bed.topo_cfg
    bed.restart_backends()
    lb = bed.start_lb("fuzz")
    client = cfg.client_names()[0]
    out = os.path.join(bed.workdir, "fuzz-send.json")
    sender = bed.popen(
        client,
        [*bed.raw_sender(client, "testbed.corpus"), "--count", str(spec.fuzz_frames), "--out", out],
        "fuzz-send",
    )
    try:
        sender.wait(120)
    except subprocess.TimeoutExpired:
        sender.kill()
    time.sleep(0.5)  # let the LB drain its ring
    forget_poisoned_neighbours(bed)
    alive_after_fuzz = lb.alive()
    bed.restart_backends()  # the normal-flow check starts from clean records
    clients = bed.drive("after-fuzz", 100, 3, 1000, 10, timeout=60) if alive_after_fuzz else []
    alive_at_end = lb.alive()
    stats = lb.stop()
    report = check(bed.backend_records(), clients) if clients else None
    forwards_normal_flow = bool(
        report
        and report.split_flows == 0
        and report.udp_lost_forward == 0
        and report.http_failures == 0
        and report.flows_seen == 110
    )
    return {
        "sent": read_json(out, {}),
        "lb_alive_after_fuzz": alive_after_fuzz,
        "lb_alive_at_end": alive_at_end,
        "forwards_normal_flow": forwards_normal_flow,
        "after": report.to_json() if report else None,
        "lb_dropped": (stats.get("lb") or {}).get("dropped"),
        "lb_log_tail": None if alive_at_end else lb.log_tail(),
    }


def measure_saturation(bed: Testbed, spec: ExperimentSpec) -> dict:
    """Forwarded packets per second when every client sends as fast as it can."""
    if not spec.saturation_seconds:
        return {}
    from testbed.checker import check

    bed.restart_backends()
    lb = bed.start_lb("sat")
    clients = bed.topo_cfg.client_names()
    flows = 32 * len(clients)
    # The driver paces; a rate far above what either side can do makes it send flat out.
    per_flow = 400
    t0 = time.monotonic()
    recs = bed.drive(
        "sat", flows, per_flow, 1_000_000, 0, timeout=spec.saturation_seconds * 10 + 30
    )
    wall = time.monotonic() - t0
    lb.stop()
    report = check(bed.backend_records(), recs)
    forwarded = report.udp_arrived + (
        report.udp_replies_received if bed.vip_mode in ("local", "nat") else 0
    )
    return {
        "seconds": round(wall, 3),
        "forwarded": forwarded,
        "mpps": round(forwarded / wall / 1e6, 4) if wall > 0 else None,
    }


METHOD = (
    "LB process CPU time (exact on-CPU time of its threads from schedstat, split into "
    "user and sys as /proc/PID/stat's ticks sampled it) divided by packets it forwarded "
    "(counted at the endpoints), at a stated offered load; the kernel's receive softirq for "
    "veth traffic runs on the sender's core and is NOT charged to the LB, so kernel-path "
    "costs are underestimated here (vnflab bench steers it onto the LB core with RPS)."
)


def run_experiment(spec: ExperimentSpec, workdir: str) -> dict:
    from testbed.checker import check

    spec.validate()
    t_start = time.monotonic()
    log(f"way={spec.way}: building topology ({spec.clients} clients, LB, {spec.backends} backends)")
    bed = Testbed(spec, workdir)
    result: dict = {"way": spec.way, "spec": asdict(spec)}
    try:
        captures = None
        if spec.pcap_dir:
            from testbed.capture import Captures, lb_and_backends

            captures = Captures(bed.net, spec.pcap_dir, log_dir=workdir)
            captures.start(lb_and_backends(bed), prefix=f"{spec.way}-")
        lb = bed.start_lb("affinity")
        log(
            f"LB up; driving {spec.udp_flows} UDP flows x {spec.packets_per_flow} packets at "
            f"{spec.rate_pps} pps and {spec.http_conns} HTTP connections"
        )
        est = spec.udp_flows * spec.packets_per_flow / max(1, spec.rate_pps)
        clients = bed.drive(
            "affinity",
            spec.udp_flows,
            spec.packets_per_flow,
            spec.rate_pps,
            spec.http_conns,
            timeout=est * 3 + 60,
        )
        lb_alive = lb.alive()
        lb_stats = lb.stop()
        if captures:
            result["pcaps"] = [c.path for c in captures.stop()]
            log(f"captures of the affinity phase: {', '.join(result['pcaps'])}")
        report = check(bed.backend_records(), clients)
        result.update(report.to_json())
        result["report_table"] = report.table()
        result["lb_alive_after_traffic"] = lb_alive
        result["lb_stats"] = lb_stats
        if not lb_alive:
            result["lb_log_tail"] = lb.log_tail()
        log(f"affinity: {report.flows_seen} flows seen, {report.split_flows} split")
        if spec.fuzz_frames:
            log(f"robustness: {spec.fuzz_frames} fuzzed frames + the malformed corpus at the LB")
            result["robustness"] = measure_robustness(bed, spec)
        if spec.cost_rate_pps:
            log(f"cost: {spec.cost_rate_pps} pps offered for {spec.cost_seconds:.0f} s")
            result["cost"] = measure_cost(bed, spec)
            result["ns_per_packet"] = result["cost"].get("ns_per_packet")
        if spec.saturation_seconds:
            log("throughput at saturation")
            result["saturation"] = measure_saturation(bed, spec)
            result["mpps"] = result["saturation"].get("mpps")
        result["method"] = METHOD
    finally:
        bed.close()
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return result


def run_sandboxed(spec: ExperimentSpec, keep_workdir: str | None = None) -> dict:
    """Run one experiment in a fresh sandbox and return its result dict."""
    from testbed import sandbox

    spec.validate()
    result = sandbox.run_module_in_sandbox(
        "testbed.experiment",
        asdict(spec),
        spec.timeout_s,
        keep_workdir,
        what="experiment",
        keep=bool(keep_workdir),
        prefix="vnflab-run-",
    )
    result.setdefault("way", spec.way)
    return result


def main(argv: list[str]) -> int:
    from testbed import sandbox

    return sandbox.serve_module(
        argv, lambda spec, workdir: run_experiment(ExperimentSpec(**spec), workdir)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
