"""Starting and stopping the processes of an experiment: wait until ready, read a line, stop.

One home for the three things every driver of a child process does (the testbed's servers and
LBs, the bench's generators and testpmd, the grader's windows), so they all stop the same way:
SIGTERM first, because servers and LBs write their final record or stats on it, SIGKILL after a
timeout, because a stuck child must never hang a run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """SIGTERM (servers and LBs write their final record/stats then), SIGKILL after
    ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for_file(path: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Wait until ``proc`` creates ``path`` (its ready file); raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")


def expect_line(proc: subprocess.Popen, word: str, what: str, timeout: float = 60) -> str:
    """The first line of ``proc``'s stdout (text mode) starting with ``word``; lines before it
    are skipped. ``proc`` is killed when it says nothing of the kind within ``timeout``."""
    timer = threading.Timer(timeout, proc.kill)
    assert proc.stdout is not None, "start proc with stdout=PIPE"
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith(word):
                return line
    finally:
        timer.cancel()
    proc.kill()
    raise RuntimeError(f"{what} did not say {word!r} within {timeout:.0f} s (exit {proc.wait()})")
