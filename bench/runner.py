"""``vnflab bench``: per-packet cost of the load-balancer ways, measured the same way for each.

One invocation = one sandbox (fresh net/pid/mount namespaces, see ``testbed.sandbox``) holding
one bench bed. Runs of the ways being compared are interleaved (a, b, a, b, ...) so machine
drift hits them all alike; before each run ``bench.machine.calibrate`` times a fixed workload on
the LB core, so the report can put the machine's own drift next to the ways' CV.

Each way is measured by a *driver* (``default_drivers``: ``bench.kernel.KernelPathDriver`` for
socket and AF_PACKET, ``bench.dpdk.DpdkDriver`` for DPDK), handed to ``run_inside`` as a mapping
way -> driver. A driver has:

* ``available(way)``: None, or why the way cannot run here;
* ``make_bed(spec, workdir)``: the bed it needs (a topology), or None for none;
* ``run(bed, way, batch, tag)``: one run, a dict with at least ``ns_per_packet`` and ``mpps``;
* ``summary(ok_runs)``, ``detail(way_entry)``, ``brief(spec, sink)``, ``method(spec, sink)``:
  its part of the report (``bench.report``).
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict

from bench.machine import calibrate
from bench.report import summarize
from bench.spec import BenchSpec, variant_label
from testbed.experiment import log


def default_drivers() -> dict:
    """The way -> driver mapping ``vnflab bench`` uses."""
    from bench.dpdk import DpdkDriver
    from bench.kernel import KernelPathDriver

    kernel = KernelPathDriver()
    return {"socket": kernel, "afpacket": kernel, "dpdk": DpdkDriver()}


class PlainBed:
    """The bed when no driver asked for one (DPDK alone: no topology)."""

    sink = "none"

    def __init__(self, spec: BenchSpec, workdir: str):
        self.spec, self.workdir = spec, workdir

    def close(self) -> None:
        pass


def open_bed(spec: BenchSpec, workdir: str, drivers: dict, ways: list[str]):
    """The first bed one of the ways' drivers asks for (the kernel ways: a topology), else a
    ``PlainBed``. Every driver gets this one bed; the DPDK driver needs only its spec/workdir."""
    for driver in {id(drivers[w]): drivers[w] for w in ways}.values():
        bed = driver.make_bed(spec, workdir)
        if bed is not None:
            return bed
    return PlainBed(spec, workdir)


def round_run(r: dict) -> dict:
    """A run's floats rounded for the JSON (rates and ratios to 4 places, the rest to 1): a ratio
    compared with a target such as 1.25 needs more than one decimal."""

    def is_ratio(k: str) -> bool:
        return "ratio" in k or "_over_" in k

    def rnd(k, v):
        if not isinstance(v, float):
            return v
        return round(v, 4) if k == "mpps" or is_ratio(k) or k.endswith("_mpps") else round(v, 1)

    return {k: rnd(k, v) for k, v in r.items()}


def progress_note(done: int, total: int, elapsed_s: float) -> str:
    """``step 4/30, 0:41 elapsed, about 4:20 left``: printed before each run, so whoever waits
    (``vnflab notebook-data`` streams these lines) sees how far the bench is and how long it
    still needs (the mean time of the runs so far, times the runs still to go)."""

    def mmss(s: float) -> str:
        return f"{int(s) // 60}:{int(s) % 60:02d}"

    left = f", about {mmss(elapsed_s / done * (total - done))} left" if done else ""
    return f"step {done + 1}/{total}, {mmss(elapsed_s)} elapsed{left}"


def run_inside(spec: BenchSpec, workdir: str, drivers: dict) -> dict:
    """The bench itself (inside the sandbox): interleaved runs of every runnable variant."""
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the socket LB: a socket per flow
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    unavailable = {w: why for w in spec.ways if (why := drivers[w].available(w))}
    runnable = [(w, b) for w, b in spec.variants() if w not in unavailable]
    runs: dict[str, list[dict]] = {}
    sink = "none"
    if runnable:
        bb = open_bed(spec, workdir, drivers, [w for w, _ in runnable])
        sink = bb.sink
        t0 = time.monotonic()  # after the set-up: the ETA is from the runs alone
        try:
            for i in range(spec.runs):
                for j, (way, batch) in enumerate(runnable):  # interleaved: a, b, a, b, ...
                    label = variant_label(way, batch)
                    note = progress_note(
                        i * len(runnable) + j, spec.runs * len(runnable), time.monotonic() - t0
                    )
                    log(f"run {i + 1}/{spec.runs}: {label} ({note})")
                    try:
                        machine_ms = calibrate()
                        r = drivers[way].run(bb, way, batch, f"{way}-{batch}-{i}")
                        r["run"] = i
                        r["machine_ms"] = machine_ms
                    except Exception as exc:  # one bad run must not lose the others
                        r = {"run": i, "error": f"{type(exc).__name__}: {exc}"}
                        log(f"{label}: {r['error']}")
                    runs.setdefault(label, []).append(round_run(r))
        finally:
            bb.close()
    return {"date": started, **summarize(spec, runs, unavailable, sink, drivers)}


def inside_main(spec_path: str, result_path: str) -> int:
    from testbed import sandbox

    drivers = default_drivers()
    return sandbox.serve_module(
        [spec_path, result_path],
        lambda spec, workdir: run_inside(BenchSpec(**spec), workdir, drivers),
    )


def run_bench(spec: BenchSpec, keep_workdir: str | None = None) -> dict:
    """Run the whole bench in one fresh sandbox; return the result dict (or {"error": ...})."""
    from testbed import sandbox

    spec.validate(default_drivers())
    return sandbox.run_module_in_sandbox(
        "bench.runner",
        asdict(spec),
        spec.timeout_s,
        keep_workdir,
        what="bench",
        keep=bool(keep_workdir),
        prefix="vnflab-bench-",
        name="bench-",
    )


if __name__ == "__main__":
    sys.exit(inside_main(*sys.argv[1:]))
