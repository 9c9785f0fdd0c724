"""The notebooks run headless on real (small) measurements and draw their figures; the committed
notebooks carry no outputs."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
# notebook -> the least number of figures (image/png outputs) it must produce
NOTEBOOKS = {
    "01-kernel-vs-bypass.ipynb": 1,
    "02-batching.ipynb": 1,
    "03-multicore.ipynb": 1,
    "04-affinity-and-hashing.ipynb": 3,
}


def test_all_notebooks_listed():
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(NB_DIR, "*.ipynb"))) == \
        sorted(NOTEBOOKS)


def test_committed_notebooks_have_no_outputs():
    """What git holds (not the working copy) must be stripped: scripts/strip_notebooks.py."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from strip_notebooks import dirty
    import json
    for name in NOTEBOOKS:
        rel = f"notebooks/{name}"
        shown = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode != 0:      # not committed yet (or not a git checkout): check the file
            with open(os.path.join(ROOT, rel)) as f:
                text = f.read()
        else:
            text = shown.stdout
        assert dirty(json.loads(text)) == [], f"{rel} has outputs: run scripts/strip_notebooks.py"


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    """One data directory for all four notebooks, fresh for this test run (so the notebooks'
    own measuring commands are what is tested, and none of them touches notebooks/data/)."""
    return str(tmp_path_factory.mktemp("notebook-data"))


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_and_draws(name, shared_data, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("VNFLAB_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("VNFLAB_NOTEBOOK_DATA", shared_data)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": NB_DIR}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= NOTEBOOKS[name], f"{name}: {len(figures)} figure(s)"
    # every notebook names and reads a measurement file it made (or found) in the shared dir
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "measuring: " in text or "using " in text
