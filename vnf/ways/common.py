"""What every way's LB program shares: its command line, config, signals and stats file.

The contract a way (or a student's submission) follows, so the demo, the benchmarks and the
grader can run any of them the same way::

    python -m vnf.ways.<way>_lb --config LB.json --ready-file READY --stats-file STATS.json

* ``LB.json``: ``{"lb": {...}, "io": {...}}``. ``lb`` is the NF's config, the fields of
  ``vnf.lb.LBConfig`` (vip, port, protos, backends [{name, ip, mac, port}], policy, ...): one
  service VIP:port for both TCP (HTTP) and UDP. ``io`` is the way's own: iface, mac, ip of the LB
  host, and way-specific knobs (batch size, workers, vdev ...).
* the program creates ``READY`` once it can forward, writes ``STATS.json`` on SIGUSR1 and on
  exit, and exits cleanly on SIGTERM/SIGINT.
* a bad config prints one line naming the field (``udp_port: 10.0.0.100:5000 is already in
  use``) and exits with code 2.
* ``--flows-sample N`` (optional, default 16): the stats file also holds ``flows_sample``, the
  N most recently used entries of the flow table(s): ``{"flow": "udp 10.0.0.1:40000 ->
  10.0.0.100:8080", "backend": "b2", "idle_s": 0.4}``, or ``"hash": "0x1a2b3c4d"`` instead of
  ``"flow"`` where the state is the batch cache (``vnf.batch``: it keeps only the flow hash).
  Gathered when the stats are written (SIGUSR1, exit), never in the hot loop.
* ``--control-file F`` (optional): the pool the control plane wants (``vnf.control``: drain,
  fail, add, remove). F is read at start-up if it exists and again on every **SIGHUP**; a bad
  document prints one line (``control: ...``) and leaves the pool as it was.

Why a signal and not a thread watching F: the hot loop stays as it is. Python runs a signal
handler in the main thread between two bytecodes of whatever the loop is doing; the handler
builds the new pool aside, lets the way extend its per-backend tables (``prepare_for_pool``:
a MAC for a backend that joins), and only then publishes the pool with one assignment. So a
packet never gets a backend number its way's tables do not know yet, and the loop needs no
lock and no check per batch. Ways with worker processes pass the signal on (``children``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from vnf.backends import BackendPool
from vnf.control import ControlError, PoolChange, read_control_file, wanted_pool
from vnf.jsonfile import write_json_atomic
from vnf.lb import ConfigError, LBConfig, LoadBalancer

FLOWS_SAMPLE = 16  # flows listed in the stats file by default (--flows-sample)


def fail(field: str, message: str) -> NoReturn:
    print(f"{field}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def load_config(path: str) -> tuple[LBConfig, dict]:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        fail("config", f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        fail("config", f"{path} is not valid JSON: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("lb"), dict):
        fail("config", f'{path} must hold {{"lb": {{...}}, "io": {{...}}}}')
    io = data.get("io") or {}
    try:
        return LBConfig.from_dict(data["lb"]).validate(), io
    except ConfigError as exc:
        fail(exc.field, exc.message)
    except TypeError as exc:  # an unknown or missing key in "lb"
        fail("lb", str(exc).replace("LBConfig.__init__() ", ""))


class LBProgram:
    """Base class of a way's LB program: subclasses write ``setup()``, ``run()``, ``close()``."""

    way = "?"
    children: Sequence[int] = ()  # pids of worker processes this one forked (they get SIGHUP too)
    # The NF itself, made here only: a variant (a scenario's LB, a test's broken one) swaps it
    balancer_class: type[LoadBalancer] = LoadBalancer

    def __init__(self, config: LBConfig, io: dict):
        self.config = config
        self.io = io
        self.lb = self.balancer_class(config)
        self.stopping = False
        self.stats_file: str | None = None
        self.started = time.monotonic()
        self.control_file: str | None = None
        self.pool_change = PoolChange()  # what the control file asked for last
        self.control_counts: dict[str, Any] = {"applied": 0, "errors": 0, "last_error": None}
        self.control_live = False  # tables built: changes apply at once
        self.control_busy = self.control_again = False
        self.flows_sample_size = FLOWS_SAMPLE

    # subclasses ------------------------------------------------------------------------------
    def setup(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def extra_stats(self) -> dict:
        return {}

    def balancers(self) -> list:
        """Every LoadBalancer this process decides with (one per polling thread in some ways):
        a pool change reaches all of them."""
        return [self.lb]

    def prepare_for_pool(self, pool: BackendPool) -> None:
        """Called with a new pool *before* it is published: a way whose data plane indexes
        per-backend tables by backend number (``pool.by_number()``: MACs for the rewrite)
        extends them here, so a backend that joins is known before any packet is sent to it."""

    # control plane -----------------------------------------------------------------------------
    def apply_control(self, change: PoolChange, unhealthy=()) -> None:
        """Build the wanted pool aside for each balancer, let the way prepare its tables, then
        publish: one assignment per balancer (see the module docstring)."""
        pools = [wanted_pool(lb.pool, self.config, change, unhealthy) for lb in self.balancers()]
        self.prepare_for_pool(pools[0])  # same numbering in every balancer's pool
        for lb, pool in zip(self.balancers(), pools):
            lb.pool = pool
        self.pool_change = change
        self.control_counts["applied"] += 1

    def reload_control_file(self) -> None:
        """Read the control file and apply it; a bad one is reported and changes nothing."""
        if not self.control_file:
            return
        try:
            change = read_control_file(self.control_file, self.config)
        except ControlError as exc:
            self.control_counts["errors"] += 1
            self.control_counts["last_error"] = str(exc)
            print(exc, file=sys.stderr, flush=True)
            return
        self.apply_control(change)

    def start_control(self) -> None:
        """From now on a SIGHUP applies the control file at once. Apply it now if it exists
        (or a SIGHUP came during setup). ``main`` calls this after ``setup``; a forked worker
        calls it itself before its loop."""
        self.control_live = True
        if self.control_file and os.path.exists(self.control_file):
            self.control_again = True
        self.apply_pending_control()

    def on_control_signal(self, signum=None, frame=None) -> None:
        """SIGHUP: pass it on to the workers, then re-read the control file."""
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
        self.control_again = True
        self.apply_pending_control()

    def apply_pending_control(self) -> None:
        """Re-read the control file if asked to, and again if another SIGHUP came while this
        one was being applied (the handler may interrupt itself); not before setup is done."""
        if self.control_busy or not self.control_live:
            return
        self.control_busy = True
        try:
            while self.control_again:
                self.control_again = False
                self.reload_control_file()
        finally:
            self.control_busy = False
        if self.control_again:  # a SIGHUP between the last check and the line above
            self.apply_pending_control()

    # shared ------------------------------------------------------------------------------------
    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "way": self.way,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "cpu_user_s": usage.ru_utime,
            "cpu_sys_s": usage.ru_stime,
            "lb": self.lb.stats(),
            "control": {**self.control_counts, "pool_change": self.pool_change.to_doc()},
            "flows_sample": self.flows_sample(self.flows_sample_size),
            **self.extra_stats(),
        }

    def flows_sample(self, n: int) -> list[dict]:
        """The ``n`` most recently used flows of this process's balancers (the module docstring
        says the format), newest first. A table that cannot be read (a student's table missing
        ``recent``) gives one ``{"error": ...}`` entry: the stats must still be written."""
        now = time.monotonic()
        rows = []
        try:
            for lb in self.balancers():
                for key, backend, idle in lb.flows.recent(n, now):
                    rows.append(
                        {
                            "flow": str(key),
                            "backend": getattr(backend, "name", backend),
                            "idle_s": round(idle, 3),
                        }
                    )
                cache = lb.batch_cache
                if cache is not None:
                    names = [b.name for b in lb.pool.by_number()]
                    for flow_hash, number, idle in cache.recent(n, now):
                        rows.append(
                            {
                                "hash": f"0x{flow_hash:08x}",
                                "idle_s": round(idle, 3),
                                "backend": names[number] if number < len(names) else number,
                            }
                        )
        except Exception as exc:  # noqa: BLE001 - inspection only
            return [{"error": f"{type(exc).__name__}: {exc}"}]
        rows.sort(key=lambda r: r["idle_s"])
        return rows[:n]

    def stats_path(self, path: str) -> str:
        """Where this process writes its stats (ways with worker processes add a suffix)."""
        return path

    def write_stats(self, path: str | None) -> None:
        if not path:
            return
        write_json_atomic(self.stats_path(path), self.stats(), indent=1)

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        parser = argparse.ArgumentParser(prog=f"python -m vnf.ways.{cls.way}_lb")
        parser.add_argument("--config", required=True, help="LB.json (see vnf/ways/common.py)")
        parser.add_argument("--ready-file", help="created once the LB forwards")
        parser.add_argument("--stats-file", help="counters, written on SIGUSR1 and at exit")
        parser.add_argument(
            "--control-file", help="the wanted pool (vnf/control.py); read at start and on SIGHUP"
        )
        parser.add_argument(
            "--flows-sample",
            type=int,
            default=FLOWS_SAMPLE,
            metavar="N",
            help="how many recent flows the stats file lists (flows_sample)",
        )
        args = parser.parse_args(argv)
        program = cls(*load_config(args.config))
        program.stats_file = args.stats_file
        program.control_file = args.control_file
        program.flows_sample_size = max(0, args.flows_sample)

        def on_stop(signum, frame):
            program.stopping = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, lambda s, f: program.write_stats(args.stats_file))
        signal.signal(signal.SIGHUP, program.on_control_signal)
        program.setup()
        program.start_control()
        if args.ready_file:
            open(args.ready_file, "w").close()
        try:
            program.run()
        finally:
            program.close()
            program.write_stats(args.stats_file)
