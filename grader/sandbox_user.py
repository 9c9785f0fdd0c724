"""How a submission's process is started: unprivileged, capped, blind to the instructor tree.

``student_command(argv, ...)`` wraps a command line (the LB program, or the unit-check harness)::

    unshare --mount -- sh -c 'mount tmpfs over each hidden path; exec "$@"'   # private view
      setpriv --reuid U --regid G --clear-groups --no-new-privs [caps]        # the student user
        prlimit --cpu --as --nproc --nofile --fsize --core                    # resource limits
          env -i PATH=... PYTHONPATH=OVERLAY ...                              # a clean environment
            python -m vnf.ways.<way>_lb ...

Every ``exec`` keeps the PID, so the grader measures and signals the LB's own process. The
capabilities are only the way's own: ``net_raw`` for AF_PACKET (lab 2); none for sockets
(lab 1) and none for DPDK (lab 3: EAL --in-memory takes memfd huge pages and mlocks nothing; the
grader gives the student user its vhost-user socket directory, see docs/grading.md). The wall clock is the grader's: it stops a process that does not finish in time.
"""
from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import threading

from grader.errors import GradeError

STUDENT_USER = "vnflab-student"          # scripts/install.sh creates it under the same name
USER_LOCK = "/var/lib/vnflab/student-user.lock"
_user_lock = threading.Lock()

# World-writable places get a private, empty tmpfs: what a submission writes there vanishes with
# its mount namespace (nothing is left behind on the machine).
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")
_HIDE_PATHS = ('while [ "$1" != "--" ]; do '
               'mount -t tmpfs -o size=64k,mode=755 vnflab-hidden "$1" 2>/dev/null; shift; done; '
               'shift; exec "$@"')


def _private_tmp_script(keep: list[str]) -> str:
    """Shell that gives the submission private world-writable dirs, keeping ``keep`` visible.

    The venv (or the checkout) may itself live under /tmp (CI clones anywhere). Covering /tmp
    would hide the Python the LB runs on, so such paths are bind-mounted aside (into a private
    dir that has already been covered), then moved back into the fresh tmpfs at the same path."""
    def under(path, d):
        return path == d or path.startswith(d.rstrip("/") + "/")
    keep = sorted({os.path.realpath(k) for k in keep if k})
    busy = [d for d in PRIVATE_TMP if any(under(k, d) for k in keep)]
    free = [d for d in PRIVATE_TMP if d not in busy]
    moved = [k for k in keep if any(under(k, d) for d in busy)]
    q = shlex.quote
    lines = [f"mount -t tmpfs -o size=64m,mode=1777 vnflab-tmp {q(d)} 2>/dev/null" for d in free]
    if moved:
        stage = f"{free[0]}/.vnflab-keep" if free else "/run/vnflab-keep"
        lines.append(f"mkdir -p {q(stage)}")
        for i, k in enumerate(moved):
            lines += [f"mkdir -p {q(stage)}/{i}", f"mount --bind {q(k)} {q(stage)}/{i}"]
        lines += [f"mount -t tmpfs -o size=64m,mode=1777 vnflab-tmp {q(d)}" for d in busy]
        for i, k in enumerate(moved):
            lines += [f"mkdir -p {q(k)}", f"mount --move {q(stage)}/{i} {q(k)}"]
    return "; ".join(lines + [_HIDE_PATHS])


def ensure_student_user() -> None:
    """Create the student user if it is missing (``scripts/install.sh`` normally has).

    ``grade`` and ``grade-all`` call it once at their start, before any grading thread or
    sandbox exists: a grading that created the user lazily could race another one doing the
    same (``useradd`` fails on the other's lock) and chown its run dir to one uid while its LB
    runs as another. Idempotent; serialised by a thread lock and, across processes (two
    ``vnflab grade`` at once), an flock."""
    with _user_lock:
        os.makedirs(os.path.dirname(USER_LOCK), mode=0o711, exist_ok=True)
        with open(USER_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                pwd.getpwnam(STUDENT_USER)
                return
            except KeyError:
                pass
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            r = subprocess.run([useradd, "--system", "--no-create-home", "--home-dir",
                                "/nonexistent", "--shell", "/usr/sbin/nologin", STUDENT_USER],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise GradeError(f"could not create the user {STUDENT_USER!r} submissions run "
                                 f"as: useradd exited {r.returncode}: {r.stderr.strip()}")
    student_ids()


def student_ids() -> tuple[int, int, str]:
    """(uid, gid, name) of the unprivileged user submissions run as. Never another user: a
    grading whose files and LB belonged to different users would score a correct submission 0."""
    try:
        pw = pwd.getpwnam(STUDENT_USER)
    except KeyError:
        raise GradeError(f"no user {STUDENT_USER!r}, which submissions run as: run "
                         "scripts/install.sh (or vnflab grade, which creates it)") from None
    return pw.pw_uid, pw.pw_gid, pw.pw_name


_traversable: set = set()


def _make_traversable(path: str) -> None:
    """Let the student user reach the venv and the checkout: add the 'x' (search) bit for
    others to every directory above them that lacks it. A checkout made with ``mktemp -d``
    (mode 700) otherwise makes its Python unexecutable for the student (exit 126). Search only:
    no directory becomes listable; files keep their modes."""
    p = os.path.realpath(path)
    while p not in ("/", "") and p not in _traversable:
        try:
            mode = os.stat(p).st_mode
            if not mode & 0o001:
                os.chmod(p, mode | 0o001)
        except OSError:
            pass
        _traversable.add(p)
        p = os.path.dirname(p)


def student_command(argv: list[str], *, overlay: str, caps: tuple[str, ...] = (),
                    limits: dict | None = None, hide: list[str] = (), cwd: str | None = None,
                    extra_env: dict | None = None) -> list[str]:
    uid, gid, _ = student_ids()
    lim = limits or {}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8",
           "PYTHONPATH": overlay, "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VNFLAB_STUDENT": "1",
           **(extra_env or {})}
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs"]
    if caps:
        c = ",".join(f"+{x}" for x in caps)
        setpriv += [f"--inh-caps={c}", f"--ambient-caps={c}", f"--bounding-set=-all,{c}"]
    else:
        setpriv += ["--inh-caps=-all", "--bounding-set=-all"]
    prlimit = ["prlimit", f"--cpu={int(lim.get('cpu_seconds', 120))}",
               f"--as={int(lim.get('address_space_mb', lim.get('memory_mb', 1536))) << 20}",
               *([f"--data={int(lim['data_mb']) << 20}"] if lim.get("data_mb") else []),
               f"--nproc={int(lim.get('processes', 64))}",
               f"--nofile={int(lim.get('open_files', 4096))}",
               f"--fsize={int(lim.get('file_mb', 64)) << 20}", "--core=0"]
    envcmd = ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
    inner = [*setpriv, *prlimit, *envcmd, *argv]
    if cwd:
        inner = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *inner]
    # What must stay visible: the venv, the overlay, the student's dir, and the checkout the
    # grader's own modules (the unit-check harness) import from; instructor-only paths inside
    # it are covered afterwards by ``hide``.
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    keep = [sys.prefix, overlay, cwd, checkout]
    for path in (sys.prefix, checkout):
        _make_traversable(path)
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            _private_tmp_script(keep), "vnflab-hide", *hide, "--", *inner]


def python() -> str:
    return sys.executable
