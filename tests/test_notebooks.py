"""The notebooks: committed stripped, with measured reference data, rendered copies that are up to
date, runnable offline on the reference data, and measuring (with streamed progress) on demand."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
sys.path.insert(0, NB_DIR)  # the notebooks' helpers are modules of notebooks/, not a package
import nbdata  # noqa: E402
import render  # noqa: E402

# data set name -> the least number of figures (image/png outputs) its notebook must produce
FIGURES = {"kernel-vs-bypass": 1, "batching": 1, "multicore": 2, "affinity-and-hashing": 3}


def test_all_notebooks_listed():
    assert sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(NB_DIR, "*.ipynb"))
    ) == sorted(r.notebook for r in nbdata.RECIPES.values())
    assert sorted(FIGURES) == sorted(nbdata.RECIPES)


def test_committed_notebooks_have_no_outputs():
    """What git holds (not the working copy) must be stripped: scripts/strip_notebooks.py."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from strip_notebooks import dirty

    for recipe in nbdata.RECIPES.values():
        rel = f"notebooks/{recipe.notebook}"
        shown = subprocess.run(
            ["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True, text=True
        )
        if shown.returncode != 0:  # not committed yet (or not a git checkout): check the file
            with open(os.path.join(ROOT, rel)) as f:
                text = f.read()
        else:
            text = shown.stdout
        assert dirty(json.loads(text)) == [], f"{rel} has outputs: run scripts/strip_notebooks.py"


@pytest.mark.parametrize("name", sorted(nbdata.RECIPES))
def test_reference_data_says_where_and_when_it_was_measured(name):
    """Each reference data set was made by `vnflab notebook-data` (its wrapper: machine, date,
    size, command, duration) and a full-size one took under 10 minutes."""
    doc = nbdata.read_doc(nbdata.reference_path(name))
    assert doc["name"] == name and doc["notebook"] == nbdata.RECIPES[name].notebook
    assert doc["size"] in nbdata.SIZES
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu_model"]
    assert doc["measured"][:4].isdigit() and doc["command"] and doc["data"]
    if doc["size"] == "full":
        assert doc["duration_s"] < 600, f"{name}: full size took {doc['duration_s']} s"


def test_rendered_copies_are_up_to_date():
    """docs/notebooks/ shows the current notebooks on the current reference data."""
    assert render.stale() == [], "run `vnflab notebooks render`"


def test_a_changed_notebook_makes_its_rendered_copy_stale(tmp_path):
    """The check above can fail: a page made from other inputs is reported."""
    for name in nbdata.RECIPES:
        page = render.page_name(name)
        with open(os.path.join(render.DOCS, f"{page}.md")) as f:
            text = f.read().replace(render.inputs_digest(name), "0" * 64)
        (tmp_path / f"{page}.md").write_text(text)
        os.symlink(os.path.join(render.DOCS, page), tmp_path / page)
    assert len(render.stale(tmp_path)) == len(nbdata.RECIPES)


def outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(nbdata.RECIPES))
def test_notebook_runs_offline_on_the_reference_data(name):
    """Top to bottom with measuring forbidden (VNFLAB_NOTEBOOK_OFFLINE=1) and no data of this
    machine: the figures are drawn from the reference data and say so."""
    pytest.importorskip("nbclient")
    nb = render.execute(name)
    outs = outputs(nb)
    errors = [o for o in outs if o.get("output_type") == "error"]
    assert not errors, errors
    figures = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(figures) >= FIGURES[name], f"{name}: {len(figures)} figure(s)"
    text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
    assert "reference machine: " in text and "not measuring" in text
    assert "measuring " + name not in text


def test_stream_prints_lines_as_they_come_and_fills_silence(monkeypatch, capsys):
    """The command's first line is printed, then "still measuring" lines while it is silent,
    then its last line: output is streamed, not collected until the end."""
    monkeypatch.setattr(nbdata, "HEARTBEAT_S", 0.3)
    code = (
        "import time; print('[vnflab 00:00:00] run 1/2: x (step 1/2, 0:00 elapsed)', "
        "flush=True); time.sleep(1.5); print('last line')"
    )
    assert nbdata.stream([sys.executable, "-c", code], expected_s=60, timeout=60) == 0
    out = capsys.readouterr().out.splitlines()
    first = next(i for i, line in enumerate(out) if "run 1/2: x" in line)
    beats = [i for i, line in enumerate(out) if "still measuring" in line]
    last = next(i for i, line in enumerate(out) if "last line" in line)
    assert beats and first < beats[0] and beats[-1] < last
    assert "about 0:5" in out[beats[0]] and "at: run 1/2: x (step 1/2)" in out[beats[0]]


def test_progress_note_says_step_elapsed_and_time_left():
    from bench.runner import progress_note

    assert progress_note(0, 10, 0.0) == "step 1/10, 0:00 elapsed"
    assert progress_note(2, 10, 60.0) == "step 3/10, 1:00 elapsed, about 4:00 left"


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(nbdata.RECIPES))
def test_notebook_measures_quick_and_draws(name, tmp_path, monkeypatch):
    """The marked cell measures this machine (quick size, as VNFLAB_NOTEBOOK_MEASURE asks),
    streaming progress, and the figures draw it next to the reference machine."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("VNFLAB_NOTEBOOK_MEASURE", "quick")
    monkeypatch.setenv("VNFLAB_NOTEBOOK_DATA", str(tmp_path))
    monkeypatch.delenv("VNFLAB_NOTEBOOK_OFFLINE", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(os.path.join(NB_DIR, nbdata.RECIPES[name].notebook), as_version=4)
    nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": NB_DIR}}
    ).execute()
    outs = outputs(nb)
    errors = [o for o in outs if o.get("output_type") == "error"]
    assert not errors, errors
    figures = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(figures) >= FIGURES[name], f"{name}: {len(figures)} figure(s)"
    text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
    assert f"measuring {name} at quick size" in text and "] done (exit" in text
    assert re.search(r"\n\[\d+:\d\d\] ", text)  # the command's lines, with the time so far
    assert "your machine: " in text and "reference machine: " in text
    assert nbdata.read_doc(tmp_path / f"{name}.json")["size"] == "quick"
