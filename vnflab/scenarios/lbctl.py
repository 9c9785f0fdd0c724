"""The AF_PACKET LB (way 2) plus a control plane: health checks and a control file.

Production LBs separate the data plane (the per-packet loop) from a control plane that decides
which backends may get traffic. This program keeps way 2's hot loop untouched
(``vnf.ways.afpacket_lb.AfPacketLB``) and adds one control thread that, every ``interval``:

* **probes** every backend's service port with a TCP connect (what an L4 health check does).
  ``fails`` failed probes in a row mark the backend *unhealthy* in the pool (no new flows, and
  its existing flows are moved by ``LoadBalancer.backend_for``); ``rises`` good ones bring it
  back;
* **reads a control file** (JSON, optional; the document of ``vnf.control``):
  ``{"drain": ["b3"], "fail": [...], "add": [...], "remove": ["b4"]}``. A drained backend keeps
  its flows but gets no new ones; a removed one is gone from the pool.

How a change reaches the data plane without a lock: the thread builds a *new* ``BackendPool``
with the new state (``vnf.control.wanted_pool``, which every LB program's SIGHUP uses too) and
swaps ``lb.pool`` in one assignment (``LBProgram.apply_control``). The hot loop reads
``lb.pool`` once per packet, so it sees either the old pool or the new one, never a
half-rebuilt table.

io options (LB.json ``io``, next to way 2's): ``health``: ``{"interval": 0.2, "timeout": 0.2,
"fails": 2, "rises": 2}`` or absent (no probing); ``control_file``: path; ``state_file``: path
where every change is written (``{"t": ..., "backends": {name: "up"|"unhealthy"|"draining"},
"events": [...]}``). Run with ``workers: 1`` (a forked worker would not have the thread).
"""

from __future__ import annotations

import os
import socket
import threading
import time

from vnf.control import ControlError, PoolChange, read_control_file
from vnf.jsonfile import write_json_atomic
from vnf.ways.afpacket_lb import AfPacketLB
from vnf.ways.common import fail


def probe_tcp(ip: str, port: int, timeout: float) -> bool:
    """One L4 health probe: can we complete a TCP handshake with ip:port?"""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


class ControlledAfPacketLB(AfPacketLB):
    way = "afpacket"

    def setup(self) -> None:
        super().setup()
        if self.workers != 1:
            fail("workers", "the control thread needs workers=1")
        health = self.io.get("health")
        self.health = (
            dict({"interval": 0.2, "timeout": 0.2, "fails": 2, "rises": 2}, **health)
            if health
            else None
        )
        self.control_file = self.io.get("control_file")
        self.state_file = self.io.get("state_file")
        self.fail_streak: dict = {}
        self.ok_streak: dict = {}
        self.unhealthy: set = set()
        self.change = PoolChange()  # what the control file asks for
        self.events: list = []
        self.probes = 0
        self.write_state()
        self.control = threading.Thread(target=self.control_loop, name="control", daemon=True)
        self.control.start()

    # --- control plane -------------------------------------------------------------------------
    def control_loop(self) -> None:
        interval = self.health["interval"] if self.health else 0.2
        while not self.stopping:
            changed = self.read_control_file()
            if self.health:
                changed |= self.probe_all()
            if changed:
                self.swap_pool()
            time.sleep(interval)

    def reload_control_file(self) -> None:
        """SIGHUP: the control thread reads the file anyway, every interval, and applies it
        together with its health verdicts: nothing to do from the signal handler."""

    def read_control_file(self) -> bool:
        if not self.control_file or not os.path.exists(self.control_file):
            return False
        try:
            change = read_control_file(self.control_file, self.config)
        except ControlError:
            return False
        old = self.change
        if change == old:
            return False
        for name in sorted(change.drain ^ old.drain):
            self.event(name, "draining" if name in change.drain else "undrained")
        for name in sorted(change.fail ^ old.fail):
            self.event(name, "failed" if name in change.fail else "unfailed")
        for name in sorted(change.remove ^ old.remove):
            self.event(name, "removed" if name in change.remove else "added")
        for name in sorted({b.name for b in change.add} ^ {b.name for b in old.add}):
            self.event(name, "added" if name in {b.name for b in change.add} else "removed")
        self.change = change
        return True

    def probe_all(self) -> bool:
        assert self.health is not None, "only with health checks on"
        changed = False
        for b in list(self.lb.pool.backends):
            self.probes += 1
            if probe_tcp(b.ip, b.port, self.health["timeout"]):
                self.ok_streak[b.name] = self.ok_streak.get(b.name, 0) + 1
                self.fail_streak[b.name] = 0
                if b.name in self.unhealthy and self.ok_streak[b.name] >= self.health["rises"]:
                    self.unhealthy.discard(b.name)
                    self.event(b.name, "healthy")
                    changed = True
            else:
                self.fail_streak[b.name] = self.fail_streak.get(b.name, 0) + 1
                self.ok_streak[b.name] = 0
                if (
                    b.name not in self.unhealthy
                    and self.fail_streak[b.name] >= self.health["fails"]
                ):
                    self.unhealthy.add(b.name)
                    self.event(b.name, "unhealthy")
                    changed = True
        return changed

    def event(self, name: str, what: str) -> None:
        self.events.append({"t": time.time(), "backend": name, "event": what})

    def swap_pool(self) -> None:
        """Build the pool the control plane wants, then publish it with one assignment."""
        self.apply_control(self.change, unhealthy=self.unhealthy)
        self.write_state()

    def write_state(self) -> None:
        if not self.state_file:
            return
        pool = self.lb.pool
        names = [b.name for b in list(self.config.backends) + list(self.change.add)]
        state = {
            "t": time.time(),
            "events": self.events,
            "backends": {
                name: (
                    "removed"
                    if name in self.change.remove
                    else "unhealthy"
                    if name in pool.unhealthy
                    else "draining"
                    if name in pool.drained
                    else "up"
                )
                for name in names
            },
        }
        write_json_atomic(self.state_file, state)

    def extra_stats(self) -> dict:
        return {**super().extra_stats(), "health_probes": self.probes, "events": self.events}


if __name__ == "__main__":
    ControlledAfPacketLB.main()
