"""Topologies of the issue-7 scenarios (``vnflab scenario NAME``); the default one is ``lb.py``.

``ecmp`` - a scale-out LB tier behind an ECMP router::

    c1 ... cK --- s1 --- r --- s2 --- lb1 ... lbL     (LB instances, DSR)
    10.1.0.0/24        (router)    +-- b1 ... bN      (backends, own the VIP on lo)
                                        10.0.0.0/24

  r routes the VIP (10.0.0.100/32) over a multipath route to the LB instances; backends answer
  clients directly through r (direct server return). Addresses: r 10.1.0.1 / 10.0.0.254,
  cI 10.1.0.(10+I), lbI 10.0.0.I, bI 10.0.0.(100+I).

``sdn`` - the default LB topology on one OVS userspace switch (``datapath=user``) that takes its
rules from an OpenFlow 1.3 controller (an os-ken app, ``vnflab/scenarios/sdn_app.py``)::

    mn --custom topologies/scenarios.py --topo ecmp,clients=2,lbs=3,backends=4 --test pingall
    mn --custom topologies/scenarios.py --topo sdn --controller remote --switch ovs,datapath=user

(``pingall`` on ``ecmp`` does not reach the VIP, which only the LBs serve.) Imports only Mininet
and the stdlib, like ``lb.py``.
"""

from __future__ import annotations

from mininet.node import OVSSwitch
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

try:
    from topologies.lb import LBTopoConfig
except ImportError:
    # Run by the system ``mn --custom``: as in topologies/lb.py (no vnflab on the path, no
    # ``__file__``), the code object knows which file this is.
    import inspect
    import sys
    from pathlib import Path

    _frame = inspect.currentframe()
    assert _frame is not None  # CPython always has frames
    sys.path.insert(0, str(Path(_frame.f_code.co_filename).resolve().parents[1]))
    from topologies.lb import LBTopoConfig

CLIENT_NET, SERVER_NET = "10.1.0", "10.0.0"
ROUTER_CLIENT_IP, ROUTER_SERVER_IP = f"{CLIENT_NET}.1", f"{SERVER_NET}.254"


def ecmp_ip(name: str) -> str:
    kind, index = name.rstrip("0123456789"), int(name.lstrip("abcdefghijklmnopqrstuvwxyz"))
    return {
        "c": f"{CLIENT_NET}.{10 + index}",
        "lb": f"{SERVER_NET}.{index}",
        "b": f"{SERVER_NET}.{100 + index}",
    }[kind]


def ecmp_mac(name: str) -> str:
    kind, index = name.rstrip("0123456789"), int(name.lstrip("abcdefghijklmnopqrstuvwxyz"))
    return f"02:00:00:00:{ {'lb': 0, 'c': 1, 'b': 2}[kind]:02x}:{index:02x}"


class EcmpTopo(Topo):
    """Clients, a Linux router, L LB instances and N backends. See the module docstring."""

    def build(self, clients: int = 2, lbs: int = 3, backends: int = 4):
        s1 = self.addSwitch("s1", cls=LinuxBridge)
        s2 = self.addSwitch("s2", cls=LinuxBridge)
        router = self.addHost("r", ip=f"{ROUTER_CLIENT_IP}/24", mac="02:00:00:00:03:01")
        self.addLink(router, s1)  # r-eth0: client side
        self.addLink(
            router, s2, params1={"ip": f"{ROUTER_SERVER_IP}/24"}, addr1="02:00:00:00:03:02"
        )  # r-eth1: server side
        for i in range(1, clients + 1):
            name = f"c{i}"
            self.addLink(
                self.addHost(
                    name,
                    ip=f"{ecmp_ip(name)}/24",
                    mac=ecmp_mac(name),
                    defaultRoute=f"via {ROUTER_CLIENT_IP}",
                ),
                s1,
            )
        for name in [f"lb{i}" for i in range(1, lbs + 1)] + [
            f"b{i}" for i in range(1, backends + 1)
        ]:
            self.addLink(
                self.addHost(
                    name,
                    ip=f"{ecmp_ip(name)}/24",
                    mac=ecmp_mac(name),
                    defaultRoute=f"via {ROUTER_SERVER_IP}",
                ),
                s2,
            )


class SdnTopo(Topo):
    """The default LB topology (``LBTopoConfig`` addressing) on one OpenFlow 1.3 OVS switch in
    userspace (the kernel datapath is unavailable on the lab machines); ``failMode=secure``: the
    switch forwards nothing the controller has not asked for. The LB is port 1."""

    def build(self, clients: int = 2, backends: int = 3):
        cfg = LBTopoConfig(clients=clients, backends=backends).validate()
        self.config = cfg
        switch = self.addSwitch(
            "s1", cls=OVSSwitch, datapath="user", failMode="secure", protocols="OpenFlow13"
        )
        for name in cfg.host_names():  # lb first: its switch port is 1
            host = self.addHost(
                name, ip=f"{cfg.host_ip(name)}/{cfg.prefixlen}", mac=cfg.host_mac(name)
            )
            self.addLink(host, switch)


topos = {"ecmp": EcmpTopo, "sdn": SdnTopo}
