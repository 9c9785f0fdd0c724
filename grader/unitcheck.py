"""The unit checks of a lab (``labs/labN/tests/checks.py``), with the verdict in the grader.

The checks are plain functions taking the student's module (``check(m)``: ``m.FlowTable(...)``,
``m.parse_frame(frame)``) and raising AssertionError when it misbehaves. Run naively, the
student's code and the verdict would share a process, and code that can reach the verdict can
forge it. So the checks run here, in the grader, on a ``RemoteModule``: a stand-in whose calls
travel over a pipe to ``grader.unitserve``, which imports the student's module in the jail, as
the student, and answers each call. That process is asked questions and never told the expected
answers; the comparison, and the verdict, happen here, in a process that runs no student code.

Whatever comes back (bad JSON, non-UTF-8 bytes, an answer of the wrong call, nothing at all)
makes the check at hand fail with a message; it never stops the grading. A call that takes too
long is stopped; the next check gets a fresh student process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any

from grader import unitserve
from grader.unitserve import WireError, decode, encode
from grader.untrusted import CappedPipe, kill_session

ANSWER_MAX = 4 << 20  # one answer line: more is not an answer
CALL_TIMEOUT_S = 10.0  # one call (an endless loop is stopped here)
IMPORT_TIMEOUT_S = 30.0  # importing the student's module (its module-level code)


class ChannelLost(BaseException):
    """The student's process stopped answering properly (gone, timed out, garbled).

    Not an ``Exception``: a check's own ``except Exception`` (lab 2 turns anything parse_frame
    raises into its message) must not take a lost channel for an answer."""


class StudentError(Exception):
    """What the student's code raised: ``student_error`` makes a subclass named after it, so
    that a check's message reads "parse_frame raised struct.error: ...", as it would in-process."""


_error_types: dict[str, type] = {}


def student_error(type_name: str, message: str) -> StudentError:
    cls = _error_types.get(type_name)
    if cls is None:
        if len(_error_types) >= 100:  # names are the student's: a bounded few
            return StudentError(f"{type_name}: {message}")
        cls = _error_types[type_name] = type(type_name, (StudentError,), {})
    return cls(message)


class Servant:
    """One ``grader.unitserve`` process: requests out on its stdin, answers in on its stdout,
    what the student printed kept (its end) from its stderr."""

    def __init__(self, cmd: list[str], budget):
        self.budget = budget  # () -> seconds the next call may take
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.printed = CappedPipe(self.proc.stderr)
        self.lines: queue.Queue = queue.Queue()
        self.next_id = 0
        self.lost: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None, "started with stdout=PIPE"
        while True:
            line = out.readline(ANSWER_MAX + 1)
            self.lines.put(line)
            if not line or len(line) > ANSWER_MAX:
                return

    def request(self, req: dict, timeout: float):
        """Send one request; its answer (the ``value``, decoded), or StudentError."""
        if self.lost:
            raise ChannelLost(self.lost)
        self.next_id += 1
        req = {"id": self.next_id, **req}
        assert self.proc.stdin is not None, "started with stdin=PIPE"
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            self._lose("the student's process is gone (it exited or was killed)")
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self._lose(f"no answer within {timeout:.0f} s (an endless loop?): stopped")
        if not line:
            code = self.proc.poll()
            self._lose(
                "the student's process ended" + (f" (exit code {code})" if code is not None else "")
            )
        if len(line) > ANSWER_MAX:
            self._lose(f"an answer longer than {ANSWER_MAX} bytes")
        try:
            ans = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            self._lose(f"an answer that is not JSON: {line[:120].decode('utf-8', 'replace')!r}")
        if not isinstance(ans, dict) or ans.get("id") != self.next_id:
            self._lose(
                "an answer that is not the one to the call made (something in the "
                "student's process wrote to the grader's channel)"
            )
        if "raised" in ans:
            name, msg = str(ans.get("raised"))[:200], str(ans.get("message", ""))[:2000]
            if name == "NotImplementedError":
                raise NotImplementedError(msg)
            raise student_error(name, msg)
        try:
            return decode(ans.get("value"), lambda h, t: RemoteObject(self, h, t))
        except (WireError, ValueError, TypeError, RecursionError) as exc:
            self._lose(f"an answer that cannot be read ({exc})")

    def _lose(self, why: str):
        self.lost = why
        self.close()
        raise ChannelLost(why)

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_session(self.proc)
        for f in (self.proc.stdin, self.proc.stdout):
            assert f is not None, "started with stdin=PIPE, stdout=PIPE"
            try:
                f.close()
            except OSError:
                pass


class _RemoteCallable:
    def __init__(self, servant: Servant, target: int | None, name: str, budget):
        self.servant, self.target, self.name, self.budget = servant, target, name, budget

    def __call__(self, *args, **kwargs):
        try:
            req = {
                "op": "call",
                "target": self.target,
                "name": self.name,
                "args": encode(list(args)),
                "kwargs": encode(dict(kwargs)),
            }
        except WireError as exc:
            raise TypeError(f"a check passed what cannot be sent: {exc}") from None
        return self.servant.request(req, self.budget())


class RemoteObject:
    """An object living in the student's process (a FlowTable): its methods are called there.
    Only method calls, ``len()`` and ``in`` cross; attributes are not read."""

    def __init__(self, servant: Servant, handle: int, type_name: str):
        self._servant, self._handle, self._type = servant, handle, type_name
        self._budget = servant.budget

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _RemoteCallable(self._servant, self._handle, name, self._budget)

    def __len__(self) -> int:
        n = _RemoteCallable(self._servant, self._handle, "__len__", self._budget)()
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise TypeError(f"len() gave {n!r}, not a count")
        return n

    def __contains__(self, item) -> bool:
        return bool(
            _RemoteCallable(self._servant, self._handle, "__contains__", self._budget)(item)
        )

    def __repr__(self) -> str:
        return f"<{self._type} in the student's process>"


class RemoteModule:
    """The student's module as the checks see it: ``m.FlowTable(...)``, ``m.parse_frame(b)``."""

    def __init__(self, servant: Servant):
        self._servant = servant

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _RemoteCallable(self._servant, None, name, self._servant.budget)


def load_checks(path: str):
    """The lab's checks module (instructor code: imported here, never in the student's jail)."""
    # its neighbours first on the path while it loads: the corpus it imports (frames.py) and
    # the lab's hidden checks (hidden_checks.py, copied there by grader.overlay)
    here = os.path.dirname(os.path.abspath(path))
    spec = importlib.util.spec_from_file_location("vnflab_unit_checks", path)
    assert spec is not None and spec.loader is not None
    checks = importlib.util.module_from_spec(spec)
    sys.path.insert(0, here)
    try:
        spec.loader.exec_module(checks)
    finally:
        sys.path.remove(here)
    return checks


def run_unit_checks(unit: dict, command) -> dict:
    """Every check of ``unit["checks"]`` on the student's ``unit["file"]``.

    ``command(argv)`` wraps a command line into the student's jail. Returns the facts:
    ``{"results": [{"name", "ok", "message", "seconds"}, ...], "printed": ...}``."""
    checks = load_checks(unit["checks"])
    total = float(unit.get("timeout_s", 60))
    deadline = time.monotonic() + total
    # By its path: the jail's Python finds this checkout's file, whatever ``grader`` the venv
    # has installed (the servant imports the standard library only)
    argv = [sys.executable, unitserve.__file__, "--module", unit["module"], "--file", unit["file"]]
    results, printed = [], ""
    servant: Servant | None = None
    import_error = None
    try:
        for check in checks.CHECKS:
            name = check.__name__
            left = deadline - time.monotonic()
            if import_error or left <= 0:
                msg = import_error or f"not run: the unit checks' {total:.0f} s ran out"
                results.append({"name": name, "ok": False, "message": msg, "seconds": 0})
                continue
            t0 = time.monotonic()
            if servant is None or servant.lost:
                if servant is not None:
                    printed = servant.printed.text()
                servant = Servant(
                    command(argv),
                    lambda: max(0.1, min(CALL_TIMEOUT_S, deadline - time.monotonic())),
                )
                try:
                    servant.request(
                        {"op": "import"},
                        max(0.1, min(IMPORT_TIMEOUT_S, deadline - time.monotonic())),
                    )
                except (StudentError, NotImplementedError, ChannelLost) as exc:
                    import_error = f"{unit['module']}.py does not import: {exc}"
                    if isinstance(exc, ChannelLost):  # it died: what it printed says why
                        import_error += "\n" + servant.printed.text()[-1500:]
                    results.append(
                        {
                            "name": name,
                            "ok": False,
                            "message": import_error,
                            "seconds": round(time.monotonic() - t0, 3),
                        }
                    )
                    continue
            results.append(_one(check, RemoteModule(servant)))
            results[-1]["seconds"] = round(time.monotonic() - t0, 3)
    finally:
        if servant is not None:
            servant.close()
            printed = servant.printed.text()
    out: dict[str, Any] = {"results": results}
    if printed.strip():
        out["printed"] = printed[-3000:]
    return out


def _one(check, m: RemoteModule) -> dict:
    name = check.__name__
    try:
        check(m)
        return {"name": name, "ok": True, "message": ""}
    except NotImplementedError as exc:
        return {"name": name, "ok": False, "message": f"not implemented yet ({exc})"}
    except AssertionError as exc:
        return {"name": name, "ok": False, "message": str(exc)[:500]}
    except ChannelLost as exc:
        return {"name": name, "ok": False, "message": f"the check did not finish: {exc}"}
    except Exception as exc:  # noqa: BLE001 - the student's code raised
        return {"name": name, "ok": False, "message": f"raised {type(exc).__name__}: {exc}"[:600]}


def main(argv=None) -> int:
    """``python -m grader.unitcheck CHECKS MODULE FILE``: the checks on a file, unjailed (for
    trying the harness by hand; the grader runs them through ``grader.inside``)."""
    checks, module, path = argv if argv is not None else sys.argv[1:]
    res = run_unit_checks(
        {"checks": checks, "module": module, "file": os.path.abspath(path)}, lambda a: a
    )
    print(json.dumps(res, indent=1))
    return 0 if all(r["ok"] for r in res["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
