"""The frames of a grading's first split flows, as a small pcap next to ``report.md``.

"Flow 1000007 reached b1 and b3" is a fact; the frames are the explanation: the datagram that
went to b1, the next one of the same 5-tuple to b3, with every address and port at every point
it was seen. During the affinity phase the LB's and the backends' interfaces are captured
(``testbed.capture``; the clients' for the DPDK way, whose LB has no kernel interface). When
the phase's check reports split flows, the frames of the first few (found by the flow id every
datagram and HTTP request carries) are written into one pcapng file, one interface per capture
point; the rest of the captures goes with the work directory.

``grader.inside`` calls :func:`start_affinity_capture` and :func:`finish_affinity_capture`
around the phase; ``grader.grade`` calls :func:`ship_split_flows` to put the file next to the
report and name it there.
"""

from __future__ import annotations

import os
import shutil

from testbed.capture import Captures, frames_of_flows, lb_and_backends, write_pcapng
from testbed.experiment import log

SPLIT_PCAP = "split-flows.pcapng"
FIRST_FLOWS = 3  # split flows whose frames are kept
FRAMES_PER_FLOW = 60


def start_affinity_capture(bed) -> Captures | None:
    """tcpdump at the LB's and the backends' interfaces, into WORKDIR/pcap (None if it
    cannot: the grading goes on without captures)."""
    try:
        captures = Captures(bed.net, os.path.join(bed.workdir, "pcap"), log_dir=bed.workdir)
        captures.start(lb_and_backends(bed))
        return captures
    except Exception as exc:  # noqa: BLE001 - captures are a bonus
        log(f"no captures of the affinity phase: {type(exc).__name__}: {exc}")
        return None


def finish_affinity_capture(captures: Captures | None, phase: dict) -> dict | None:
    """Stop the captures; if ``phase["check"]`` found split flows, write the first ones'
    frames into WORKDIR/split-flows.pcapng. Returns what it holds (the facts), or None."""
    if captures is None:
        return None
    files = captures.stop()
    split = ((phase.get("check") or {}).get("split") or [])[:FIRST_FLOWS]
    if not split:
        return None
    names, frames = frames_of_flows(
        {c.iface: c.path for c in files},
        [(s["proto"], s["flow_id"]) for s in split],
        limit=FRAMES_PER_FLOW,
    )
    if not frames:
        return None
    workdir = os.path.dirname(captures.directory)
    write_pcapng(os.path.join(workdir, SPLIT_PCAP), names, frames)
    return {
        "file": SPLIT_PCAP,
        "frames": len(frames),
        "interfaces": names,
        "flows": [
            {
                "proto": s["proto"],
                "flow_id": s["flow_id"],
                "backends": sorted(set(s.get("backends") or {}) | set(s.get("answered_by") or {})),
            }
            for s in split
        ],
    }


def ship_split_flows(facts: dict, workdir: str, out: str) -> list[tuple[str, str]]:
    """Copy WORKDIR/split-flows.pcapng into OUT (next to report.md); the report's detail that
    names it (a (title, text) pair, like ``Scorer.details``), or none when there is no such
    file."""
    held = (facts.get("affinity") or {}).get("split_pcap")
    src = os.path.join(workdir, SPLIT_PCAP)
    if not held or not os.path.isfile(src):
        return []
    dest = os.path.join(out, SPLIT_PCAP)
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)
    flows = "; ".join(
        f"{f['proto']} flow {int(f['flow_id'])} reached {', '.join(str(b) for b in f['backends'])}"
        for f in held["flows"]
    )
    text = (
        f"They are in `{SPLIT_PCAP}`, next to this "
        f"report ({int(held['frames'])} frames: {flows}). They were captured at "
        f"{', '.join(str(i) for i in held['interfaces'])}: open the file in Wireshark "
        f"(the Interface column and each frame's comment say where it was seen) or "
        f"with `scapy.all.rdpcap`."
    )
    return [("The frames of the first split flows", text)]
