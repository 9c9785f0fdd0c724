"""The one entry point: every feature's subcommand is wired into ``vnflab``."""

import subprocess
import sys


def test_every_feature_registers_its_subcommand():
    from vnflab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    for name in ("demo", "bench", "doctor"):
        assert name in sub.choices, sorted(sub.choices)


def test_help_runs():
    r = subprocess.run(
        [sys.executable, "-m", "vnflab.cli", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "demo" in r.stdout
