"""The student's side of the unit checks: import the student's module and answer calls on it.

``python -m grader.unitserve --module flowtable --file OVERLAY/vnf/flowtable.py`` runs as the
student, in the jail (``grader.sandbox_user``). It knows no check and no expected answer: it
reads one request per line on stdin ("call FlowTable(capacity=8)", "call insert on object 3")
and writes one answer per line on stdout (the value, or the exception raised). The checks
themselves, and the verdict, stay in the grader's process (``grader.unitcheck``), which runs
no student code. Whatever this process prints, it can only answer the calls it is asked.

The wire format (``encode``/``decode``, used by both sides) is JSON with tagged values, so
that what a check passes (bytes, named tuples) reaches the student's code as such.
Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import keyword
import math
import os
import sys
from typing import Any

MAX_DEPTH = 16
MESSAGE_MAX = 2000


class WireError(ValueError):
    """A value that cannot cross (too deep, an unknown tag, a bad field name)."""


_tuple_types: dict = {}


def named_tuple_type(name: object, fields: object):
    """The named-tuple class called ``name`` with ``fields`` (made once per shape); both come
    off the wire, so they are checked here before use."""
    if not (
        isinstance(name, str)
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and isinstance(fields, list)
        and len(fields) <= 64
        and all(
            isinstance(f, str)
            and f.isidentifier()
            and not keyword.iskeyword(f)
            and not f.startswith("_")
            for f in fields
        )
    ):
        raise WireError("a named tuple with a bad name or bad field names")
    key = (name, tuple(fields))
    if key not in _tuple_types:
        _tuple_types[key] = collections.namedtuple(name, fields)
    return _tuple_types[key]


def encode(x, keep=None, depth: int = 0):
    """``x`` as JSON-able data. ``keep(obj) -> int``: the handle of an object that has no JSON
    form (the student's side keeps it and answers later calls on it); None: such an object is
    an error."""
    if depth > MAX_DEPTH:
        raise WireError("a value nested too deeply")
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else {"float": repr(x)}
    if isinstance(x, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(x).hex()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return {
            "namedtuple": type(x).__name__,
            "fields": list(x._fields),
            "values": [encode(v, keep, depth + 1) for v in x],
        }
    if isinstance(x, tuple):
        return {"tuple": [encode(v, keep, depth + 1) for v in x]}
    if isinstance(x, list):
        return [encode(v, keep, depth + 1) for v in x]
    if isinstance(x, dict):
        return {
            "dict": [[encode(k, keep, depth + 1), encode(v, keep, depth + 1)] for k, v in x.items()]
        }
    if keep is None:
        raise WireError(f"cannot send a {type(x).__name__}")
    return {"handle": keep(x), "type": type(x).__name__[:100]}


def decode(x, resolve, depth: int = 0):
    """The value ``encode`` made. ``resolve(handle, type_name)``: what a handle stands for."""
    if depth > MAX_DEPTH:
        raise WireError("a value nested too deeply")
    if x is None or isinstance(x, (bool, int, str, float)):
        return x
    if isinstance(x, list):
        return [decode(v, resolve, depth + 1) for v in x]
    if not isinstance(x, dict) or len(x) > 3:
        raise WireError("not a value")
    if "bytes" in x and isinstance(x["bytes"], str):
        return bytes.fromhex(x["bytes"])
    if "float" in x and x["float"] in ("nan", "inf", "-inf"):
        return float(x["float"])
    if "tuple" in x and isinstance(x["tuple"], list):
        return tuple(decode(v, resolve, depth + 1) for v in x["tuple"])
    if "namedtuple" in x and isinstance(x.get("values"), list):
        cls = named_tuple_type(x["namedtuple"], x.get("fields"))
        values = [decode(v, resolve, depth + 1) for v in x["values"]]
        if len(values) != len(cls._fields):
            raise WireError("a named tuple with the wrong number of values")
        return cls(*values)
    if "dict" in x and isinstance(x["dict"], list):
        out = {}
        for pair in x["dict"]:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise WireError("a bad dict item")
            k = decode(pair[0], resolve, depth + 1)
            if isinstance(k, (list, dict)):
                raise WireError("an unhashable dict key")
            out[k] = decode(pair[1], resolve, depth + 1)
        return out
    if "handle" in x and isinstance(x["handle"], int):
        return resolve(x["handle"], str(x.get("type", "object"))[:100])
    raise WireError("an unknown value tag")


def _raised(exc: BaseException) -> dict:
    cls = type(exc)
    name = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a __str__ that raises
        message = "(its message could not be shown)"
    return {"raised": name[:200], "message": message[:MESSAGE_MAX]}


def serve(module_name: str, path: str, requests, answers) -> None:
    """Answer requests (``requests``: binary lines) until stdin closes."""
    objects: dict[int, object] = {}

    def keep(obj) -> int:
        objects[len(objects) + 1] = obj
        return len(objects)

    def resolve(handle, _type):
        return objects[handle]

    module = None
    for line in requests:
        req = json.loads(line)
        answer: dict = {"id": req.get("id")}
        try:
            if req["op"] == "import":
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec is not None and spec.loader is not None, "a .py file has a loader"
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
                answer["value"] = None
            else:
                # any object: the student's module or one its calls returned
                target: Any = module if req.get("target") is None else objects[req["target"]]
                args = decode(req.get("args", []), resolve)
                kwargs = decode(req.get("kwargs", {"dict": []}), resolve)
                name = req["name"]
                if name == "__len__":
                    value = len(target)
                elif name == "__contains__":
                    value = args[0] in target
                else:
                    value = getattr(target, name)(*args, **kwargs)
                answer["value"] = encode(value, keep)
        except BaseException as exc:  # every failure is an answer
            if isinstance(exc, KeyboardInterrupt):
                raise
            answer = {"id": req.get("id"), **_raised(exc)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader.unitserve")
    p.add_argument("--module", required=True, help="the module name the checks expect")
    p.add_argument("--file", required=True, help="the student's file")
    a = p.parse_args(argv)
    # Run by its path: its own directory (the grader's package) is no place to import from
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [d for d in sys.path if os.path.abspath(d or ".") != here]
    # The requests and answers get descriptors of their own; what the student's code prints
    # (stdout, stderr) goes to stderr, which the grader keeps the end of for the report.
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    sys.stdout = sys.stderr
    serve(a.module, a.file, requests, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
