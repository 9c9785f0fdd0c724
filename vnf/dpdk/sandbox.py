"""Run a DPDK process so that nothing it creates can outlive it.

A DPDK process leaves huge-page files (hugetlbfs) and a runtime directory
(``/var/run/dpdk/<prefix>``: config, fbarrays, mp and telemetry sockets) behind when it is killed.
Here each DPDK process runs in new mount + pid namespaces (``unshare``) where, before it starts:

* a fresh tmpfs covers ``/dev/shm``; ``/dev/shm/run`` becomes its runtime directory
  (``RUNTIME_DIRECTORY``, honoured by EAL) and a fresh hugetlbfs is mounted on ``/dev/shm/huge``
  (``VNFL_DPDK_HUGE_DIR``, which :func:`vnf.dpdk.init` passes as ``--huge-dir`` when it does not
  use ``--in-memory``);
* ``/dev/hugepages`` and ``/var/run/dpdk``, when they exist, are covered by private mounts too,
  so even a program that ignores the above writes only into the namespace.

When the last process of the namespace exits, however it exits, the kernel unmounts all of
it and gives the huge pages back. ``--kill-child`` makes killing the ``unshare`` process kill
the DPDK process too. Needs root (CAP_SYS_ADMIN).

    from vnf.dpdk import sandbox
    sandbox.run(["dpdk-testpmd", ...], timeout=30)
    sandbox.run_python("from vnf import dpdk; dpdk.init(...)")
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

HUGE_DIR = "/dev/shm/huge"
RUN_DIR = "/dev/shm/run"

# Runs inside the new namespaces, before exec'ing the real program ("$@").
_SETUP = r"""
set -e
mount -t tmpfs -o mode=0755,size=64m vnfl-dpdk-shm /dev/shm
mkdir -p /dev/shm/run /dev/shm/huge
mount -t hugetlbfs -o pagesize=2M vnfl-dpdk-huge /dev/shm/huge
if [ -d /dev/hugepages ]; then mount -t hugetlbfs -o pagesize=2M vnfl-dpdk-huge /dev/hugepages; fi
if [ -d /var/run/dpdk ]; then mount -t tmpfs -o size=16m vnfl-dpdk-run /var/run/dpdk; fi
export RUNTIME_DIRECTORY=/dev/shm/run VNFL_DPDK_HUGE_DIR=/dev/shm/huge VNFL_DPDK_SANDBOX=1
exec "$@"
"""


def command(argv: Sequence[str]) -> list[str]:
    """`argv` wrapped so that it runs inside a private DPDK sandbox."""
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--kill-child", "--mount-proc", "--", "/bin/sh", "-c", _SETUP, "vnfl-dpdk-sandbox",
            *argv]


def popen(argv: Sequence[str], **kw) -> subprocess.Popen:
    """subprocess.Popen of `argv` in a sandbox (kill the Popen to kill everything in it)."""
    return subprocess.Popen(command(argv), **kw)


def run(argv: Sequence[str], timeout: float | None = None, check: bool = False,
        **kw) -> subprocess.CompletedProcess:
    """subprocess.run of `argv` in a sandbox; stdout/stderr captured as text unless given."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(command(argv), timeout=timeout, check=check, **kw)


def run_python(code: str, timeout: float | None = 60, check: bool = False,
               **kw) -> subprocess.CompletedProcess:
    """Run Python `code` (this interpreter, same sys.path) in a sandbox."""
    env = dict(kw.pop("env", None) or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    return run([sys.executable, "-c", code], timeout=timeout, check=check, env=env, **kw)


def inside() -> bool:
    """True when this process runs in a sandbox made by this module."""
    return os.environ.get("VNFL_DPDK_SANDBOX") == "1"


def leftovers() -> list[str]:
    """Files DPDK left in the machine-wide places (should always be empty)."""
    found = []
    for d in ("/dev/hugepages", "/var/run/dpdk"):
        if os.path.isdir(d):
            for root, dirs, files in os.walk(d):
                found += [os.path.join(root, x) for x in dirs + files]
    return found
