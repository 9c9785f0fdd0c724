"""Rendered copies of the notebooks on the reference data: ``docs/notebooks/NN-NAME.md`` (the
notebook's file name) and its figures in ``docs/notebooks/NN-NAME/``.

    vnflab notebooks render     # run every notebook offline, write docs/notebooks/ (< 1 min each)
    vnflab notebooks check      # exit 1 if a rendered copy is older than what it was made from

The notebooks are committed without outputs (reviewable diffs: code and prose only); what a
reader sees without running anything is this generated copy (see notebooks/README.md for why).
Each page records a digest of what it was made from (the notebook's cells, its reference data,
``nbdata.py`` and this file), so :func:`stale` can tell, without running anything, whether a
page still shows what the notebook and the data would show.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbdata

DOCS = nbdata.REPO / "docs" / "notebooks"
STAMP = re.compile(r"<!-- rendered by `vnflab notebooks render`; inputs sha256:([0-9a-f]{64}) -->")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def page_name(name: str) -> str:
    """``01-kernel-vs-bypass`` for data set ``kernel-vs-bypass``: pages are named as notebooks."""
    return Path(nbdata.RECIPES[name].notebook).stem


def inputs_digest(name: str) -> str:
    """sha256 over what a rendered page is made from: the notebook's cells (type and source:
    stripping or re-saving it does not count as a change), its reference data, and the code
    that draws and renders (nbdata.py, render.py)."""
    recipe = nbdata.RECIPES[name]
    with open(nbdata.HERE / recipe.notebook) as f:
        cells = [(c["cell_type"], "".join(c["source"])) for c in json.load(f)["cells"]]
    h = hashlib.sha256(json.dumps(cells).encode())
    for path in (nbdata.reference_path(name), nbdata.HERE / "nbdata.py", Path(__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()


def execute(name: str, timeout: float = 300):
    """Run the notebook top to bottom offline (measuring is refused), on the reference data
    only (an empty directory stands in for notebooks/data), and return it with its outputs."""
    import nbclient
    import nbformat

    nb = nbformat.read(nbdata.HERE / nbdata.RECIPES[name].notebook, as_version=4)
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="vnflab-render-") as empty:
        os.environ.update(
            VNFLAB_NOTEBOOK_OFFLINE="1",
            VNFLAB_NOTEBOOK_DATA=empty,
            MPLBACKEND="module://matplotlib_inline.backend_inline",
        )
        os.environ.pop("VNFLAB_NOTEBOOK_MEASURE", None)
        try:  # the kernel inherits this environment
            nbclient.NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                resources={"metadata": {"path": str(nbdata.HERE)}},
            ).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return nb


def to_markdown(nb, name: str) -> tuple[str, list[bytes]]:
    """The executed notebook as Markdown (prose, code, printed output, figures as PNG links to
    ``NN-NAME/figure-K.png``) and the figures' bytes."""
    recipe = nbdata.RECIPES[name]
    banner = (
        f"> Rendered from [`notebooks/{recipe.notebook}`](../../notebooks/{recipe.notebook})"
        f" on the reference data [`notebooks/reference/{name}.json`]"
        f"(../../notebooks/reference/{name}.json) by `vnflab notebooks render`: nothing was "
        f"measured to make this page. Edit the notebook, not this file."
    )
    out = [
        banner,
        f"<!-- rendered by `vnflab notebooks render`; inputs sha256:{inputs_digest(name)} -->",
        "",
    ]
    figures: list[bytes] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            out += [cell.source, ""]
            continue
        if cell.cell_type != "code":
            continue
        out += ["```python", cell.source, "```", ""]
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data:
                figures.append(base64.b64decode(data["image/png"]))
                out += [
                    f"![figure {len(figures)}]({page_name(name)}/figure-{len(figures)}.png)",
                    "",
                ]
            elif o.get("output_type") == "stream":
                out += ["```text", o["text"].rstrip("\n"), "```", ""]
            elif o.get("output_type") == "error":
                out += ["```text", ANSI.sub("", "\n".join(o["traceback"])), "```", ""]
            elif "text/plain" in data:
                out += ["```text", data["text/plain"], "```", ""]
    return "\n".join(out).rstrip("\n") + "\n", figures


def render(names: list[str], out_dir: Path = DOCS) -> int:
    """Execute and write each notebook's page and figures; 1 if any notebook raised."""
    failed = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"rendering {nbdata.RECIPES[name].notebook} ...", flush=True)
        nb = execute(name)
        text, figures = to_markdown(nb, name)
        if any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", [])):
            print(f"  {name}: the notebook raised (the page shows the traceback)", file=sys.stderr)
            failed = 1
        fig_dir = out_dir / page_name(name)
        shutil.rmtree(fig_dir, ignore_errors=True)
        fig_dir.mkdir()
        for k, png in enumerate(figures, 1):
            (fig_dir / f"figure-{k}.png").write_bytes(png)
        (out_dir / f"{page_name(name)}.md").write_text(text)
        print(f"  wrote {fig_dir}.md and {len(figures)} figure(s)", flush=True)
    return failed


def stale(out_dir: Path = DOCS) -> list[str]:
    """Why each rendered page does not show the current notebook and data (empty: all fresh)."""
    problems = []
    for name in nbdata.RECIPES:
        page = out_dir / f"{page_name(name)}.md"
        if not page.exists():
            problems.append(f"{page} is missing")
            continue
        text = page.read_text()
        m = STAMP.search(text)
        if not m or m[1] != inputs_digest(name):
            problems.append(
                f"{page}: made from another version of the notebook, its reference "
                f"data or the rendering code"
            )
        for fig in re.findall(r"\]\((" + re.escape(page_name(name)) + r"/figure-\d+\.png)\)", text):
            if not (out_dir / fig).exists():
                problems.append(f"{page}: {fig} is missing")
    return problems


def add_arguments(p) -> None:
    p.add_argument(
        "action",
        choices=["render", "check"],
        help="render: run every notebook on the reference data (offline) and write "
        "docs/notebooks/; check: exit 1 if a page is out of date",
    )
    p.add_argument("name", nargs="?", default="all", choices=["all", *nbdata.RECIPES])
    p.add_argument(
        "--out", type=Path, default=DOCS, help="where the pages go (default: %(default)s)"
    )


def run(args) -> int:
    if args.action == "check":
        problems = stale(args.out)
        for line in problems:
            print(line)
        print(
            "rendered notebooks: "
            + ("OUT OF DATE: run `vnflab notebooks render`" if problems else "up to date")
        )
        return 1 if problems else 0
    names = list(nbdata.RECIPES) if args.name == "all" else [args.name]
    return render(names, args.out)
