"""Run a DPDK process so that nothing it creates can outlive it: the DPDK layer of
:mod:`testbed.sandbox`.

A DPDK process leaves huge-page files (hugetlbfs) and a runtime directory
(``/var/run/dpdk/<prefix>``: config, fbarrays, mp and telemetry sockets) behind when it is killed.
Here each DPDK process runs in new mount + pid namespaces (``testbed.sandbox`` with ``net=False``;
it keeps the machine's network) where, before it starts:

* a fresh tmpfs covers ``/dev/shm``; ``/dev/shm/run`` becomes its runtime directory
  (``RUNTIME_DIRECTORY``, honoured by EAL) and a fresh hugetlbfs is mounted on ``/dev/shm/huge``
  (``VNFL_DPDK_HUGE_DIR``, which :func:`vnf.dpdk.init` passes as ``--huge-dir`` when it does not
  use ``--in-memory``);
* ``/dev/hugepages`` and ``/var/run/dpdk``, when they exist, are covered by private mounts too,
  so even a program that ignores the above writes only into the namespace.

When the last process of the namespace exits, however it exits, the kernel unmounts all of
it and gives the huge pages back. ``--kill-child`` makes killing the ``unshare`` process kill
the DPDK process too. Needs root (CAP_SYS_ADMIN).

    from testbed import dpdk_sandbox as sandbox
    sandbox.run(["dpdk-testpmd", ...], timeout=30)
    sandbox.run_python("from vnf import dpdk; dpdk.init(...)")
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from testbed import sandbox as _sandbox
from testbed.sandbox import Mount, Setup, leftovers  # noqa: F401  (leftovers: part of this API)

HUGE_DIR = "/dev/shm/huge"
RUN_DIR = "/dev/shm/run"

# Applied inside the new namespaces, before exec'ing the real program.
DPDK = Setup(
    mounts=(
        Mount("/dev/shm", "tmpfs", "mode=0755,size=64m", "vnfl-dpdk-shm"),
        Mount(HUGE_DIR, "hugetlbfs", "pagesize=2M", "vnfl-dpdk-huge"),
        Mount(_sandbox.HUGEPAGES, "hugetlbfs", "pagesize=2M", "vnfl-dpdk-huge", create=False),
        Mount("/var/run/dpdk", "tmpfs", "size=16m", "vnfl-dpdk-run", create=False),
    ),
    dirs=(RUN_DIR,),
    env=(
        ("RUNTIME_DIRECTORY", RUN_DIR),
        ("VNFL_DPDK_HUGE_DIR", HUGE_DIR),
        ("VNFL_DPDK_SANDBOX", "1"),
    ),
)


def command(argv: Sequence[str]) -> list[str]:
    """`argv` wrapped so that it runs inside a private DPDK sandbox."""
    return _sandbox.command(argv, net=False, setup=DPDK)


def popen(argv: Sequence[str], **kw) -> subprocess.Popen:
    """subprocess.Popen of `argv` in a sandbox (kill the Popen to kill everything in it)."""
    return _sandbox.popen(argv, net=False, setup=DPDK, **kw)


def run(
    argv: Sequence[str], timeout: float | None = None, check: bool = False, **kw
) -> subprocess.CompletedProcess:
    """Run `argv` in a sandbox (a timeout kills all of it); stdout/stderr captured as text
    unless given."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return _sandbox.run(argv, timeout, net=False, setup=DPDK, check=check, **kw)


def run_python(
    code: str, timeout: float | None = 60, check: bool = False, **kw
) -> subprocess.CompletedProcess:
    """Run Python `code` (this interpreter, same sys.path) in a sandbox."""
    env = dict(kw.pop("env", None) or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    return run([sys.executable, "-c", code], timeout=timeout, check=check, env=env, **kw)


def inside() -> bool:
    """True when this process runs in a sandbox made by this module."""
    return os.environ.get("VNFL_DPDK_SANDBOX") == "1"
