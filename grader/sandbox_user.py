"""The users jailed processes run as: ``vnflab-student`` for submissions, ``vnflab-ref`` for
the reference the per-packet cost is compared with.

Two users, not one: a submission's processes can never signal, renice or ptrace the
reference's (another uid), even if one outlived its jail. ``scripts/install.sh`` creates both;
``grade`` and ``grade-all`` make sure of them once at their start. Never a fallback to another
user: a missing user is a grader error. How the processes are jailed is ``grader.jail``.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import threading

from grader.errors import GradeError

STUDENT_USER = "vnflab-student"  # scripts/install.sh creates both under these names
REFERENCE_USER = "vnflab-ref"
USERS = (STUDENT_USER, REFERENCE_USER)
USER_LOCK = "/var/lib/vnflab/student-user.lock"
_user_lock = threading.Lock()


def ensure_users() -> None:
    """Create the users if they are missing (``scripts/install.sh`` normally has).

    ``grade`` and ``grade-all`` call it once at their start, before any grading thread or
    sandbox exists: a grading that created a user lazily could race another one doing the same
    (``useradd`` fails on the other's lock) and chown its files to one uid while its LB runs as
    another. Idempotent; serialised by a thread lock and, across processes (two ``vnflab
    grade`` at once), an flock."""
    with _user_lock:
        os.makedirs(os.path.dirname(USER_LOCK), mode=0o711, exist_ok=True)
        with open(USER_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for name in USERS:
                try:
                    pwd.getpwnam(name)
                    continue
                except KeyError:
                    pass
                useradd = shutil.which("useradd") or "/usr/sbin/useradd"
                r = subprocess.run(
                    [
                        useradd,
                        "--system",
                        "--no-create-home",
                        "--home-dir",
                        "/nonexistent",
                        "--shell",
                        "/usr/sbin/nologin",
                        name,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if r.returncode != 0:
                    raise GradeError(
                        f"could not create the user {name!r} jailed processes run "
                        f"as: useradd exited {r.returncode}: {r.stderr.strip()}"
                    )
    for name in USERS:
        user_ids(name)


def user_ids(name: str) -> tuple[int, int]:
    """(uid, gid) of one of ``USERS``."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise GradeError(
            f"no user {name!r}, which jailed processes run as: run "
            "scripts/install.sh (or vnflab grade, which creates it)"
        ) from None
    return pw.pw_uid, pw.pw_gid


def student_ids() -> tuple[int, int, str]:
    """(uid, gid, name) of the user submissions run as."""
    return (*user_ids(STUDENT_USER), STUDENT_USER)
