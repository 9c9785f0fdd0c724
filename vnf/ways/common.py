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
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time

from vnf.jsonfile import write_json_atomic
from vnf.lb import ConfigError, LBConfig, LoadBalancer


def fail(field: str, message: str) -> "NoReturn":  # noqa: F821
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
    except TypeError as exc:      # an unknown or missing key in "lb"
        fail("lb", str(exc).replace("LBConfig.__init__() ", ""))


class LBProgram:
    """Base class of a way's LB program: subclasses write ``setup()``, ``run()``, ``close()``."""

    way = "?"

    def __init__(self, config: LBConfig, io: dict):
        self.config = config
        self.io = io
        self.lb = LoadBalancer(config)
        self.stopping = False
        self.stats_file: str | None = None
        self.started = time.monotonic()

    # subclasses ------------------------------------------------------------------------------
    def setup(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def extra_stats(self) -> dict:
        return {}

    # shared ------------------------------------------------------------------------------------
    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"way": self.way, "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 3),
                "cpu_user_s": usage.ru_utime, "cpu_sys_s": usage.ru_stime,
                "lb": self.lb.stats(), **self.extra_stats()}

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
        args = parser.parse_args(argv)
        program = cls(*load_config(args.config))
        program.stats_file = args.stats_file

        def on_stop(signum, frame):
            program.stopping = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, lambda s, f: program.write_stats(args.stats_file))
        program.setup()
        if args.ready_file:
            open(args.ready_file, "w").close()
        try:
            program.run()
        finally:
            program.close()
            program.write_stats(args.stats_file)
