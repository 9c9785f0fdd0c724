"""An os-ken app (OpenFlow 1.3): an L2 learning switch plus rules that steer VIP traffic to a VNF.

Two tables, so steering and switching stay independent:

* table 0, **steering**. Absent: everything goes to table 1. Present (cookie ``STEER_COOKIE``)::

      priority 200  in_port=VNF, ip, ipv4_dst=VIP        -> goto table 1   (the VNF's output)
      priority 100  ip, ipv4_dst=VIP                     -> eth_dst=VNF MAC, output:VNF

  so every packet for the VIP passes the VNF once, whatever its destination MAC said.
* table 1, **L2 learning**: a packet-in teaches the controller where its source MAC lives and
  installs ``eth_dst=MAC -> output:port``; unknown destinations are flooded.

The scenario turns steering on and off through a control file (JSON ``{"steer": true, "vip":
..., "vnf_port": 1, "vnf_mac": ...}``), which the app polls: the path is in the environment
variable ``VNFLAB_SDN_CONTROL``. os-ken 4.2 ships no ``osken-manager``; run the app with::

    python -m vnflab.scenarios.sdn_app --port 6653
"""

from __future__ import annotations

import argparse
import json
import os

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3

STEER_TABLE, L2_TABLE = 0, 1
STEER_COOKIE = 0x5645  # "VE"
ETH_TYPE_IP = 0x0800


class SteeringSwitch(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[str, int]] = {}
        self.datapaths: dict[int, object] = {}
        self.control_path = os.environ.get("VNFLAB_SDN_CONTROL")
        self.steering: dict | None = None  # the steering now installed
        self.watcher = hub.spawn(self.watch_control)

    # --- switch connects: table-miss rules ---------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        self.datapaths[dp.id] = dp
        self.add_flow(
            dp, STEER_TABLE, 0, parser.OFPMatch(), [parser.OFPInstructionGotoTable(L2_TABLE)]
        )
        to_controller = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self.add_flow(dp, L2_TABLE, 0, parser.OFPMatch(), self.apply(dp, to_controller))
        if self.steering:
            self.install_steering(dp, self.steering)

    # --- L2 learning ---------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None:
            return
        table = self.mac_to_port.setdefault(dp.id, {})
        if not (int(eth.src.split(":")[0], 16) & 1) and table.get(eth.src) != in_port:
            table[eth.src] = in_port
            self.add_flow(
                dp,
                L2_TABLE,
                10,
                parser.OFPMatch(eth_dst=eth.src),
                self.apply(dp, [parser.OFPActionOutput(in_port)]),
            )
        out_port = table.get(eth.dst, ofp.OFPP_FLOOD)
        dp.send_msg(
            parser.OFPPacketOut(
                datapath=dp,
                buffer_id=ofp.OFP_NO_BUFFER,
                in_port=in_port,
                actions=[parser.OFPActionOutput(out_port)],
                data=msg.data,
            )
        )

    # --- steering ------------------------------------------------------------------------------
    def install_steering(self, dp, s: dict) -> None:
        parser = dp.ofproto_parser
        from_vnf = parser.OFPMatch(in_port=s["vnf_port"], eth_type=ETH_TYPE_IP, ipv4_dst=s["vip"])
        self.add_flow(
            dp,
            STEER_TABLE,
            200,
            from_vnf,
            [parser.OFPInstructionGotoTable(L2_TABLE)],
            cookie=STEER_COOKIE,
        )
        to_vnf = parser.OFPMatch(eth_type=ETH_TYPE_IP, ipv4_dst=s["vip"])
        actions = [
            parser.OFPActionSetField(eth_dst=s["vnf_mac"]),
            parser.OFPActionOutput(s["vnf_port"]),
        ]
        self.add_flow(dp, STEER_TABLE, 100, to_vnf, self.apply(dp, actions), cookie=STEER_COOKIE)

    def remove_steering(self, dp) -> None:
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(
            parser.OFPFlowMod(
                datapath=dp,
                table_id=STEER_TABLE,
                command=ofp.OFPFC_DELETE,
                cookie=STEER_COOKIE,
                cookie_mask=0xFFFFFFFFFFFFFFFF,
                out_port=ofp.OFPP_ANY,
                out_group=ofp.OFPG_ANY,
                match=parser.OFPMatch(),
            )
        )

    def watch_control(self):
        while True:
            hub.sleep(0.1)
            try:
                with open(self.control_path) as f:
                    wanted = json.load(f)
            except (TypeError, OSError, ValueError):
                continue
            wanted = wanted if wanted.get("steer") else None
            if wanted == self.steering:
                continue
            for dp in self.datapaths.values():
                self.remove_steering(dp)
                if wanted:
                    self.install_steering(dp, wanted)
            self.steering = wanted
            self.logger.info("steering %s", f"on: {wanted}" if wanted else "off")

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def apply(dp, actions):
        return [dp.ofproto_parser.OFPInstructionActions(dp.ofproto.OFPIT_APPLY_ACTIONS, actions)]

    @staticmethod
    def add_flow(dp, table: int, priority: int, match, instructions, cookie: int = 0) -> None:
        dp.send_msg(
            dp.ofproto_parser.OFPFlowMod(
                datapath=dp,
                table_id=table,
                priority=priority,
                match=match,
                instructions=instructions,
                cookie=cookie,
            )
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vnflab.scenarios.sdn_app")
    parser.add_argument("--port", type=int, default=6653, help="OpenFlow listen port")
    args = parser.parse_args(argv)
    hub.patch(thread=False)
    from os_ken import cfg

    cfg.CONF(args=["--ofp-tcp-listen-port", str(args.port)], project="os_ken")
    app_manager.AppManager.run_apps(["vnflab.scenarios.sdn_app"])


if __name__ == "__main__":
    main()
