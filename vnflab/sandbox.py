"""Run an experiment in its own network, PID and mount namespaces, so cleanup cannot be forgotten.

Why namespaces and not a careful ``finally:``: a student's LB can crash, hang or be killed with
SIGKILL, and Ctrl-C can land anywhere. With ``unshare --net --pid --mount --fork --kill-child``:

* every interface, bridge and Mininet host lives in a fresh network namespace, which the kernel
  deletes (with all its veths) when its last process exits;
* every process (Mininet host shells, servers, the LB, ovs-vswitchd, testpmd) is inside a fresh
  PID namespace; when its init dies the kernel SIGKILLs all of them, and ``--kill-child`` makes
  init die when the ``unshare`` parent does;
* ``/dev/hugepages``, ``/var/run/dpdk`` and ``/var/run/openvswitch`` are re-mounted privately, so
  huge-page files, DPDK runtime dirs and OVS sockets vanish with the mount namespace.

Two runs never collide (Mininet in the same namespace twice fails with "File exists"), and
``mn -c`` — which cleans the whole machine — is never needed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

UNSHARE = ["unshare", "--net", "--pid", "--mount", "--propagation", "private",
           "--fork", "--kill-child", "--mount-proc"]

PRIVATE_TMPFS = ("/var/run/dpdk", "/var/run/openvswitch", "/var/log/openvswitch", "/run/netns")
HUGEPAGES = "/dev/hugepages"


class SandboxError(RuntimeError):
    pass


def can_sandbox() -> str | None:
    """None when sandboxes work here, else the reason (not root, no unshare)."""
    if os.geteuid() != 0:
        return "vnflab needs root to create network namespaces (run it with sudo)"
    if not shutil.which("unshare"):
        return "unshare not found (apt-get install util-linux)"
    return None


def in_sandbox() -> bool:
    return os.environ.get("VNFLAB_SANDBOX") == "1"


def sandboxed(argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in a fresh sandbox."""
    return [*UNSHARE, "--", *argv]


def run(argv: list[str], timeout: float, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` in a fresh sandbox; on timeout the whole sandbox is killed (nothing survives)."""
    reason = can_sandbox()
    if reason:
        raise SandboxError(reason)
    full_env = dict(os.environ if env is None else env, VNFLAB_SANDBOX="1")
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    proc = subprocess.Popen(sandboxed(argv), env=full_env, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
    except BaseException:       # Ctrl-C: take the sandbox down, then re-raise
        _kill_group(proc)
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # unshare dies -> --kill-child -> PID ns init dies
    except ProcessLookupError:
        pass


def setup_inside() -> None:
    """Called first thing inside the sandbox: private mounts for DPDK and OVS run state."""
    if not in_sandbox():
        raise SandboxError("setup_inside() called outside a vnflab sandbox")
    for path in PRIVATE_TMPFS:
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=755", "tmpfs", path], check=True)
    os.makedirs(HUGEPAGES, exist_ok=True)
    # A private hugetlbfs instance: its files are freed when this mount namespace goes away.
    subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", HUGEPAGES], check=True)
    # Loopback is down in a fresh network namespace.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def reexec_in_sandbox(timeout: float) -> int:
    """Re-run this very command line (``python -m ...``) inside a sandbox; return its exit code."""
    argv = [sys.executable, *sys.orig_argv[1:]] if hasattr(sys, "orig_argv") else [sys.executable, *sys.argv]
    try:
        return run(argv, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"vnflab: run exceeded {timeout:.0f} s and was stopped; the sandbox was torn down",
              file=sys.stderr)
        return 124
