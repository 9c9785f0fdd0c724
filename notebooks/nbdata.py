"""Measurement files for the notebooks: find one, or run the command that makes it.

Every notebook names the command that produces its data (a ``vnflab`` command or a script in
this directory) and calls :func:`ensure`, which runs that command only when the file is missing.
Files go to ``notebooks/data/`` (git-ignored), so notebooks that need the same run share it.

``VNFLAB_NOTEBOOK_SMALL=1`` makes every command small (one short run: for tests and a first
look); small and full measurements are kept in different files. ``VNFLAB_NOTEBOOK_REFRESH=1``
re-runs the commands even when their files exist.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("VNFLAB_NOTEBOOK_DATA") or HERE / "data")   # tests point it elsewhere
SMALL = os.environ.get("VNFLAB_NOTEBOOK_SMALL", "") not in ("", "0")
REFRESH = os.environ.get("VNFLAB_NOTEBOOK_REFRESH", "") not in ("", "0")


def data_file(name: str) -> Path:
    """notebooks/data/NAME.json, or NAME.small.json in small mode."""
    return DATA / (f"{name}.small.json" if SMALL else f"{name}.json")


def vnflab() -> list[str]:
    """How to call the ``vnflab`` command from here (the installed one, else this checkout's)."""
    exe = shutil.which("vnflab")
    venv = REPO / ".venv" / "bin" / "vnflab"
    if venv.exists():
        return [str(venv)]
    return [exe] if exe else [sys.executable, "-m", "vnflab.cli"]


def ensure(path: Path, argv: list[str], timeout: float = 1800) -> dict:
    """Load the JSON at ``path``; run ``argv`` first if the file is missing (or REFRESH)."""
    path = Path(path)
    if REFRESH or not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        print("measuring: " + " ".join(shlex.quote(a) for a in argv), flush=True)
        if os.geteuid() != 0:
            raise RuntimeError(f"{path.name} is missing and measuring needs root (network "
                               f"namespaces): run the command above with sudo, then re-run")
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        print(tail)
        if not path.exists():
            raise RuntimeError(f"the command exited {proc.returncode} without writing {path}")
    else:
        print(f"using {path} (delete it, or set VNFLAB_NOTEBOOK_REFRESH=1, "
              f"to measure again)")
    with open(path) as f:
        return json.load(f)
