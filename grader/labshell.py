"""``vnflab lab shell N [--submission DIR]``: the lab's topology with the student's LB running,
at Mininet's prompt (``testbed.shell``), to poke at instead of reading a report.

The LB is the submission laid over a copy of the ``vnf`` package (``grader.overlay``), run as
``vnflab lab run`` runs it (root, not the grader's jail: it is the student's own machine).
``restart`` in the shell copies the student's files into that copy again, so an edit is one
``restart`` away and the topology stays up.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from grader.labconfig import Lab
from grader.overlay import build_overlay, find_submission_files, lb_command


def lab_shell(lab: Lab, submission: str, pcap_dir: str | None = None) -> int:
    from testbed.sandbox import can_sandbox
    from testbed.shell import ShellSpec, run_shell

    problem = can_sandbox()
    if problem:
        print(f"vnflab lab shell: {problem}", file=sys.stderr)
        return 2
    overlay = tempfile.mkdtemp(prefix="vnflab-lab-")
    os.chmod(overlay, 0o755)
    try:
        missing, refused = build_overlay(overlay, submission, lab)
        for name in missing:
            print(f"(no {name} in {submission}: using the starter)")
        for why in refused.values():
            print(f"({why}: using the starter)")
        found, _, _ = find_submission_files(submission, lab)
        refresh = [
            [os.path.abspath(src), os.path.join(overlay, lab.files[name])]
            for name, src in found.items()
        ]
        topo = lab.raw.get("topology", {})
        where = "the reference" if submission == "reference" else os.path.abspath(submission)
        spec = ShellSpec(
            way=lab.way,
            policy=lab.traffic(False).get("policy", "maglev"),
            clients=int(topo.get("clients", 2)),
            backends=int(topo.get("backends", 3)),
            lb_command=lb_command(overlay, lab),
            refresh=refresh,
            pcap_dir=pcap_dir or "",
            title=f"lab {lab.number}, your {lab.way} LB ({', '.join(found)} from "
            f"{where}; edit them, then restart)",
        )
        return run_shell(spec)
    finally:
        shutil.rmtree(overlay, ignore_errors=True)
