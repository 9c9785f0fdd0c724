"""Run a command in fresh Linux namespaces, so that nothing it creates can outlive it.

Why namespaces and not a careful ``finally:``: a student's LB can crash, hang or be killed with
SIGKILL, and Ctrl-C can land anywhere. With ``unshare --pid --mount --fork --kill-child`` (plus
``--net`` unless told otherwise):

* every interface, bridge and Mininet host lives in a fresh network namespace, which the kernel
  deletes (with all its veths) when its last process exits;
* every process (Mininet host shells, servers, the LB, ovs-vswitchd, testpmd) is inside a fresh
  PID namespace; when its init dies the kernel SIGKILLs all of them, and ``--kill-child`` makes
  init die when the ``unshare`` parent does;
* ``/dev/hugepages``, ``/var/run/dpdk`` and ``/var/run/openvswitch`` are re-mounted privately, so
  huge-page files, DPDK runtime dirs and OVS sockets vanish with the mount namespace (a DPDK
  process leaves huge-page files and ``/var/run/dpdk/<prefix>`` behind when it is killed).

Two runs never collide (Mininet in the same namespace twice fails with "File exists"), and
``mn -c`` — which cleans the whole machine — is never needed.

One mechanism, two uses:

* **a whole experiment** (``net=True``, the default; ``testbed.sandbox`` re-exports this module):
  the program inside calls :func:`setup_inside` first, which applies :data:`EXPERIMENT` (private
  tmpfs on the DPDK/OVS run dirs, a private hugetlbfs on ``/dev/hugepages``, loopback up).
* **a lone DPDK process** (``net=False`` with a :class:`Setup` applied *before* the program
  starts, by a small shell prelude): ``testbed.dpdk_sandbox`` is that layer (private ``/dev/shm``
  runtime dir and hugetlbfs, and the environment ``vnf.dpdk.init`` reads).

This lives in ``vnf/`` (not ``vnflab/``) because the NF library's DPDK layer needs it and
``vnf`` never imports the orchestration package. Needs root (CAP_SYS_ADMIN).

:func:`run_module_in_sandbox` / :func:`serve_module` are the "write a spec, re-run a module in a
sandbox, read its result" pattern of the experiment, the bench and the scenarios.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

UNSHARE = [
    "unshare",
    "--net",
    "--pid",
    "--mount",
    "--propagation",
    "private",
    "--fork",
    "--kill-child",
    "--mount-proc",
]

PRIVATE_TMPFS = ("/var/run/dpdk", "/var/run/openvswitch", "/var/log/openvswitch", "/run/netns")
HUGEPAGES = "/dev/hugepages"
ENV_FLAG = "VNFLAB_SANDBOX"  # "1" inside a net sandbox made here (setup_inside allowed)


class SandboxError(RuntimeError):
    pass


@dataclass(frozen=True)
class Mount:
    """One private mount. ``create``: make the mount point if missing; otherwise mount only
    when it already exists (so a sandbox never litters the host with empty directories)."""

    target: str
    fstype: str  # "tmpfs" or "hugetlbfs"
    options: str
    source: str = "none"
    create: bool = True

    def shell(self) -> str:
        mount = (
            f"mount -t {self.fstype} -o {shlex.quote(self.options)} "
            f"{shlex.quote(self.source)} {shlex.quote(self.target)}"
        )
        if self.create:
            return f"mkdir -p {shlex.quote(self.target)}\n{mount}"
        return f"if [ -d {shlex.quote(self.target)} ]; then {mount}; fi"


@dataclass(frozen=True)
class Setup:
    """What a sandbox makes private: mounts (in order), directories, environment, loopback."""

    mounts: tuple[Mount, ...] = ()
    dirs: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    loopback: bool = False  # bring lo up (it is down in a fresh network namespace)

    def script(self) -> str:
        lines = ["set -e"] + [m.shell() for m in self.mounts]
        lines += [f"mkdir -p {shlex.quote(d)}" for d in self.dirs]
        if self.loopback:
            lines.append("ip link set lo up")
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.env]
        return "\n".join(lines) + "\n"


# A whole experiment: private run state for DPDK and OVS; a private hugetlbfs instance, whose
# files are freed when this mount namespace goes away.
EXPERIMENT = Setup(
    mounts=tuple(Mount(p, "tmpfs", "size=64m,mode=755", "tmpfs") for p in PRIVATE_TMPFS)
    + (Mount(HUGEPAGES, "hugetlbfs", "pagesize=2M", "nodev"),),
    loopback=True,
)


def can_sandbox() -> str | None:
    """None when sandboxes work here, else the reason (not root, no unshare)."""
    if os.geteuid() != 0:
        return "vnflab needs root to create network namespaces (run it with sudo)"
    if not shutil.which("unshare"):
        return "unshare not found (apt-get install util-linux)"
    return None


def in_sandbox() -> bool:
    """True inside a net sandbox made by :func:`run` / :func:`popen` (``net=True``)."""
    return os.environ.get(ENV_FLAG) == "1"


def command(argv: Sequence[str], *, net: bool = True, setup: Setup | None = None) -> list[str]:
    """The command line that runs ``argv`` in a fresh sandbox; with ``setup``, a shell prelude
    applies it inside the namespaces before exec'ing ``argv``."""
    unshare = [a for a in UNSHARE if net or a != "--net"]
    if setup is None:
        return [*unshare, "--", *argv]
    return [*unshare, "--", "/bin/sh", "-c", setup.script() + 'exec "$@"\n', "vnfl-sandbox", *argv]


def sandboxed(argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in a fresh net + pid + mount sandbox."""
    return command(argv)


def _env(env: dict | None, net: bool) -> dict:
    full = dict(os.environ if env is None else env)
    if net:
        full[ENV_FLAG] = "1"
    return full


def popen(
    argv: Sequence[str],
    *,
    net: bool = True,
    setup: Setup | None = None,
    env: dict | None = None,
    **kwargs,
) -> subprocess.Popen:
    """subprocess.Popen of ``argv`` in a sandbox (kill the Popen to kill everything in it)."""
    return subprocess.Popen(command(argv, net=net, setup=setup), env=_env(env, net), **kwargs)


def run(
    argv: Sequence[str],
    timeout: float | None = None,
    env: dict | None = None,
    *,
    net: bool = True,
    setup: Setup | None = None,
    check: bool = False,
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run ``argv`` in a fresh sandbox; on timeout (or Ctrl-C) the whole sandbox is killed
    (nothing survives) and the exception is raised."""
    reason = can_sandbox()
    if reason:
        raise SandboxError(reason)
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    proc = popen(argv, net=net, setup=setup, env=env, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        assert timeout is not None  # only a timeout can expire
        raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
    except BaseException:  # Ctrl-C: take the sandbox down, then re-raise
        _kill_group(proc)
        proc.wait()
        raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_interactive(argv: Sequence[str], env: dict | None = None) -> int:
    """Run ``argv`` in a fresh sandbox *in the foreground of the user's terminal* (``vnflab
    shell``); return its exit code.

    :func:`run` puts the sandbox in a session of its own, so a Ctrl-C meant for the caller
    takes it down and it never owns the terminal. An interactive program inside must instead
    stay in the terminal's foreground process group, with stdin/stdout/stderr the user's tty:
    then Ctrl-C reaches *it* (Mininet's CLI interrupts the command running on a host) and its
    line editing works. So no new session here, and the caller ignores SIGINT while it waits
    (``unshare`` ignores it too). Everything inside still dies with the sandbox: when the
    program exits, when ``unshare`` is killed (``--kill-child``), or when the terminal goes
    away (the program gets SIGHUP)."""
    reason = can_sandbox()
    if reason:
        raise SandboxError(reason)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = popen(argv, env=env)
        try:
            return proc.wait()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
    finally:
        signal.signal(signal.SIGINT, previous)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # unshare dies -> --kill-child -> PID ns init dies
    except ProcessLookupError:
        pass


def setup_inside() -> None:
    """Called first thing inside the sandbox: private mounts for DPDK and OVS run state."""
    if not in_sandbox():
        raise SandboxError("setup_inside() called outside a vnflab sandbox")
    subprocess.run(["/bin/sh", "-c", EXPERIMENT.script()], check=True)


def leftovers() -> list[str]:
    """Files DPDK left in the machine-wide places (should always be empty)."""
    found = []
    for d in (HUGEPAGES, "/var/run/dpdk"):
        if os.path.isdir(d):
            for root, dirs, files in os.walk(d):
                found += [os.path.join(root, x) for x in dirs + files]
    return found


def reexec_in_sandbox(timeout: float) -> int:
    """Re-run this very command line (``python -m ...``) inside a sandbox; return its exit code."""
    argv = (
        [sys.executable, *sys.orig_argv[1:]]
        if hasattr(sys, "orig_argv")
        else [sys.executable, *sys.argv]
    )
    try:
        return run(argv, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(
            f"vnflab: run exceeded {timeout:.0f} s and was stopped; the sandbox was torn down",
            file=sys.stderr,
        )
        return 124


# --- a module re-run in a sandbox: spec JSON in, result JSON out -------------------------------


def run_module_in_sandbox(
    module: str,
    spec: dict,
    timeout: float,
    workdir: str | None = None,
    *,
    what: str = "run",
    keep: bool = False,
    prefix: str = "vnflab-run-",
    name: str = "",
) -> dict:
    """Write ``spec`` to ``WORKDIR/{name}spec.json``, run ``python -m MODULE SPEC RESULT`` in a
    fresh sandbox (its ``main`` is :func:`serve_module`) and return the result dict it wrote.

    A sandbox that timed out or wrote no result comes back as ``{"error": ..., "workdir": ...}``
    (the message names ``what``), and its workdir is kept for the logs; with ``keep=True`` it is
    always kept. Otherwise a successful run's workdir (a fresh temporary one when ``workdir`` is
    None) is removed."""
    workdir = workdir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(workdir, exist_ok=True)
    spec_path = os.path.join(workdir, f"{name}spec.json")
    result_path = os.path.join(workdir, f"{name}result.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    try:
        proc = run([sys.executable, "-m", module, spec_path, result_path], timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "error": f"{what} exceeded {timeout:.0f} s and was stopped; logs in {workdir}",
            "workdir": workdir,
        }
    try:
        with open(result_path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return {
            "error": f"{what} failed (exit {proc.returncode}) without a result; logs in {workdir}",
            "workdir": workdir,
        }
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def serve_module(argv: Sequence[str], work: Callable[[dict, str], dict]) -> int:
    """The inside half of :func:`run_module_in_sandbox`: ``argv`` is ``SPEC RESULT``.
    :func:`setup_inside`, then ``work(spec, workdir)``; its result is written atomically."""
    spec_path, result_path = argv
    setup_inside()
    with open(spec_path) as f:
        spec = json.load(f)
    result = work(spec, os.path.dirname(os.path.abspath(result_path)))
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.rename(result_path + ".tmp", result_path)
    return 0
