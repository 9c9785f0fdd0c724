"""What the kernel says about processes, CPUs, interfaces and memory: the readers of /proc.

Every figure the testbed, the bench and the grader measure from OUTSIDE a process comes from
here, so each file is parsed once:

* ``cpu_times``: CPU time of a process and its workers. The exact total is every thread's
  ``sum_exec_runtime`` (/proc/PID/task/TID/schedstat, nanoseconds); /proc/PID/stat's user/sys
  counters move in whole 10 ms ticks and only split that total.
* ``cpu_idle_s``: one CPU's idle time (/proc/stat). With NO_HZ the kernel measures idle time at
  idle entry and exit, so busy = wall - idle is exact even for a core that is never idle long.
  ``core_times``: the whole line (user, system, softirq, steal, ...).
* ``netdev``: interface counters of a process's network namespace (/proc/PID/net/dev).
* ``meminfo``: /proc/meminfo (huge pages, free memory); ``cpu_model``: /proc/cpuinfo.
"""

from __future__ import annotations

import os
from typing import NamedTuple


def proc_stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses): field 0
    is the state, 1 the parent pid, 11 and 12 user and system ticks."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, D, Z, ...), or None when there is none."""
    try:
        return proc_stat_fields(pid)[0]
    except (OSError, IndexError):
        return None


def thread_ids(pid: int) -> list[int]:
    """The thread ids of a process (/proc/PID/task)."""
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


class CpuTimes(NamedTuple):
    """CPU time of a process tree, in seconds (see ``cpu_times``)."""

    user: float  # tick-sampled (/proc/PID/stat): whole 10 ms ticks, good for the split only
    system: float
    exact: float  # every thread's sum_exec_runtime (/proc/PID/task/TID/schedstat): exact ns

    def since(self, earlier: CpuTimes) -> tuple[float, float, float]:
        """(user, sys, total) seconds between ``earlier`` and this reading.

        The total is the exact on-CPU time. The tick counters move in whole 10 ms steps, which
        is +-5 % of a 0.4 s busy window: they only apportion the exact total into user and sys."""
        total = self.exact - earlier.exact
        ticks_user, ticks_sys = self.user - earlier.user, self.system - earlier.system
        if ticks_user + ticks_sys <= 0:
            return 0.0, total, total
        user = total * ticks_user / (ticks_user + ticks_sys)
        return user, total - user, total


def process_tree(pid: int) -> set[int]:
    """``pid`` and all its live descendants (an LB's worker processes)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(proc_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return tree


def cpu_times(pid: int) -> CpuTimes:
    """CPU time of a process and all its live descendants. Per-process figures are consistent;
    per-CPU /proc/stat ones are not for timer-woken processes (see shared notes)."""
    tree = process_tree(pid)
    if not os.path.exists(f"/proc/{pid}"):
        raise RuntimeError(f"process {pid} is gone")
    user = system = exact_ns = 0
    for p in tree:
        try:
            fields = proc_stat_fields(p)
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    exact_ns += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # exited between the listing and the reading
        user += int(fields[11])
        system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return CpuTimes(user / tick, system / tick, exact_ns / 1e9)


def process_cpu_seconds(pid: int) -> float:
    """Exact on-CPU seconds of a process, its threads and its workers."""
    return cpu_times(pid).exact


class CoreTimes(NamedTuple):
    """One CPU's time by kind, in seconds since boot (a ``cpuN`` line of /proc/stat)."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float  # a VM's CPU taken by the hypervisor


def core_times(cpu: int) -> CoreTimes:
    """What one CPU spent its time on (/proc/stat). softirq is the kernel's deferred packet
    work (a veth hand-off, a bridge, TCP receive) when it runs outside any process's time."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) / tick for x in line.split()[1:9]]
                return CoreTimes(*v)
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def cpu_idle_s(cpu: int) -> float:
    """Idle + iowait seconds of one CPU (/proc/stat; NO_HZ measures these at idle entry/exit)."""
    t = core_times(cpu)
    return t.idle + t.iowait


def netdev(pid: int | str = "self") -> dict[str, dict[str, int]]:
    """Interface counters of the network namespace of ``pid`` (/proc/PID/net/dev)."""
    out = {}
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f.readlines()[2:]:
            name, rest = line.split(":", 1)
            v = [int(x) for x in rest.split()]
            out[name.strip()] = {
                "rx_packets": v[1],
                "rx_dropped": v[3],
                "tx_packets": v[9],
                "tx_dropped": v[11],
            }
    return out


def meminfo(proc_root: str = "/proc") -> dict[str, int]:
    """/proc/meminfo as {key: number} (kB for sizes, a count for HugePages_*); empty when it
    cannot be read. ``proc_root`` lets ``vnflab doctor`` read a stand-in in its tests."""
    out = {}
    try:
        with open(os.path.join(proc_root, "meminfo")) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key.strip()] = int(parts[0])
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or "" when there is none (some ARM kernels)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        return ""
