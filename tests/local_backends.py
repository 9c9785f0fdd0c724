"""Backend servers (``python -m topologies.servers``) as real processes on loopback addresses,
for the tests that talk to them without a topology (test_servers, test_traffic_checker)."""

import json
import signal
import subprocess
import sys

from topologies.servers import wait_ready


def start_backend(tmp_path, name, bind="127.0.0.2"):
    """Start a backend on free ports of ``bind``; return (proc, ready info, record path)."""
    record = tmp_path / f"{name}.json"
    ready = tmp_path / f"{name}.ready"
    argv = [sys.executable, "-m", "topologies.servers", "--name", name, "--bind", bind]
    argv += ["--http-port", "0", "--udp-port", "0", "--record", str(record)]
    argv += ["--ready-file", str(ready), "--interval", "0.5"]
    proc = subprocess.Popen(argv)
    try:
        return proc, wait_ready(str(ready), timeout=10, proc=proc), record
    except Exception:
        proc.kill()
        proc.wait()
        raise


def stop_backend(proc, record):
    """SIGTERM, wait for a clean exit, and return the final record."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    with open(record) as f:
        return json.load(f)
