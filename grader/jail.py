"""The jail a submission's process (and the reference's) runs in: one per start, built from an
allow-list, failing closed.

``Jail(...).popen(argv)`` runs ``argv`` like this (every step ``exec``s the next)::

    sh   (root)  join the start's cgroups: $$ -> cgroup.procs        grader.cgroups
    nsenter --net=<the Mininet host's netns>                          (LB starts only)
    unshare --pid --fork --kill-child --ipc --cgroup --mount          new PID/IPC/cgroup/mount ns
    sh   (root, pid 1)  a new root on a tmpfs, holding only:
           /usr (and /bin /lib ... as the host has them), /etc, the venv     read-only binds
           /vnflab/code  the overlay this start runs                         read-only bind
           /vnflab/run   this start's run dir (a fresh tmpfs: config.json read-only, out/ its own)
           /dev  null zero full random urandom, a private /dev/shm (capped)
           /proc (its own PID namespace), /sys (read-only), /tmp (private, capped)
           and what the start asks for (lab 3: the vhost-user socket dir, /dev/hugepages)
         pivot_root into it, the old root detached
    setpriv --reuid --regid --clear-groups --no-new-privs [the way's caps]   drop privileges
    prlimit  ...                                                            second line of limits
    env -i  PATH=... PYTHONPATH=/vnflab/code ...                            a clean environment
    python -m vnf.ways.<way>_lb ...        pid 1 of its PID namespace; stdin /dev/null

The process joins its cgroups *before* it drops privileges, and the root is switched before
any student code runs; the checkout, the other overlay (the reference), the grading's work dir,
the plan and facts, other gradings, /root, /home and /var/lib/vnflab are simply not in it.
Any mount or cgroup step that fails stops the start before student code runs (exit 125 and no
``jail.ok`` in the run dir): ``JailError``, a grader error, never a silently weaker jail.

The LB is pid 1 of its namespace: the kernel delivers the grader's SIGTERM and SIGUSR1 to it
once it has handlers for them (the way contract installs both), and when it exits every other
process of the namespace dies with it. Stopping is the cgroup's: freeze, SIGKILL all, thaw.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import sys
import time

from grader import cgroups
from grader.cgroups import Bounds, Cgroup
from grader.errors import GradeError
from grader.sandbox_user import user_ids

CODE = "/vnflab/code"  # the overlay, inside the jail
RUN = "/vnflab/run"  # the run dir, inside: config.json + out/
OUT = RUN + "/out"  # the only directory the jailed user may write (and /tmp)
SETUP_FAILED = 125  # exit code of a jail whose set-up failed
OK_FILE = "jail.ok"  # written by root in the run dir once the jail stands
DEVICES = ("null", "zero", "full", "random", "urandom")
_names = itertools.count(1)


class JailError(GradeError):
    """The jail could not be built: the grading stops with a grader error."""


def _mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if r.returncode:
        raise JailError(f"jail: mount {' '.join(args)} failed: {r.stderr.strip()}")


class Jail:
    """One start's jail. ``binds``: inside path -> host path, read-only; ``rw_binds`` the same,
    writable (lab 3's socket dir). ``netns_pid``: enter that process's network namespace (a
    Mininet host's). ``files``: name -> text, put read-only in the run dir (the LB's config).
    Everything lives under ``WORKDIR/jails/<n>`` (root-only) and goes away with
    ``destroy()``; ``grading`` names the grading's cgroups (``grader.cgroups``)."""

    def __init__(
        self,
        grading: str,
        workdir: str,
        *,
        user: str,
        limits: dict,
        caps: tuple[str, ...] = (),
        binds: dict[str, str] | None = None,
        rw_binds: dict[str, str] | None = None,
        hugepages: bool = False,
        netns_pid: int | None = None,
        files: dict[str, str] | None = None,
    ):
        # A neutral name per start ("3"), never the phase: a jailed process must not learn
        # which test it is in (its cgroup path would tell it).
        self.name = str(next(_names))
        self.base = os.path.join(workdir, "jails", self.name)
        self.user, self.limits = user, limits
        self.caps, self.netns_pid, self.hugepages = tuple(caps), netns_pid, hugepages
        self.binds, self.rw_binds = dict(binds or {}), dict(rw_binds or {})
        self.files = dict(files or {})
        self.root = os.path.join(self.base, "root")
        self.run_dir = os.path.join(self.base, "run")
        lim = limits
        self.cgroup = Cgroup(
            grading,
            self.name,
            Bounds(
                memory_mb=int(lim.get("memory_mb", 1536)),
                processes=int(lim.get("processes", 64)),
                cpu_cores=float(lim.get("cpu_cores", 1.0)) or None,
                hugepages_mb=int(lim.get("hugepages_mb", 0)) if hugepages else 0,
            ),
        )
        self.proc: subprocess.Popen | None = None
        self._lb_pid: int | None = None
        self._built = False

    # --- the host side ------------------------------------------------------------------------
    def out_path(self, name: str) -> str:
        """Where the grader finds OUT/name (the jailed process's ready and stats files)."""
        return os.path.join(self.run_dir, "out", name)

    def build(self) -> None:
        """The cgroup and the run dir: a fresh, capped tmpfs (no file from an earlier start can
        be in it), root-owned, with the files read-only and ``out/`` the jailed user's."""
        from testbed import sandbox

        if not sandbox.in_sandbox():
            raise JailError(
                "jail: only inside a grading sandbox (its mount namespace is the "
                "one the run dirs are mounted in)"
            )
        uid, gid = user_ids(self.user)
        os.makedirs(os.path.dirname(self.base), mode=0o700, exist_ok=True)
        os.makedirs(self.root, mode=0o700)
        os.makedirs(self.run_dir, mode=0o700)
        self._built = True
        self.cgroup.create()
        _mount(
            "-t",
            "tmpfs",
            "-o",
            f"size={int(self.limits.get('run_dir_mb', 16))}m,mode=755,nosuid,nodev,noexec",
            "vnflab-run",
            self.run_dir,
        )
        for name, text in self.files.items():
            path = os.path.join(self.run_dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o444)
        out = os.path.join(self.run_dir, "out")
        os.mkdir(out, 0o700)
        os.chown(out, uid, gid)

    def command(self, argv: list[str], env: dict | None = None) -> list[str]:
        """The command line that runs ``argv`` in this jail (``build()`` first)."""
        q = shlex.quote
        fail = f'fail() {{ echo "vnflab-jail: $*" >&2; exit {SETUP_FAILED}; }}\n'
        join = "".join(
            f'echo $$ > {q(p)} || fail "cannot join the cgroup {p}"\n'
            for p in self.cgroup.procs_files()
        )
        unshare = [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--ipc",
            "--cgroup",
            "--mount",
            "--propagation",
            "private",
            "--",
        ]
        if self.netns_pid:
            unshare = ["nsenter", f"--net=/proc/{self.netns_pid}/ns/net", "--", *unshare]
        inner = fail + self._root_script() + self._drop_script(env)
        outer = (
            fail
            + join
            + "exec "
            + " ".join(q(a) for a in unshare)
            + ' /bin/sh -c "$0" vnflab-jail "$@"\n'
        )
        return ["/bin/sh", "-c", outer, inner, *argv]

    def popen(self, argv: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Build the jail and start ``argv`` in it; stdin is /dev/null unless given."""
        if not self._built:
            self.build()
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        self.proc = subprocess.Popen(self.command(argv, env), start_new_session=True, **kwargs)
        return self.proc

    def run(
        self, argv: list[str], *, timeout: float, input: str | None = None, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` to its end in a fresh jail (the unit-check harness), output captured;
        the jail is destroyed afterwards whatever happened. ``subprocess.TimeoutExpired`` as
        ``subprocess.run``; ``JailError`` when the jail could not be built."""
        try:
            proc = self.popen(
                argv,
                env,
                stdin=subprocess.PIPE if input is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                self.cgroup.kill()
                proc.communicate()
                raise
            self.check_setup()
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
        finally:
            self.destroy()

    def check_setup(self, log_tail: str = "") -> None:
        """Raise ``JailError`` if the jail's process ended before its jail stood."""
        if self.proc is None or self.proc.poll() is None:
            return
        if not os.path.exists(os.path.join(self.run_dir, OK_FILE)):
            raise JailError(
                f"jail {self.name} was not built (exit {self.proc.returncode})"
                + (f": {log_tail.strip()[-1500:]}" if log_tail else "")
            )

    @property
    def lb_pid(self) -> int | None:
        """The jailed program's pid as the grader sees it (pid 1 of its own namespace): the
        child of ``unshare``, which the grader's Popen is."""
        if self._lb_pid is None and self.proc is not None:
            deadline = time.monotonic() + 5
            path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with open(path) as f:
                        kids = f.read().split()
                except OSError:
                    break
                if kids and _comm(self.proc.pid) == "unshare":
                    self._lb_pid = int(kids[0])
                    break
                time.sleep(0.01)
        return self._lb_pid

    def cpu_seconds(self) -> float:
        """Exact CPU time of everything that ran in the jail (cpuacct.usage)."""
        return self.cgroup.cpu_ns() / 1e9

    def destroy(self) -> None:
        """Kill whatever is left (the whole cgroup), remove the cgroup, unmount the run dir."""
        if not self._built:
            return
        try:
            self.cgroup.remove()
        finally:
            if self.proc is not None:
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            if os.path.ismount(self.run_dir):
                subprocess.run(["umount", "-l", self.run_dir], capture_output=True, check=False)
            shutil.rmtree(self.base, ignore_errors=True)
            self._built = False

    # --- the scripts ---------------------------------------------------------------------------
    def _root_script(self) -> str:
        """Shell (root, pid 1 of the new namespaces) that builds the new root and enters it."""
        q = shlex.quote
        r = self.root
        lines = [
            "set -u",
            f"R={q(r)}",
            (
                'mount -t tmpfs -o size=4m,mode=755,nosuid,nodev vnflab-root "$R" '
                '|| fail "tmpfs root"'
            ),
        ]
        # The private /tmp first: a venv or checkout that lives under /tmp (a CI clone) is then
        # bound inside it, not hidden by it.
        tmp = int(self.limits.get("tmp_mb", 64))
        lines += [
            'mkdir -p "$R/tmp" || fail dirs',
            (
                f'mount -t tmpfs -o size={tmp}m,mode=1777,nosuid,nodev vnflab-tmp "$R/tmp" '
                '|| fail "/tmp"'
            ),
        ]

        def bind(src: str, dst: str, rw: bool = False, opts: str = "nosuid,nodev") -> None:
            d = q(r + dst)
            mk = (
                f"mkdir -p {d}"
                if os.path.isdir(src)
                else f"mkdir -p {q(os.path.dirname(r + dst))} && : > {d}"
            )
            ro = "" if rw else "ro,"
            lines.append(
                f"{{ {mk} && mount --bind {q(src)} {d} && "
                f"mount -o remount,bind,{ro}{opts} {d}; }} || fail {q('bind ' + dst)}"
            )

        for top in ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            src = "/" + top
            if os.path.islink(src):
                lines.append(f"ln -s {q(os.readlink(src))} {q(r + src)} || fail link {top}")
            elif os.path.isdir(src):
                bind(src, src)
        prefix = os.path.realpath(sys.prefix)
        if not any(prefix == p or prefix.startswith(p + "/") for p in ("/usr", "/etc")):
            bind(prefix, sys.prefix)
        for dst, src in self.binds.items():
            bind(src, dst)
        for dst, src in self.rw_binds.items():
            bind(src, dst, rw=True)
        bind(self.run_dir, RUN, rw=True, opts="nosuid,nodev,noexec")
        lines += [
            'mkdir -p "$R/dev" "$R/proc" "$R/sys" || fail dirs',
            (
                'mount -t tmpfs -o size=64k,mode=755,nosuid,noexec vnflab-dev "$R/dev" '
                '|| fail "/dev"'
            ),
        ]
        for dev in DEVICES:
            lines.append(
                f': > "$R/dev/{dev}" && mount --bind /dev/{dev} "$R/dev/{dev}" || fail "/dev/{dev}"'
            )
        shm = int(self.limits.get("shm_mb", 64))
        lines += [
            'ln -s /proc/self/fd "$R/dev/fd" || fail "/dev/fd"',
            (
                f'mkdir "$R/dev/shm" && mount -t tmpfs -o size={shm}m,mode=1777,nosuid,nodev '
                'vnflab-shm "$R/dev/shm" || fail "/dev/shm"'
            ),
            'mount -t proc -o nosuid,nodev,noexec proc "$R/proc" || fail "/proc"',
            'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys" || fail "/sys"',
        ]
        if self.hugepages:
            bind("/dev/hugepages", "/dev/hugepages", opts="nosuid,nodev")
        lines += [
            'cd "$R" && mkdir .old && pivot_root . .old || fail "pivot_root"',
            'cd / && umount -l /.old && rmdir /.old || fail "detach the old root"',
            'mount -o remount,ro,nosuid,nodev / || fail "read-only root"',
            f'echo ok > {RUN}/{OK_FILE} || fail "run dir"',
            f"cd {OUT} || fail 'cd {OUT}'",
        ]
        return "\n".join(lines) + "\n"

    def _drop_script(self, env: dict | None) -> str:
        uid, gid = user_ids(self.user)
        lim = self.limits
        full_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/nonexistent",
            "LANG": "C.UTF-8",
            "PYTHONPATH": CODE,
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "VNFLAB_STUDENT": "1",
            **(env or {}),
        }
        setpriv = [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--no-new-privs",
        ]
        if self.caps:
            c = ",".join(f"+{x}" for x in self.caps)
            setpriv += [f"--inh-caps={c}", f"--ambient-caps={c}", f"--bounding-set=-all,{c}"]
        else:
            setpriv += ["--inh-caps=-all", "--bounding-set=-all"]
        # RLIMIT_NPROC counts the user's processes machine-wide: with pids.max per cgroup it is
        # only a generous backstop, so one student's fork bomb cannot starve another grading.
        prlimit = [
            "prlimit",
            f"--cpu={int(lim.get('cpu_seconds', 120))}",
            f"--as={int(lim.get('address_space_mb', lim.get('memory_mb', 1536))) << 20}",
            *([f"--data={int(lim['data_mb']) << 20}"] if lim.get("data_mb") else []),
            f"--nproc={64 * int(lim.get('processes', 64))}",
            f"--nofile={int(lim.get('open_files', 4096))}",
            f"--fsize={int(lim.get('file_mb', 64)) << 20}",
            "--core=0",
        ]
        envcmd = ["env", "-i", *(f"{k}={v}" for k, v in full_env.items())]
        return "exec " + " ".join(shlex.quote(a) for a in [*setpriv, *prlimit, *envcmd]) + ' "$@"\n'


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def python() -> str:
    """The Python a jailed program runs on: the venv's, bound read-only at the same path."""
    return sys.executable


__all__ = ["CODE", "OUT", "RUN", "Jail", "JailError", "cgroups", "python"]
