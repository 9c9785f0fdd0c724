#!/usr/bin/env python3
"""Strip outputs from the notebooks before they are committed (the notebooks stay code and prose,
so their diffs can be reviewed; what readers see rendered is generated into docs/notebooks/ by
`vnflab notebooks render`, see notebooks/README.md).

    python scripts/strip_notebooks.py [NOTEBOOK ...]          # strip in place (default: notebooks/*.ipynb)
    python scripts/strip_notebooks.py --check [NOTEBOOK ...]  # exit 1 if any has outputs

Removes cell outputs, execution counts, and per-run metadata (execution timings, widget state).
Uses only the standard library (the .ipynb format is JSON).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")
NOTEBOOK_METADATA = ("widgets", "papermill")


def dirty(nb: dict) -> list[str]:
    """What would be stripped, in words (empty: clean)."""
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            out.append(f"cell {i}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            out.append(f"cell {i}: execution_count {cell['execution_count']}")
        if any(k in cell.get("metadata", {}) for k in RUN_METADATA):
            out.append(f"cell {i}: run metadata")
    if any(k in nb.get("metadata", {}) for k in NOTEBOOK_METADATA):
        out.append("notebook: run metadata")
    return out


def strip(nb: dict) -> dict:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for k in RUN_METADATA:
            cell.get("metadata", {}).pop(k, None)
    for k in NOTEBOOK_METADATA:
        nb.get("metadata", {}).pop(k, None)
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="report, do not change; exit 1 if dirty")
    p.add_argument("paths", nargs="*")
    args = p.parse_args(argv)
    paths = args.paths or sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    bad = 0
    for path in paths:
        with open(path) as f:
            nb = json.load(f)
        problems = dirty(nb)
        if not problems:
            continue
        if args.check:
            bad += 1
            print(f"{path}: " + "; ".join(problems[:5]))
        else:
            with open(path, "w") as f:
                json.dump(strip(nb), f, indent=1, ensure_ascii=False)
                f.write("\n")
            print(f"stripped {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
