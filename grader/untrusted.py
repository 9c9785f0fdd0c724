"""Reading what a submission wrote, as root, without trusting it.

Every file a student's process can write (its stats and ready files, its logs, the files of its
submission) may be a symbolic link to a root-only file, a FIFO that blocks the reader forever, a
device that never ends (/dev/zero), or a gigabyte of output. Root reads such a file only through
the functions here, which all:

- open with ``O_NOFOLLOW`` (a link is refused, not followed) and ``O_NONBLOCK`` (a FIFO cannot
  block the open), then check the *opened* file with ``fstat``: a regular file, or refused. The
  check and the read use the same descriptor, so the file cannot be swapped between them;
- read at most a fixed number of bytes (a log: its last bytes only);
- decode with replacement (non-UTF-8 bytes become U+FFFD, never an exception) and turn bad JSON
  into a "could not read" answer, never an exception that would stop a grading.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import threading

KIB, MIB = 1 << 10, 1 << 20
STATS_MAX = 1 * MIB  # an LB's stats file
LOG_TAIL_MAX = 64 * KIB  # what is kept of a log or of captured output: its end
SUBMISSION_FILE_MAX = 1 * MIB  # one student file (lab files are a few tens of KiB)

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class Untrusted(OSError):
    """A file a submission controls that root refuses to read: the message says why, in words
    that can go into a report."""


def kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a symbolic link", "a regular file")."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str) -> int:
    """A read-only descriptor of ``path`` if it is a regular file (not reached through a link
    at its last component). Untrusted otherwise; FileNotFoundError when it is missing."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: O_NOFOLLOW met a symbolic link
            raise Untrusted(f"{os.path.basename(path)} is a symbolic link") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Untrusted(f"{os.path.basename(path)} is {kind(st.st_mode)}, not a regular file")
    return fd


def is_regular(path: str) -> bool:
    """``path`` exists and is a regular file itself (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_capped(path: str, max_bytes: int) -> bytes:
    """The whole of a regular file of at most ``max_bytes``; Untrusted when it is bigger."""
    fd = open_regular(path)
    try:
        data = _read_fd(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise Untrusted(f"{os.path.basename(path)} is larger than {max_bytes} bytes")
    return data


def _read_fd(fd: int, limit: int) -> bytes:
    chunks, got = [], 0
    while got < limit:
        b = os.read(fd, min(limit - got, 256 * KIB))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_json_capped(path: str, max_bytes: int = STATS_MAX):
    """(value, None) for a regular file of at most ``max_bytes`` holding JSON; (None, why) when
    it is missing, refused, too big, not UTF-8 or not JSON. Never raises for what is in it."""
    try:
        data = read_capped(path, max_bytes)
    except FileNotFoundError:
        return None, f"{os.path.basename(path)} does not exist"
    except OSError as exc:  # Untrusted, EACCES, ...
        return None, str(exc)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant), None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return None, f"{os.path.basename(path)} is not valid JSON ({type(exc).__name__})"


def _no_constant(name: str):
    """NaN and Infinity are not JSON: a stats file holding them is unreadable."""
    raise ValueError(f"{name} is not a JSON number")


def load_json_or(path: str, default=None, max_bytes: int = STATS_MAX):
    """``read_json_capped``'s value, or ``default`` when there is none."""
    value, problem = read_json_capped(path, max_bytes)
    return default if problem else value


def read_text_tail(path: str, max_bytes: int = LOG_TAIL_MAX) -> str:
    """The last ``max_bytes`` of a regular file, decoded with replacement; "" when it is
    missing or refused (a log is evidence for the report, not a reason to stop grading)."""
    try:
        fd = open_regular(path)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            os.lseek(fd, size - max_bytes, os.SEEK_SET)
        return _read_fd(fd, max_bytes).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def copy_regular(
    src: str, dest: str, max_bytes: int = SUBMISSION_FILE_MAX, mode: int = 0o644
) -> None:
    """Copy a student file into the grader's tree: ``src`` must be a regular file (Untrusted
    otherwise, or when bigger than ``max_bytes``); ``dest`` is created anew, owned by whoever
    runs this (root) with ``mode``. Reads the opened descriptor: no swap by name in between."""
    data = read_capped(src, max_bytes)
    if os.path.lexists(dest):
        os.unlink(dest)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def chown_own_socket(path: str, uid: int, gid: int) -> None:
    """Give ``uid``/``gid`` a Unix socket root created, in a directory the student may write.

    The name is opened without following a link (``O_PATH | O_NOFOLLOW``) and the *opened*
    inode is checked (a socket, owned by root) and changed through ``/proc/self/fd``: a link or
    another file swapped in under the name is refused, never chowned."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != 0:
            raise Untrusted(
                f"{path} is {kind(st.st_mode)} owned by uid {st.st_uid}, not the "
                "socket the grader created: not chowned"
            )
        os.chown(f"/proc/self/fd/{fd}", uid, gid)
    finally:
        os.close(fd)


def finite_positive(x) -> bool:
    """A measurement that can be divided by: a finite number above zero (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


class CappedPipe:
    """Drains a pipe in a thread and keeps only its last ``max_bytes``: a process that floods
    its output neither blocks on a full pipe nor fills the grader's memory."""

    def __init__(self, pipe, max_bytes: int = LOG_TAIL_MAX):
        self.max_bytes, self.total = max_bytes, 0
        self._buf = bytearray()
        self._pipe = pipe
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        fd = self._pipe.fileno()
        while True:
            try:
                b = os.read(fd, 256 * KIB)
            except OSError:
                break
            if not b:
                break
            self.total += len(b)
            self._buf += b
            if len(self._buf) > 2 * self.max_bytes:
                del self._buf[: -self.max_bytes]

    def text(self, timeout: float = 2.0) -> str:
        """What was kept (its end), decoded with replacement; a note when some was dropped."""
        self._thread.join(timeout)
        kept = bytes(self._buf[-self.max_bytes :])
        dropped = self.total - len(kept)
        note = f"[... {dropped} earlier bytes not kept ...]\n" if dropped > 0 else ""
        return note + kept.decode("utf-8", errors="replace")


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads (started with ``start_new_session``), then reap."""
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
