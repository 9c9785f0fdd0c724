"""The default load-balancer topology: K clients, one LB host (the VNF), N backends, one VIP.

    c1 ... cK ----+                 +---- b1 (HTTP :80, UDP :5000)
                  |---- s1 ---------|---- ...
          lb -----+                 +---- bN
     (holds or answers for the VIP)

Everything sits on one L2 segment (10.0.0.0/24 by default), which is what direct server return
needs: a backend answers the client straight back, without the LB on the return path.

Addressing plan (deterministic, so the LB can be told backend MACs up front, the way a real
LB learns them from its control plane):

    lb        10.0.0.1     02:00:00:00:00:01
    VIP       10.0.0.100   (on lb's interface for the socket way; answered for by the LB
                            itself in the AF_PACKET and DPDK ways)
    c1..cK    10.0.0.11..  02:00:00:00:01:xx
    b1..bN    10.0.0.101.. 02:00:00:00:02:xx

Use it from Mininet's own command line (this file imports only Mininet and the stdlib, so the
system ``mn`` can load it)::

    mn --custom topologies/lb.py --topo lb,clients=2,backends=3 --test pingall

or from Python: ``LBTopo(LBTopoConfig(clients=2, backends=3))``. vnflab itself always runs the
topology inside its own network namespace (``testbed.sandbox``), so nothing leaks to the host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mininet.node import OVSSwitch
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

try:
    from vnf.addresses import SUBNET, VIP
except ImportError:
    # Run by the system ``mn --custom topologies/lb.py``: Mininet's Python has no vnflab on its
    # path, and execs this file without ``__file__``; the code object still knows its file.
    import inspect
    import sys
    from pathlib import Path

    _frame = inspect.currentframe()
    assert _frame is not None  # CPython always has frames
    sys.path.insert(0, str(Path(_frame.f_code.co_filename).resolve().parents[1]))
    from vnf.addresses import SUBNET, VIP

MAX_CLIENTS = 89  # .11 .. .99
MAX_BACKENDS = 150  # .101 .. .250
SWITCH_KINDS = ("lxbr", "ovs-user", "ovs-dpdk")


class TopologyError(ValueError):
    """A bad topology setting. ``str()`` is one line that names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class LBTopoConfig:
    clients: int = 2
    backends: int = 3
    subnet: str = SUBNET
    vip: str = VIP
    switch: str = "lxbr"
    bw_mbit: float | None = None  # HTB shaping on every link (tc netem delay does not work here)

    def validate(self) -> LBTopoConfig:
        for field, value, top in (
            ("clients", self.clients, MAX_CLIENTS),
            ("backends", self.backends, MAX_BACKENDS),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise TopologyError(field, f"must be a whole number from 1 to {top}, got {value!r}")
        try:
            net = ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as exc:
            raise TopologyError("subnet", f"not an IPv4 network: {exc}") from None
        if net.prefixlen > 24:
            raise TopologyError(
                "subnet", f"needs at least a /24 for the addressing plan, got /{net.prefixlen}"
            )
        try:
            vip = ipaddress.IPv4Address(self.vip)
        except ValueError:
            raise TopologyError("vip", f"not an IPv4 address: {self.vip!r}") from None
        if vip not in net:
            raise TopologyError("vip", f"{vip} is outside subnet {net}")
        taken = {self.host_ip(n) for n in self.host_names()}
        if str(vip) in taken or vip in (net.network_address, net.broadcast_address):
            raise TopologyError("vip", f"{vip} collides with a host or the subnet's own addresses")
        if self.switch not in SWITCH_KINDS:
            raise TopologyError(
                "switch", f"must be one of {', '.join(SWITCH_KINDS)}, got {self.switch!r}"
            )
        if self.bw_mbit is not None and not (
            isinstance(self.bw_mbit, (int, float)) and self.bw_mbit > 0
        ):
            raise TopologyError("bw_mbit", f"must be a positive number, got {self.bw_mbit!r}")
        return self

    # --- the addressing plan -------------------------------------------------------------
    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def client_names(self) -> list[str]:
        return [f"c{i}" for i in range(1, self.clients + 1)]

    def backend_names(self) -> list[str]:
        return [f"b{i}" for i in range(1, self.backends + 1)]

    def host_names(self) -> list[str]:
        return ["lb", *self.client_names(), *self.backend_names()]

    def host_ip(self, name: str) -> str:
        base = ipaddress.IPv4Network(self.subnet).network_address
        return str(base + _host_number(name))

    def host_mac(self, name: str) -> str:
        kind, index = _split(name)
        group = {"lb": 0, "c": 1, "b": 2}[kind]
        return f"02:00:00:00:{group:02x}:{index:02x}"


def _split(name: str) -> tuple[str, int]:
    if name == "lb":
        return "lb", 1
    kind, index = name[0], int(name[1:])
    if kind not in "cb":
        raise KeyError(name)
    return kind, index


def _host_number(name: str) -> int:
    kind, index = _split(name)
    return {"lb": 0, "c": 10, "b": 100}[kind] + index


class LBTopo(Topo):
    """K clients, one LB, N backends on one switch. See the module docstring."""

    def build(self, config: LBTopoConfig | None = None, **params):
        # ``mn --topo lb,clients=2,backends=4`` passes keyword arguments; Python passes a config.
        cfg = (config or LBTopoConfig(**params)).validate()
        self.config = cfg
        if cfg.switch == "lxbr":
            switch = self.addSwitch("s1", cls=LinuxBridge)
        elif cfg.switch == "ovs-user":
            # The OVS kernel datapath is unavailable on these machines; the userspace (netdev)
            # datapath works. Standalone fail mode makes it a learning switch without a controller.
            switch = self.addSwitch("s1", cls=OVSSwitch, datapath="user", failMode="standalone")
        else:
            # ovs-dpdk: the network's own switch class, which vnflab sets to a bridge of a private
            # OVS-DPDK (Mininet(..., switch=partial(testbed.ovsdpdk.OVSDPDKSwitch, ovs=ovs)), see
            # testbed.experiment.Testbed); the DPDK LB joins it through a vhost-user port.
            switch = self.addSwitch("s1")
        link_opts = {"bw": cfg.bw_mbit} if cfg.bw_mbit else {}
        for name in cfg.host_names():
            host = self.addHost(
                name, ip=f"{cfg.host_ip(name)}/{cfg.prefixlen}", mac=cfg.host_mac(name)
            )
            self.addLink(host, switch, **link_opts)


topos = {"lb": LBTopo}
