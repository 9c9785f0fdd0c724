"""Writing a JSON file that another process may be reading at the same moment.

An LB writes its stats while the bench or the grader polls them; a sandboxed run rewrites its
facts after every phase. A plain ``open(path, "w")`` would let a reader see half a file, so the
JSON goes to a temporary file in the same directory first and is renamed over ``path``: a
rename within one file system is atomic, the reader sees the old file or the new one.
"""

from __future__ import annotations

import json
import os


def write_json_atomic(path: str, obj, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers never see half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"  # per process: two writers never share a temp file
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    os.replace(tmp, path)
