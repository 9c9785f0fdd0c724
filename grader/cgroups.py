"""One control group per jailed process tree: what bounds it, what it cost, and how it ends.

A submission's LB may fork, double-fork a daemon, allocate in many processes, in ``memfd`` or
in tmpfs. Per-process limits (prlimit) see none of that; a cgroup sees the whole tree, whatever
it does with its parent links:

* **memory** caps every page the group touches, tmpfs and shared memory included (v1 charges
  a shmem page to the group that first touches it), with ``memsw`` (swap) when the kernel has it;
* **pids** caps tasks (threads too): a fork bomb stops at ``pids.max``, in its own group only;
* **cpu / cpuacct**: a CPU quota, and ``cpuacct.usage``, the exact CPU nanoseconds of every task
  that ever ran in the group (detached daemons included; never goes backwards);
* **freezer**: stop is *freeze, SIGKILL every task, thaw*: nothing can fork away meanwhile;
* **hugetlb** (cgroup2 on this machine kind, when it offers it): huge pages only for the DPDK
  lab, and only as many as its EAL memory.

Groups are named ``vnflab/<grading>/<n>`` in every hierarchy used: neutral names (a jailed
process could read its own cgroup path; it runs in a cgroup namespace, too). ``remove_grading``
takes a grading's groups down at its end, whatever happened; ``sweep_stale`` removes those of
gradings that crashed before they could.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass

from grader.errors import GradeError

PREFIX = "vnflab"
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
HUGE_PAGE_SIZES = ("2MB", "1GB")


class CgroupError(GradeError):
    """A cgroup step failed: the jail is not built, the grading stops as a grader error."""


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise CgroupError(f"cgroup: cannot write {value!r} to {path}: {exc.strerror}") from None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def hierarchies() -> dict[str, str]:
    """controller -> mount point of the cgroup v1 hierarchy that has it (co-mounted controllers,
    e.g. ``cpu,cpuacct``, share one), and ``"unified"`` -> the cgroup2 mount, from the mount
    table. Raises when a v1 controller the jail needs is not mounted."""
    found: dict[str, str] = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, where, fstype, opts = line.split()[:4]
            if fstype == "cgroup":
                for ctl in V1_CONTROLLERS:
                    if ctl in opts.split(",") and ctl not in found:
                        found[ctl] = where
            elif fstype == "cgroup2" and "unified" not in found:
                found["unified"] = where
    missing = [c for c in V1_CONTROLLERS if c not in found]
    if missing:
        raise CgroupError(f"cgroup v1 controller(s) not mounted: {', '.join(missing)}")
    return found


def unified_hugetlb(mounts: dict[str, str]) -> str | None:
    """The cgroup2 mount when it offers the hugetlb controller, else None."""
    root = mounts.get("unified")
    if not root:
        return None
    try:
        return (
            root if "hugetlb" in _read(os.path.join(root, "cgroup.controllers")).split() else None
        )
    except OSError:
        return None


@dataclass(frozen=True)
class Bounds:
    """What one group may use."""

    memory_mb: int
    processes: int
    cpu_cores: float | None = 1.0  # a CFS quota; None: no quota
    hugepages_mb: int = 0  # 0: no huge pages at all


class Cgroup:
    """``vnflab/<grading>/<name>`` in every hierarchy the jail uses; ``create()`` makes it with
    its bounds, a process joins it by writing its pid to each of ``procs_files()``."""

    def __init__(self, grading: str, name: str, bounds: Bounds):
        self.grading, self.name, self.bounds = grading, name, bounds
        self.mounts = hierarchies()
        self.hugetlb_root = unified_hugetlb(self.mounts)
        rel = os.path.join(PREFIX, grading, name)
        self.dirs = {ctl: os.path.join(self.mounts[ctl], rel) for ctl in V1_CONTROLLERS}
        self.unified = os.path.join(self.hugetlb_root, rel) if self.hugetlb_root else None

    def distinct_dirs(self) -> list[str]:
        out = list(dict.fromkeys(self.dirs.values()))
        return out + ([self.unified] if self.unified else [])

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.distinct_dirs()]

    @property
    def hugetlb_note(self) -> str:
        """Why huge pages are (not) bounded by a cgroup here: for the report and the docs."""
        if self.hugetlb_root:
            return f"hugetlb: {self.bounds.hugepages_mb} MB via cgroup2 ({self.hugetlb_root})"
        return "hugetlb: no cgroup controller on this machine (bounded by EAL -m and the pool)"

    def create(self) -> Cgroup:
        if any(os.path.isdir(d) for d in self.distinct_dirs()):
            self.remove()  # a stale group of the same name: not reused
        for d in dict.fromkeys(self.dirs.values()):
            try:
                os.makedirs(d)
            except OSError as exc:
                raise CgroupError(f"cgroup: cannot create {d}: {exc.strerror}") from None
        b = self.bounds
        mem = str(int(b.memory_mb) << 20)
        _write(os.path.join(self.dirs["memory"], "memory.limit_in_bytes"), mem)
        memsw = os.path.join(self.dirs["memory"], "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # no swapping out of the cap either
            _write(memsw, mem)
        _write(os.path.join(self.dirs["pids"], "pids.max"), str(int(b.processes)))
        if b.cpu_cores:
            _write(os.path.join(self.dirs["cpu"], "cpu.cfs_period_us"), "100000")
            _write(
                os.path.join(self.dirs["cpu"], "cpu.cfs_quota_us"), str(int(b.cpu_cores * 100000))
            )
        if self.unified:
            self._create_hugetlb()
        return self

    def _create_hugetlb(self) -> None:
        """cgroup2: hugetlb must be enabled in the subtree_control of every level above the
        leaf (``+hugetlb`` is idempotent; the root's only enables the controller below it)."""
        root = self.hugetlb_root
        assert root is not None and self.unified is not None, "create() calls it with cgroup2 only"
        path = root
        for part in (PREFIX, self.grading, self.name):
            _write(os.path.join(path, "cgroup.subtree_control"), "+hugetlb")
            path = os.path.join(path, part)
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise CgroupError(f"cgroup: cannot create {path}: {exc.strerror}") from None
        for size in HUGE_PAGE_SIZES:
            limit = os.path.join(self.unified, f"hugetlb.{size}.max")
            if os.path.exists(limit):
                mb = self.bounds.hugepages_mb if size == "2MB" else 0
                _write(limit, str(int(mb) << 20))

    # --- what it cost, who is in it -------------------------------------------------------------
    def cpu_ns(self) -> int:
        """Exact CPU nanoseconds of every task that ran in the group (monotonic)."""
        return int(_read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage")))

    def memory_peak(self) -> int:
        return int(_read(os.path.join(self.dirs["memory"], "memory.max_usage_in_bytes")))

    def oom_kills(self) -> int:
        """How often the memory cap was hit (allocations refused or tasks OOM-killed)."""
        return int(_read(os.path.join(self.dirs["memory"], "memory.failcnt")))

    def pids(self) -> list[int]:
        """Tasks in the group (processes; from the freezer hierarchy, as seen from here)."""
        out: set[int] = set()
        for d in self.distinct_dirs():
            try:
                out.update(int(x) for x in _read(os.path.join(d, "cgroup.procs")).split())
            except OSError:
                pass
        out.discard(0)  # tasks of pid namespaces we cannot see
        return sorted(out)

    # --- the end -------------------------------------------------------------------------------
    def kill(self, timeout: float = 10.0) -> None:
        """Freeze the group (nothing forks or exits meanwhile), SIGKILL every task, thaw, and
        wait until it is empty."""
        freezer = self.dirs["freezer"]
        if not os.path.isdir(freezer):
            return
        state = os.path.join(freezer, "freezer.state")
        deadline = time.monotonic() + timeout
        _write(state, "FROZEN")
        while _read(state).strip() != "FROZEN" and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _write(state, "THAWED")
        while self.pids():
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name}: tasks {self.pids()} survived SIGKILL")
            for pid in self.pids():  # forked between the read and the freeze
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self, timeout: float = 10.0) -> None:
        """Kill what is left and remove the group from every hierarchy."""
        self.kill(timeout)
        for d in reversed(self.distinct_dirs()):
            _rmdir(d, timeout)


def _rmdir(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY: the last task is still exiting
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"cgroup: cannot remove {path}: {exc.strerror}") from None
            time.sleep(0.02)


def _grading_roots() -> list[str]:
    """``vnflab`` in every hierarchy (v1 and the cgroup2 mount)."""
    try:
        mounts = hierarchies()
    except CgroupError:
        return []
    roots = {os.path.join(p, PREFIX) for p in mounts.values()}
    return sorted(r for r in roots if os.path.isdir(r))


def remove_grading(grading: str) -> None:
    """Every group of one grading, killed and removed (its end, error or not). Idempotent."""
    names: set[str] = set()
    for root in _grading_roots():
        g = os.path.join(root, grading)
        if os.path.isdir(g):
            names.update(n for n in os.listdir(g) if os.path.isdir(os.path.join(g, n)))
    for name in sorted(names):
        Cgroup(grading, name, Bounds(0, 0)).remove()
    for root in _grading_roots():
        _rmdir(os.path.join(root, grading))


def sweep_stale(alive) -> list[str]:
    """Remove the groups of gradings for which ``alive(grading)`` is False (a crashed grading
    left them); returns their names. Run before a grading starts: a stale group never breaks
    the next one."""
    stale: set[str] = set()
    for root in _grading_roots():
        stale.update(
            g for g in os.listdir(root) if os.path.isdir(os.path.join(root, g)) and not alive(g)
        )
    for g in sorted(stale):
        remove_grading(g)
    return sorted(stale)
