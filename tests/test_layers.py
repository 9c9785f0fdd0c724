"""The layout's rules, checked on the source: dependencies point one way, no import cycles, no
private names across packages.

Layers, lowest first: ``vnf`` (the NF) < ``topologies`` < ``testbed`` < ``bench`` < ``grader`` <
``vnflab`` (the app) < ``notebooks/*.py``. A module may import its own layer and those below it,
never one above. Every import counts, wherever it is written (a function-local import is still a
dependency), and so do module names in strings the code runs: ``importlib.import_module("a.b")``
and ``[python, "-m", "a.b"]``. The source is parsed (AST), nothing is imported.

A failure prints each offending edge as ``file:line: importer -> imported``.
"""

from __future__ import annotations

import ast
import os
import re
from collections import defaultdict

from grader.labconfig import REPO

LAYERS = {
    "vnf": 1,
    "topologies": 2,
    "testbed": 3,
    "bench": 4,
    "grader": 5,
    "vnflab": 6,
    "notebooks": 7,
}
PACKAGES = [p for p in LAYERS if p != "notebooks"]

# Offences tolerated for now, as the test prints them (line numbers left out). Each must still
# occur (the test fails on a stale entry): delete it with the fix. Empty: keep it so.
KNOWN: set[str] = set()


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every .py of the layered packages and notebooks/*.py."""
    mods = {}
    for pkg in PACKAGES:
        for root, dirs, files in os.walk(os.path.join(REPO, pkg)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for fn in sorted(files):
                if fn.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, fn), REPO)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    mods[".".join(rel)] = os.path.join(root, fn)
    nb = os.path.join(REPO, "notebooks")
    for fn in sorted(os.listdir(nb)):
        if fn.endswith(".py"):
            mods[f"notebooks.{fn[:-3]}"] = os.path.join(nb, fn)
    return mods


def _extensions() -> dict[str, str]:
    """The C extension modules setup.py builds (``vnf.afpacket._ring``) -> their first source:
    modules too (they import nothing of ours), built or not."""
    with open(os.path.join(REPO, "setup.py")) as f:
        tree = ast.parse(f.read())
    return {
        node.args[0].value: os.path.join(REPO, node.args[1].elts[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Extension"
    }


SOURCES = _modules()  # what is scanned
MODULES = {**SOURCES, **_extensions()}  # what an import can name


def _top(module: str) -> str:
    return module.split(".")[0]


def _resolve(name: str, importer: str) -> str | None:
    """The module of ours that importing ``name`` loads (the longest existing prefix), or None
    for the standard library and third parties. A notebook's bare ``import nbdata`` is its
    sibling in notebooks/ (the notebooks run from there)."""
    if _top(importer) == "notebooks" and f"notebooks.{name.split('.')[0]}" in MODULES:
        name = f"notebooks.{name}"
    if _top(name) not in LAYERS:
        return None
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _package_of(module: str) -> str:
    """The package a module's relative imports start from."""
    is_pkg = MODULES[module].endswith("__init__.py")
    return module if is_pkg else module.rpartition(".")[0]


class _Scan(ast.NodeVisitor):
    """The imports of one module: ``edges`` (line, imported module, how) and uses of private
    names of other top-level packages (``private``: line, text)."""

    def __init__(self, module: str):
        self.module = module
        self.edges: list[tuple[int, str, str]] = []
        self.private: list[tuple[int, str]] = []
        self.bound: dict[str, str] = {}  # local name -> our module it is bound to

    def _edge(self, line: int, name: str, how: str) -> str | None:
        target = _resolve(name, self.module)
        if target and target != self.module:
            self.edges.append((line, target, how))
        return target

    def _foreign(self, module: str | None) -> bool:
        return module is not None and _top(module) != _top(self.module)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            target = self._edge(node.lineno, alias.name, f"import {alias.name}")
            if target:
                # "import a.b" binds a; "import a.b as c" binds c to a.b
                local = alias.asname or alias.name.split(".")[0]
                self.bound[local] = target if alias.asname else _resolve(local, self.module)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            pkg = _package_of(self.module).split(".")
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in MODULES:  # "from a import b": the module a.b
                target = self._edge(node.lineno, full, f"from {base} import {alias.name}")
                self.bound[alias.asname or alias.name] = target
            else:
                target = self._edge(node.lineno, base, f"from {base} import {alias.name}")
            if self._foreign(target) and alias.name.startswith("_"):
                self.private.append((node.lineno, f"from {base} import {alias.name}"))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if (
            name == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self._edge(node.lineno, node.args[0].value, f'import_module("{node.args[0].value}")')
        self.generic_visit(node)

    def _run_module(self, elts: list[ast.expr]) -> None:
        for a, b in zip(elts, elts[1:]):
            if (
                isinstance(a, ast.Constant)
                and a.value == "-m"
                and isinstance(b, ast.Constant)
                and isinstance(b.value, str)
            ):
                self._edge(b.lineno, b.value, f'"-m", "{b.value}"')

    def visit_List(self, node: ast.List) -> None:
        self._run_module(node.elts)
        self.generic_visit(node)

    visit_Tuple = visit_List

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name) and self._foreign(self.bound.get(base.id)):
            chain.reverse()
            for attr in chain:
                if attr.startswith("_") and not attr.endswith("__"):
                    self.private.append((node.lineno, ".".join([base.id, *chain])))
                    break
            return  # the chain is judged whole, once
        self.generic_visit(node)


def _scan_all() -> dict[str, _Scan]:
    scans = {}
    for module, path in SOURCES.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        scan = _Scan(module)
        # bindings first (an import at the bottom of a file still names its module above)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                scan.visit(node)
        scan.edges.clear()
        scan.private.clear()
        scan.visit(tree)
        scans[module] = scan
    return scans


SCANS = _scan_all()


def _where(module: str, line: int) -> str:
    return f"{os.path.relpath(MODULES[module], REPO)}:{line}"


def _check(kind: str, found: list[str]) -> None:
    """Fail on any offence of ``kind`` not in KNOWN, and on a KNOWN one that is gone."""

    def unnumbered(text: str) -> str:
        return re.sub(r"\.py:\d+", ".py", text)

    known = {k for k in KNOWN if k.startswith(kind + ":")}
    stale = sorted(known - {unnumbered(f) for f in found})
    assert not stale, "KNOWN offences no longer found (delete them):\n  " + "\n  ".join(stale)
    new = sorted(f for f in set(found) if unnumbered(f) not in known)
    assert not new, f"{len(new)} offence(s):\n  " + "\n  ".join(new)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    found = []
    for module, scan in SCANS.items():
        for line, target, how in scan.edges:
            if LAYERS[_top(target)] > LAYERS[_top(module)]:
                found.append(
                    f"upward: {_where(module, line)}: {module} -> {target} ({how}; "
                    f"layer {LAYERS[_top(module)]} imports layer {LAYERS[_top(target)]})"
                )
    _check("upward", found)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the graph's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    scc = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        scc.append(top)
                        if top == node:
                            break
                    sccs.append(sorted(scc))
    return sccs


def test_strongly_connected_finds_a_cycle_and_only_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(s for s in _strongly_connected(graph) if len(s) > 1) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for module, scan in SCANS.items():
        graph[module]
        for line, target, how in scan.edges:
            graph[module].add(target)
            graph[target]
            where.setdefault((module, target), f"{_where(module, line)} ({how})")
    found = []
    for scc in _strongly_connected(graph):
        if len(scc) > 1:
            inside = set(scc)
            edges = sorted(f"{a} -> {b} at {where[(a, b)]}" for a in scc for b in graph[a] & inside)
            found.append(f"cycle: {' '.join(scc)}:\n      " + "\n      ".join(edges))
    _check("cycle", found)


def test_no_private_name_of_another_package():
    found = []
    for module, scan in SCANS.items():
        for line, text in scan.private:
            found.append(f"private: {_where(module, line)}: {module} uses {text}")
    _check("private", found)


def test_the_scan_sees_what_it_must():
    """The checks above can fail: the scanner finds each kind of edge in code it is shown."""
    grade = SCANS["grader.grade"]
    assert any(t == "grader.inside" and "-m" in how for _, t, how in grade.edges)
    assert any(t == "testbed.sandbox" for _, t, _ in grade.edges)  # function-local import
    cli = SCANS["vnflab.cli"]
    assert any(t == "bench.runner" for _, t, _ in cli.edges)
    scan = _Scan("grader.example")
    scan.visit(
        ast.parse(
            "from testbed.experiment import _read_json\n"
            "import testbed.experiment as ex\nex._tree(1)\n"
            "from grader import labconfig\nlabconfig._x\n"
        )
    )
    assert [text for _, text in scan.private] == [
        "from testbed.experiment import _read_json",
        "ex._tree",
    ]
