"""The machine under the bench: what it is, and how fast its LB core is right now.

On a shared VM the same code takes different time from one minute to the next. The bench
measures that drift with a fixed workload before every run and prints its CV next to the ways':
no packet path that touches memory can be steadier than the machine under it.
"""

from __future__ import annotations

import os
import platform
import time

from bench.spec import GEN_CPU, LB_CPU
from testbed.procfs import cpu_model


def calibrate(cpu: int = LB_CPU) -> float:
    """How fast the LB's core is right now: CPU milliseconds for a FIXED memory-bound workload
    (20 passes of random cache-line updates over 16 MiB, the size of an RX ring) pinned on
    ``cpu``, run between the ways' runs while that core is free. On a shared VM the answer
    drifts (measured: CV 11-13 % for this very workload, whatever runs on the other core), and
    no packet path that touches memory can be steadier than the machine under it: the bench
    prints this CV next to the ways'."""
    import numpy as np

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        buf = np.zeros(16 << 20, dtype=np.uint8)
        lines = np.random.default_rng(1).integers(0, len(buf) // 64, 200_000) * 64
        buf[lines] += 1  # fault the pages in: not timed
        t0 = time.thread_time_ns()
        for _ in range(20):
            buf[lines] += 1
        return (time.thread_time_ns() - t0) / 1e6
    finally:
        os.sched_setaffinity(0, before)


CALIBRATION = (
    "CPU ms of a fixed memory-bound workload (20 passes of random cache-line "
    "updates over 16 MiB) on the LB core before each run"
)


def machine_info() -> dict:
    """Cores, kernel, CPU model, Python, and which core does what in the bench."""
    return {
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "gen_cpu": GEN_CPU,
        "lb_cpu": LB_CPU,
    }
