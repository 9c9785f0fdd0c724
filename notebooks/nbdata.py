"""The notebooks' data: the reference machine's (committed), and this machine's if you measure it.

Every notebook reads its data set with :func:`load`, which returns the **reference** data
(``notebooks/reference/NAME.json``, measured with vnflab on the machine named inside and
committed, so the notebooks can be read without running anything) followed by **your
machine's** (``notebooks/data/NAME.json``, git-ignored) when you have measured it. Figures draw
every data set they get, each labelled with its machine.

Measuring is never implicit: a notebook measures only in its marked cell (``MEASURE = "quick"``
or ``"full"``), and ``vnflab notebook-data NAME --quick|--full`` does the same from a shell.
Either way the command's output is streamed as it comes (which way, batch size, run i of n),
with a line at least every few seconds saying how long it has run and about how long is left.

Environment:

* ``VNFLAB_NOTEBOOK_OFFLINE=1``: never measure (the rendered copies and their test use it).
* ``VNFLAB_NOTEBOOK_MEASURE=quick|full``: measure in every notebook's marked cell (the tests).
* ``VNFLAB_NOTEBOOK_DATA=DIR``: where your machine's files go (default ``notebooks/data``).
"""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE = HERE / "reference"
DATA = Path(os.environ.get("VNFLAB_NOTEBOOK_DATA") or HERE / "data")
OFFLINE = os.environ.get("VNFLAB_NOTEBOOK_OFFLINE", "") not in ("", "0")
SIZES = ("quick", "full")
HEARTBEAT_S = 5.0  # the longest silence while measuring: then a "still measuring" line


@dataclass(frozen=True)
class Recipe:
    """How one notebook's data set is measured. ``expected_s``: how long each size took on the
    reference machine (2 cores, shared), printed before measuring and in the notebook."""

    name: str
    notebook: str
    expected_s: dict

    def argv(self, size: str, out: Path) -> list[str]:
        quick = size == "quick"
        vnflab = [sys.executable, "-m", "vnflab.cli"]
        if self.name == "kernel-vs-bypass":
            runs, seconds = (1, 0.5) if quick else (5, 3.0)
            # full: testpmd and the binding's bare loop beside the DPDK styles (the notebook's
            # "inside the DPDK way" figure); quick leaves them out to stay about a minute
            baseline = [] if quick else ["--baseline", "testpmd"]
            return vnflab + [
                "bench",
                "--compare",
                "socket,afpacket,dpdk",
                *baseline,
                "--runs",
                str(runs),
                "--seconds",
                str(seconds),
                "--json",
                str(out),
            ]
        if self.name == "batching":
            # full: 5 batch sizes a factor 4 apart (the curve's fall and its knee), 3 runs each
            batches, runs, seconds = (
                ((1, 8, 64), 1, 0.5) if quick else ((1, 4, 16, 64, 256), 3, 1.5)
            )
            return vnflab + [
                "bench",
                "--compare",
                "afpacket,dpdk",
                "--batch",
                ",".join(map(str, batches)),
                "--runs",
                str(runs),
                "--seconds",
                str(seconds),
                "--no-whole-core",
                "--json",
                str(out),
            ]
        if self.name == "multicore":
            workers = ",".join(str(n) for n in range(1, min(4, os.cpu_count() or 1) + 1))
            return [
                sys.executable,
                str(HERE / "measure_multicore.py"),
                "--workers",
                workers,
                "--json",
                str(out),
            ] + (["--small"] if quick else [])
        if self.name == "affinity-and-hashing":
            return (
                vnflab
                + ["demo", "--json", str(out)]
                + (["--way", "afpacket", "--quick"] if quick else ["--way", "all"])
            )
        raise KeyError(self.name)


# expected_s: measured on the reference machine (2 cores, shared and loaded) on 2026-12-07;
# multicore's full size again with its pipeline runs (3:13, load average 1.7 before);
# kernel-vs-bypass's full size with --baseline testpmd (5:35 in the morning, load average 0.8
# before; 7:35 twice in the afternoon, load average 0.7-1.0: the longer one is expected).
RECIPES = {
    r.name: r
    for r in (
        Recipe("kernel-vs-bypass", "01-kernel-vs-bypass.ipynb", {"quick": 60, "full": 455}),
        Recipe("batching", "02-batching.ipynb", {"quick": 50, "full": 305}),
        Recipe("multicore", "03-multicore.ipynb", {"quick": 100, "full": 195}),
        Recipe("affinity-and-hashing", "04-affinity-and-hashing.ipynb", {"quick": 10, "full": 110}),
    )
}


def mmss(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def durations(name: str) -> str:
    """``quick about 1:15, full about 7:00 (2 cores)``."""
    e = RECIPES[name].expected_s
    return f"quick about {mmss(e['quick'])}, full about {mmss(e['full'])} on 2 cores"


# --------------------------------------------------------------------------------------------
# reading: the data sets a notebook draws
# --------------------------------------------------------------------------------------------


@dataclass
class DataSet:
    """One machine's measurement: ``data`` is what the command wrote, ``doc`` its wrapper
    (machine, date, size, command, duration)."""

    who: str  # "reference machine" or "your machine"
    doc: dict

    @property
    def data(self) -> dict:
        return self.doc["data"]

    @property
    def label(self) -> str:
        """``reference machine: Intel Xeon, 2 cores, Linux 6.1; full size, 2025-06-01``."""
        m, d = self.doc["machine"], self.doc
        return (
            f"{self.who}: {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, "
            f"Linux {m.get('kernel', '?')}; {d['size']} size, {d['measured'][:10]}"
        )

    @property
    def short(self) -> str:
        """``reference`` or ``yours``: for legends and bar labels."""
        return "reference" if self.who.startswith("reference") else "yours"


def reference_path(name: str) -> Path:
    return REFERENCE / f"{name}.json"


def data_path(name: str) -> Path:
    return DATA / f"{name}.json"


def read_doc(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def load(name: str) -> list[DataSet]:
    """The reference data set, then yours if you measured one; prints what it found."""
    sets = [DataSet("reference machine", read_doc(reference_path(name)))]
    mine = data_path(name)
    if mine.exists():
        sets.append(DataSet("your machine", read_doc(mine)))
    for ds in sets:
        print(ds.label)
        if ds.doc.get("note"):
            print("  note:", ds.doc["note"])
    if len(sets) == 1:
        print(
            f"your machine: not measured yet (the cell above, or "
            f"`sudo vnflab notebook-data {name} --quick`: {durations(name)})"
        )
    return sets


def footnote(fig, sets: list[DataSet]) -> None:
    """Name the machine(s) under a figure (call after ``tight_layout``): one line per data set,
    in a strip added below the axes."""
    strip = (0.15 + 0.15 * len(sets)) / fig.get_figheight()  # inches -> figure fraction
    fig.subplots_adjust(bottom=fig.subplotpars.bottom + strip)
    fig.text(
        0.01, 0.01, "\n".join(ds.label for ds in sets), fontsize=8, color="dimgrey", va="bottom"
    )


# --------------------------------------------------------------------------------------------
# measuring: the marked cell and `vnflab notebook-data`
# --------------------------------------------------------------------------------------------


def measure_cell(name: str, size: str | None) -> None:
    """The notebooks' marked cell: measure at ``size`` (or VNFLAB_NOTEBOOK_MEASURE), or say
    how to."""
    size = os.environ.get("VNFLAB_NOTEBOOK_MEASURE") or size
    if size is None or OFFLINE:
        why = "offline (VNFLAB_NOTEBOOK_OFFLINE)" if OFFLINE and size else "MEASURE is None"
        print(f"not measuring: {why}. Sizes for this notebook: {durations(name)}.")
        have = data_path(name)
        print(
            f"your machine's data: {have}"
            if have.exists()
            else "your machine's data: none yet, the figures show the reference machine only"
        )
        return
    measure(name, size)


def machine() -> dict:
    """The machine a data set was measured on (the bench's own description, and the OS)."""
    sys.path.insert(0, str(REPO))
    from bench.machine import machine_info

    info = machine_info()
    try:
        with open("/etc/os-release") as f:
            os_name = dict(line.rstrip().split("=", 1) for line in f if "=" in line)
        info["os"] = os_name.get("PRETTY_NAME", "").strip('"')
    except OSError:
        info["os"] = platform.system()
    info["load_average_before"] = round(os.getloadavg()[0], 2)
    return info


def measure(
    name: str, size: str = "quick", out_dir: Path | None = None, note: str | None = None
) -> Path:
    """Run ``name``'s command at ``size``, streaming its output, and write the wrapped data set
    to ``out_dir/NAME.json`` (default: your machine's ``notebooks/data``)."""
    if OFFLINE:
        raise RuntimeError("VNFLAB_NOTEBOOK_OFFLINE is set: not measuring")
    if size not in SIZES:
        raise ValueError(f"size: one of {', '.join(SIZES)}, got {size!r}")
    recipe = RECIPES[name]
    out_dir = Path(out_dir or DATA)
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = recipe.expected_s[size]
    with tempfile.TemporaryDirectory(prefix="vnflab-nbdata-") as tmp:
        raw = Path(tmp) / "raw.json"
        argv = recipe.argv(size, raw)
        shown = shlex.join(argv).replace(str(raw), "OUT.json")
        print(
            f"measuring {name} at {size} size: about {mmss(expected)} expected "
            f"({durations(name)})\n  {shown}",
            flush=True,
        )
        if os.geteuid() != 0:
            raise RuntimeError(
                "measuring needs root (network namespaces): run "
                f"`sudo vnflab notebook-data {name} --{size}` instead"
            )
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        info = machine()
        t0 = time.monotonic()
        code = stream(argv, expected, timeout=max(3 * expected, expected + 600))
        took = time.monotonic() - t0
        if not raw.exists():
            raise RuntimeError(f"{name}: the command exited {code} without writing its data")
        doc = {
            "name": name,
            "notebook": recipe.notebook,
            "size": size,
            "measured": started,
            "duration_s": round(took),
            "exit_code": code,
            "machine": info,
            "command": shown,
            "note": note,
            "data": read_doc(raw),
        }
    path = out_dir / f"{name}.json"
    with open(path.with_suffix(".tmp"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(path.with_suffix(".tmp"), path)
    print(f"[{mmss(took)}] done (exit {code}): wrote {path}", flush=True)
    return path


PROGRESS = re.compile(r"step \d+/\d+, [\d:]+ elapsed")  # bench.runner.progress_note's lines
LEFT = re.compile(r"about (\d+):(\d\d) left")
STALE = re.compile(r", [\d:]+ elapsed|, about [\d:]+ left")  # dropped when a step is repeated


def time_left(eta_line: str, since_eta: float, by_expected: float) -> str:
    """``about 3:10 left``: the command's own latest estimate (``eta_line``) less the time since
    it; before the command gave one, the expected duration less the time so far."""
    m = LEFT.search(eta_line)
    left = int(m[1]) * 60 + int(m[2]) - since_eta if m else by_expected
    return f"about {mmss(left)} left" if left > 0 else "nearly done (or over the estimate)"


def stream(argv: list[str], expected_s: float, timeout: float) -> int:
    """Run ``argv``, printing each line of its output as it comes, prefixed by the time so far;
    after ``HEARTBEAT_S`` of silence, a line with the time so far, the time left (see
    :func:`time_left`) and the last step line seen. Returns the exit code."""
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: queue.Queue = queue.Queue()

    def read_all() -> None:  # a thread, so that silence can be noticed and filled
        for text in proc.stdout:
            lines.put(text)
        lines.put(None)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    t0 = time.monotonic()
    last_step, eta_line, eta_at = "", "", 0.0
    try:
        while True:
            try:
                line = lines.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                elapsed = time.monotonic() - t0
                if elapsed > timeout:
                    stop(proc)
                    raise RuntimeError(
                        f"stopped after {mmss(elapsed)} (expected {mmss(expected_s)})"
                    ) from None
                at = STALE.sub("", (eta_line or last_step).split("] ", 1)[-1])
                print(
                    f"[{mmss(elapsed)}] still measuring, "
                    f"{time_left(eta_line, elapsed - eta_at, expected_s - elapsed)}"
                    + (f" (at: {at})" if at else ""),
                    flush=True,
                )
                continue
            if line is None:
                break
            line = line.rstrip()
            if PROGRESS.search(line):  # a step line of the bench or measure_multicore
                last_step = line.split("] ", 1)[-1]
            if LEFT.search(line):  # the command's latest estimate of the time left; the
                # one-run benches inside measure_multicore give none, so its own estimate stays
                eta_line, eta_at = line, time.monotonic() - t0
            print(f"[{mmss(time.monotonic() - t0)}] {line}", flush=True)
    except BaseException:  # Ctrl-C, or "interrupt" in Jupyter: let the command clean up
        stop(proc)
        raise
    finally:
        reader.join(timeout=5)
    return proc.wait()


def stop(proc: subprocess.Popen) -> None:
    """SIGINT first (vnflab takes its sandbox down on Ctrl-C), SIGKILL if it does not exit."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    """``vnflab notebook-data [NAME|all] [--quick|--full] [--reference]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="vnflab notebook-data", description="measure the notebooks' data on this machine"
    )
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p) -> None:
    lines = [f"{n}: {durations(n)}" for n in RECIPES]
    p.add_argument(
        "name",
        nargs="?",
        default="all",
        choices=["all", *RECIPES],
        help="which notebook's data (default: all). " + "; ".join(lines),
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--quick",
        dest="size",
        action="store_const",
        const="quick",
        help="short runs: a first look (default)",
    )
    g.add_argument(
        "--full",
        dest="size",
        action="store_const",
        const="full",
        help="the sizes the notebooks' text is about (each within 10 min on 2 cores)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="write into notebooks/reference/ (the committed reference data), "
        "then re-render with `vnflab notebooks render`",
    )
    p.add_argument("--note", help="a note kept in the data set (e.g. how loaded the machine was)")
    p.set_defaults(size="quick")


def run(args) -> int:
    names = list(RECIPES) if args.name == "all" else [args.name]
    total = sum(RECIPES[n].expected_s[args.size] for n in names)
    print(f"{len(names)} data set(s) at {args.size} size: about {mmss(total)} expected", flush=True)
    failed = []
    for i, name in enumerate(names):
        print(f"\n=== {i + 1}/{len(names)}: {name} ===", flush=True)
        try:
            measure(name, args.size, REFERENCE if args.reference else None, note=args.note)
        except RuntimeError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
