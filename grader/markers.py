"""Solution markers: the instructor files are the reference solution, the student files are made.

A reference file marks what a lab's student writes::

    def lookup(self, key, now):
        # BEGIN SOLUTION lab1: miss -> count it, return None; ...
        ...the reference code...
        # END SOLUTION

``strip(text, lab)`` replaces every block of that lab with a TODO and a ``raise`` at the block's
indentation, so the starter imports, runs, and fails where the student has work to do::

        # TODO (lab1): miss -> count it, return None; ...
        raise NotImplementedError("lab1: miss -> count it, return None; ...")

Blocks of other labs keep their code (later labs hand out earlier labs' reference pieces); only
their marker lines are removed. Nothing is maintained twice: the release is generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "lab3: hint" or "lab3-vector: hint" (a variant name: several blocks of one lab in one file)
BEGIN = re.compile(
    r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<lab>lab\d+)(?:-(?P<variant>[\w-]+))?"
    r"\s*:?\s*(?P<hint>.*?)\s*$"
)
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")


class MarkerError(ValueError):
    pass


@dataclass
class Block:
    lab: str
    hint: str
    indent: str
    start: int  # line index of BEGIN
    end: int  # line index of END
    body: list[str]  # the solution lines (without markers)


def blocks(text: str, where: str = "<text>") -> list[Block]:
    """Every solution block of ``text``; MarkerError on unbalanced or nested markers."""
    out: list[Block] = []
    current = None
    for i, line in enumerate(text.splitlines()):
        m = BEGIN.match(line)
        if m:
            if current is not None:
                raise MarkerError(f"{where}:{i + 1}: BEGIN SOLUTION inside another block")
            current = Block(m["lab"], m["hint"], m["indent"], i, -1, [])
            continue
        if END.match(line):
            if current is None:
                raise MarkerError(f"{where}:{i + 1}: END SOLUTION without BEGIN")
            current.end = i
            out.append(current)
            current = None
            continue
        if current is not None:
            current.body.append(line)
    if current is not None:
        raise MarkerError(f"{where}:{current.start + 1}: BEGIN SOLUTION never ended")
    return out


def strip(text: str, lab: str, where: str = "<text>") -> str:
    """The student's version of ``text`` for ``lab`` (e.g. "lab1"); see the module docstring."""
    found = blocks(text, where)
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    by_start = {b.start: b for b in found}
    skip_until = -1
    for i, line in enumerate(lines):
        if i <= skip_until:
            continue
        block = by_start.get(i)
        if block is None:
            if END.match(line.rstrip("\n")):
                continue  # end marker of another lab's block
            out.append(line)
            continue
        if block.lab != lab:
            continue  # keep the other lab's code, drop its marker
        hint = block.hint or "write this part"
        out.append(f"{block.indent}# TODO ({lab}): {hint}\n")
        out.append(f"{block.indent}raise NotImplementedError({(lab + ': ' + hint)!r})\n")
        skip_until = block.end
    return "".join(out)


def solution_lines(text: str, lab: str) -> set[str]:
    """Distinctive solution lines of ``lab`` in ``text``: stripped, non-trivial, and not found
    anywhere outside the lab's blocks (used to prove a release leaks no solution)."""
    found = [b for b in blocks(text) if b.lab == lab]
    inside: set[str] = set()
    for b in found:
        inside.update(x.strip() for x in b.body)
    outside_text = strip(text, lab)
    outside = {x.strip() for x in outside_text.splitlines()}
    return {
        x
        for x in inside - outside
        if len(x) >= 12 and not x.startswith("#") and x not in ("continue", "return None")
    }
