"""Run a scenario in a fresh sandbox (outside) and the scenario itself (inside).

Outside: ``run_scenario(name)`` re-runs ``python -m vnflab.scenarios.runner NAME WORKDIR
RESULT.json`` with ``vnflab.sandbox.run`` (new net + pid + mount namespaces; a timeout kills the
whole sandbox) and returns the result dict. Inside: ``main`` calls ``<scenario>.run(workdir,
quick)``, which returns ``{"ok", "checks", "figures", "lines"}``.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

TIMEOUT_S = {"health": 180, "ecmp": 420, "sdn": 180, "chain": 240}


def run_scenario(name: str, quick: bool = False, keep_workdir: str | None = None) -> dict:
    from vnflab import sandbox
    workdir = keep_workdir or tempfile.mkdtemp(prefix=f"vnflab-scenario-{name}-")
    os.makedirs(workdir, exist_ok=True)
    result_path = os.path.join(workdir, "result.json")
    argv = [sys.executable, "-m", "vnflab.scenarios.runner", name, workdir, result_path]
    if quick:
        argv.append("--quick")
    timeout = TIMEOUT_S[name]
    try:
        proc = sandbox.run(argv, timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        return {"scenario": name, "ok": False, "workdir": workdir,
                "error": f"scenario exceeded {timeout} s and was stopped; logs in {workdir}"}
    try:
        with open(result_path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return {"scenario": name, "ok": False, "workdir": workdir,
                "error": f"scenario failed (exit {code}) without a result; logs in {workdir}"}
    if keep_workdir:
        result["workdir"] = workdir
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_result(result: dict) -> None:
    for line in result.get("lines", []):
        print(line)
    if result.get("checks"):
        print("\nchecks:")
        for c in result["checks"]:
            print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
    if result.get("error"):
        print(f"\nerror: {result['error']}")
    print(f"\nscenario {result.get('scenario')}: {'OK' if result.get('ok') else 'FAILED'}"
          + (f" ({result['elapsed_s']} s)" if "elapsed_s" in result else ""))


def main(argv: list[str]) -> int:
    from vnflab import sandbox
    name, workdir, result_path = argv[:3]
    quick = "--quick" in argv[3:]
    sandbox.setup_inside()
    t0 = time.monotonic()
    try:
        module = importlib.import_module(f"vnflab.scenarios.{name}")
        result = module.run(workdir, quick=quick)
    except Exception as exc:  # reported as a failed scenario, with the traceback in the log
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["scenario"] = name
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.rename(result_path + ".tmp", result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
