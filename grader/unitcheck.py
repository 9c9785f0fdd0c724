"""Run a lab's unit checks (``labs/labN/tests/checks.py``) on a student's file; print JSON.

Run by the grader as the student (``grader.sandbox_user``): the student's code is imported in
this process, so the result line carries a nonce the grader sends on stdin and the code under
test never saw when it was imported... unless it goes looking; the unit checks are a small share
of the points, and everything else is measured from outside the submission's process.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader.unitcheck")
    p.add_argument("--checks", required=True, help="path of checks.py")
    p.add_argument("--module", required=True, help="module name the checks expect")
    p.add_argument("--file", required=True, help="the student's file")
    a = p.parse_args(argv)
    nonce = sys.stdin.readline().strip()
    sys.stdin = open(os.devnull)
    real_stdout = os.fdopen(os.dup(1), "w")
    sys.path.insert(0, os.path.dirname(os.path.abspath(a.checks)))
    spec = importlib.util.spec_from_file_location("checks", a.checks)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    results = []
    try:
        mspec = importlib.util.spec_from_file_location(a.module, a.file)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[a.module] = module
        mspec.loader.exec_module(module)
    except BaseException as exc:                  # noqa: BLE001
        msg = f"{a.module}.py does not import: {type(exc).__name__}: {exc}"
        results = [{"name": c.__name__, "ok": False, "message": msg} for c in checks.CHECKS]
        module = None
    if module is not None:
        for check in checks.CHECKS:
            t0 = time.monotonic()
            try:
                check(module)
                results.append({"name": check.__name__, "ok": True, "message": ""})
            except NotImplementedError as exc:
                results.append({"name": check.__name__, "ok": False,
                                "message": f"not implemented yet ({exc})"})
            except AssertionError as exc:
                results.append({"name": check.__name__, "ok": False, "message": str(exc)[:500]})
            except BaseException as exc:          # noqa: BLE001
                tb = traceback.format_exc(limit=3)[-600:]
                results.append({"name": check.__name__, "ok": False,
                                "message": f"raised {type(exc).__name__}: {exc}\n{tb}"})
            results[-1]["seconds"] = round(time.monotonic() - t0, 3)
    real_stdout.write(nonce + " " + json.dumps({"results": results}) + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
