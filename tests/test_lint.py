"""The tree passes its linter, its formatter and its type checker (configured in pyproject.toml).

Run the same by hand: ``ruff check . && ruff format --check . && mypy`` from the checkout.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)  # the venv's tools, next to its python


def tool(name: str) -> str:
    path = os.path.join(BIN, name)
    if os.path.exists(path):
        return path
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    r = run(tool("ruff"), "check", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_tree_is_formatted():
    r = run(tool("ruff"), "format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_finds_nothing():
    r = run(tool("mypy"))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr
