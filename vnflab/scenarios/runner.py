"""Run a scenario in a fresh sandbox (outside) and the scenario itself (inside).

Outside: ``run_scenario(name)`` re-runs ``python -m vnflab.scenarios.runner SPEC.json
RESULT.json`` with ``testbed.sandbox.run_module_in_sandbox`` (new net + pid + mount namespaces; a
timeout kills the whole sandbox) and returns the result dict. Inside: ``main`` calls
``<scenario>.run(workdir, quick)``, which returns ``{"ok", "checks", "figures", "lines"}``.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
import traceback

TIMEOUT_S = {"health": 180, "ecmp": 420, "sdn": 180, "chain": 240}


def run_scenario(name: str, quick: bool = False, keep_workdir: str | None = None) -> dict:
    from testbed import sandbox

    workdir = keep_workdir or tempfile.mkdtemp(prefix=f"vnflab-scenario-{name}-")
    result = sandbox.run_module_in_sandbox(
        "vnflab.scenarios.runner",
        {"name": name, "quick": quick},
        TIMEOUT_S[name],
        workdir,
        what="scenario",
        keep=bool(keep_workdir),
    )
    result.setdefault("scenario", name)
    result.setdefault("ok", False)
    if keep_workdir:
        result["workdir"] = workdir
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
    print(
        f"\nscenario {result.get('scenario')}: {'OK' if result.get('ok') else 'FAILED'}"
        + (f" ({result['elapsed_s']} s)" if "elapsed_s" in result else "")
    )


def run_inside(spec: dict, workdir: str) -> dict:
    """``<scenario>.run(workdir, quick)``; an exception is a failed scenario (traceback in the
    log)."""
    name = spec["name"]
    t0 = time.monotonic()
    try:
        module = importlib.import_module(f"vnflab.scenarios.{name}")
        result = module.run(workdir, quick=spec.get("quick", False))
    except Exception as exc:  # reported as a failed scenario, with the traceback in the log
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["scenario"] = name
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    return result


def main(argv: list[str]) -> int:
    from testbed import sandbox

    return sandbox.serve_module(argv, run_inside)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
