"""The per-lab configuration (``labs/labN/lab.toml``) and hidden scenarios.

A hidden scenario is a ``*.toml`` in ``labs/hidden/`` (every lab runs it: the LB contract is
the same in all three ways) or in ``labs/labN/hidden/`` (that lab only; a file of the same name
replaces the shared one). Both places are instructor-only: never released, never visible to a
submission's process.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABS = os.path.join(REPO, "labs")
SHARED_HIDDEN = os.path.join(LABS, "hidden")


def hidden_dirs(n: int) -> list[str]:
    """Where lab ``n``'s hidden scenarios come from: the shared ones, then its own."""
    return [SHARED_HIDDEN, os.path.join(LABS, f"lab{n}", "hidden")]


# Instructor-only paths, never released (relative to REPO; a jailed process sees none of the
# checkout anyway, see grader.jail). Every lab's hidden dir is listed, whether or not it exists.
INSTRUCTOR_ONLY = (
    "vnf",
    "tests",
    ".git",
    "grader/hidden",
    *sorted(
        {
            os.path.relpath(d, REPO)
            for lab in sorted(glob.glob(os.path.join(LABS, "lab[0-9]*")))
            for d in hidden_dirs(int(os.path.basename(lab)[3:]))
        }
    ),
    "build",
    "notebooks",
)


class LabError(ValueError):
    pass


@dataclass
class Lab:
    number: int
    title: str
    way: str
    files: dict[str, str]  # student file -> path in the repo (the reference)
    raw: dict
    hidden: list[dict] = field(default_factory=list)
    path: str = ""

    @property
    def name(self) -> str:
        return f"lab{self.number}"

    def points(self) -> dict[str, float]:
        return dict(self.raw.get("points", {}))

    def traffic(self, quick: bool) -> dict:
        t = {k: v for k, v in self.raw.get("traffic", {}).items() if not isinstance(v, dict)}
        if quick:
            t.update(self.raw.get("traffic", {}).get("quick", {}))
        return t

    def limits(self, quick: bool) -> dict:
        lim = dict(self.raw.get("limits", {}))
        if quick and "quick_wall_s" in lim:
            lim["wall_s"] = lim["quick_wall_s"]
        return lim

    def cost(self, quick: bool) -> dict:
        c = dict(self.raw.get("cost", {}))
        if quick:
            c["seconds"] = c.get("quick_seconds", c.get("seconds", 1.0))
            c["rounds"] = c.get("quick_rounds", c.get("rounds", 1))
        return c

    def balance_tolerance(self, quick: bool) -> float:
        b = self.raw.get("balance", {})
        return float(
            b.get("quick_max_mean", b.get("max_mean", 1.3)) if quick else b.get("max_mean", 1.3)
        )

    def gradable(self) -> str | None:
        """None when the grader can run this lab end to end, else why not."""
        return self.available() or self.raw.get("lab", {}).get("grading")

    def available(self) -> str | None:
        """None when this lab can be released here (its reference files exist), else why not."""
        for student, ref in self.files.items():
            if not os.path.exists(os.path.join(REPO, ref)):
                return f"{ref} (the reference for {student}) is not in this vnflab yet"
        return None

    def total_points(self, hidden: bool = True) -> float:
        total = sum(self.points().values())
        if hidden:
            total += sum(float(h.get("points", 0)) for h in self.hidden)
        return total


def load(number: int | str) -> Lab:
    n = int(str(number).removeprefix("lab"))
    path = os.path.join(LABS, f"lab{n}", "lab.toml")
    if not os.path.exists(path):
        raise LabError(f"no lab {n} (expected {path})")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    meta = raw.get("lab", {})
    hidden: dict[str, dict] = {}
    for d in hidden_dirs(n):
        for hp in sorted(glob.glob(os.path.join(d, "*.toml"))):
            with open(hp, "rb") as f:
                h = tomllib.load(f)
            h.setdefault("id", os.path.splitext(os.path.basename(hp))[0])
            hidden[os.path.basename(hp)] = h
    return Lab(
        number=n,
        title=meta.get("title", f"lab {n}"),
        way=meta["way"],
        files=dict(raw.get("files", {})),
        raw=raw,
        hidden=[hidden[k] for k in sorted(hidden)],
        path=os.path.dirname(path),
    )


def all_labs() -> list[int]:
    return sorted(
        int(os.path.basename(d)[3:])
        for d in glob.glob(os.path.join(LABS, "lab[0-9]*"))
        if os.path.exists(os.path.join(d, "lab.toml"))
    )
