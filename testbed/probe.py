"""Grader helpers that run on Mininet hosts (as root, inside the grading sandbox).

* ``portpairs``: from one client, for each source port P, one UDP flow *and* one HTTP connection
  from port P: two flows whose 5-tuples differ only in the protocol. A flow key that ignores the
  protocol gives the second flow the first one's backend; the grader compares every flow's
  backend with the pool's choice for its real 5-tuple.
* ``robust``: the malformed-frame corpus sent at the LB's MAC, one frame at a time, checking after
  each that the LB process still lives (so the report can name the frame that killed it); then
  fuzzed frames in small bursts; then socket-level oddities (empty and oversized datagrams, a TCP
  reset, garbage on a TCP connection).
* ``mixed``: valid UDP flows with malformed frames *interleaved in the same bursts* (one raw
  socket, frames back to back, so they share the LB's RX ring blocks / bursts): a bug that damages
  or drops the valid frames of a block holding junk shows here. Its output is a client record
  (``testbed.traffic``'s format: the checker merges it) plus the valid frames sent, which the
  grader compares byte for byte with what the backends captured (``capture --keep-marker``).
* ``capture``: frames arriving at a backend, for the header and checksum checks.
* ``resend``: datagrams of given flows once more, each from the source port its flow had (so
  from the same 5-tuple), under a new flow id: which backend the LB picks for an old 5-tuple
  now (the grader's eviction check, ``grader.eviction_phase``).

Output: one JSON file each (``--out``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

from testbed.procfs import process_state
from vnf.jsonfile import write_json_atomic

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def collect_replies(records: dict, seconds: float) -> None:
    """Read the replies to the probes for ``seconds``: ``records`` maps each flow's socket to its
    record (``flow_id``, ``replies``; ``reply_from``, a set, if the caller wants addresses). A
    reply naming the socket's own flow counts, per backend (``backend_replies``); anything
    else is not this flow's and is skipped."""
    from topologies.servers import decode_reply

    deadline = time.monotonic() + seconds
    while records and time.monotonic() < deadline:
        ready, _, _ = select.select(list(records), [], [], 0.1)
        for s in ready:
            try:
                data, addr = s.recvfrom(2048)
            except OSError:
                continue
            rep, rec = decode_reply(data), records[s]
            if rep is None or rep[0] != rec["flow_id"]:
                continue
            rec["replies"] += 1
            per_backend = rec.setdefault("backend_replies", {})
            per_backend[rep[3]] = per_backend.get(rep[3], 0) + 1
            if "reply_from" in rec:
                rec["reply_from"].add(f"{addr[0]}:{addr[1]}")


# --- portpairs ---------------------------------------------------------------------------------
def portpairs(a) -> dict:
    from topologies.servers import encode_request

    lo, hi = (int(x) for x in a.ports.split("-"))
    udp_recs, http_recs, ports = [], [], {}
    socks = []
    for i, port in enumerate(range(lo, hi + 1)):
        fid = a.flow_id_base + i
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.connect((a.vip, a.port))
        socks.append((s, fid))
        ports[str(fid)] = ["udp", port]
        rec = {"flow_id": fid, "sent": 0, "replies": 0, "backend_replies": {}}
        for seq in range(3):
            s.send(encode_request(fid, seq, a.client_id, 32))
            rec["sent"] += 1
        udp_recs.append(rec)
    collect_replies({s: rec for (s, _), rec in zip(socks, udp_recs)}, 1.5)
    for s, _ in socks:
        s.close()
    for i, port in enumerate(range(lo, hi + 1)):
        fid = a.flow_id_base + 500 + i
        ports[str(fid)] = ["tcp", port]
        rec = {"flow_id": fid, "ok": False, "backend": None, "backends": [], "error": None}
        conn = http.client.HTTPConnection(
            a.vip, a.port, timeout=3, source_address=("0.0.0.0", port)
        )
        try:
            conn.request(
                "GET",
                "/?size=64",
                headers={"X-Flow-Id": str(fid), "X-Seq": "0", "X-Client-Id": str(a.client_id)},
            )
            resp = conn.getresponse()
            body = resp.read()
            first = body.split(b"\n", 1)[0].decode("ascii", "replace")
            fields = dict(p.partition("=")[::2] for p in first.split())
            rec["backend"] = fields.get("backend")
            rec["backends"] = [rec["backend"]] if rec["backend"] else []
            rec["ok"] = resp.status == 200
        except (OSError, http.client.HTTPException) as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        http_recs.append(rec)
    return {"client": a.client_id, "udp": udp_recs, "http": http_recs, "ports": ports}


# --- resend ------------------------------------------------------------------------------------
def resend(a) -> dict:
    """``--packets`` datagrams for each ``[flow_id, src_port]`` of ``--flows`` (a JSON list), in
    that order, the packets of one flow back to back: a table that still holds the 5-tuple gives
    all of them its old backend, one that forgot it asks the pool once and keeps that answer.
    The driver that owned these ports has exited; a port it cannot bind is recorded and skipped.
    Replies are read for ``--wait`` seconds (for the record; the grader judges by the backends'
    records, by flow id)."""
    from topologies.servers import encode_request

    with open(a.flows) as f:
        flows = [(int(fid), int(port)) for fid, port in json.load(f)]
    records, socks = [], []
    try:
        for fid, port in flows:
            rec: dict[str, Any] = {"flow_id": fid, "src_port": port, "sent": 0, "replies": 0}
            rec["error"] = None
            records.append(rec)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.connect((a.vip, a.port))
                s.setblocking(False)
            except OSError as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
                s.close()
                continue
            socks.append((s, rec))
            for seq in range(a.packets):
                try:
                    s.send(encode_request(fid, seq, a.client_id, 64))
                    rec["sent"] += 1
                except OSError as exc:
                    rec["error"] = f"{type(exc).__name__}: {exc}"
            time.sleep(a.gap)
        collect_replies(dict(socks), a.wait)
    finally:
        for s, _ in socks:
            s.close()
    return {"client": a.client_id, "udp": records}


# --- robust ------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def robust(a) -> dict:
    from testbed import frames as mine
    from testbed.corpus import fuzzed

    named = [(c.name, c.frame) for c in mine.cases(a.dst_mac, a.src_mac, a.src_ip, a.vip, a.port)]
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind((a.iface, 0))
    out: dict[str, Any] = {
        "sent": 0,
        "skipped": 0,
        "crashed_after": None,
        "crash_frame_hex": None,
        "crash_frame_name": None,
        "alive": True,
        "fuzzed_sent": 0,
        "socket_oddities": [],
    }

    def send(name, frame) -> bool:
        if len(frame) < 14:
            out["skipped"] += 1
            return True
        try:
            raw.send(frame)
            out["sent"] += 1
        except OSError:
            out["skipped"] += 1
        return True

    def crashed(name, frame) -> bool:
        time.sleep(a.gap)
        if not _alive(a.lb_pid):
            time.sleep(0.05)
            out.update(alive=False, crashed_after=name, crash_frame_hex=frame.hex())
            return True
        return False

    for name, frame in named:
        send(name, frame)
        if crashed(name, frame):
            return out
    burst = []
    for i, frame in enumerate(fuzzed([f for _, f in named], a.fuzz, seed=a.seed)):
        send(f"fuzzed frame {i}", frame)
        out["fuzzed_sent"] += 1
        burst.append(frame)
        if len(burst) == 25:
            if crashed(f"one of fuzzed frames {i - 24}..{i}", burst[-1]):
                out["crash_burst_hex"] = [f.hex() for f in burst]
                return out
            burst = []
    if burst and crashed("the last fuzzed frames", burst[-1]):
        out["crash_burst_hex"] = [f.hex() for f in burst]
        return out
    # Socket-level oddities through the normal stack (what a socket LB sees).
    oddities = [("empty UDP datagram", b""), ("1400-byte datagram without the magic", b"x" * 1400)]
    for name, data in oddities:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(data, (a.vip, a.port))
        except OSError:
            pass
        s.close()
        out["socket_oddities"].append(name)
        if crashed(name, b""):
            return out
    for name, payload, reset in (
        ("TCP connection reset at once", b"", True),
        ("garbage on a TCP connection", b"\x00\xff" * 300 + b"\r\n\r\n", False),
    ):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect((a.vip, a.port))
            if payload:
                s.sendall(payload)
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        s.close()
        out["socket_oddities"].append(name)
        if crashed(name, b""):
            return out
    time.sleep(0.3)
    out["alive"] = _alive(a.lb_pid)
    return out


# --- mixed -------------------------------------------------------------------------------------
MIXED_MARKER = b"MIXEDBURST"  # in every valid frame of ``mixed``, after the VNFL header
# The malformed frames of ``mixed`` are the corpus less what parses to a flow for VIP:port, and
# come from an address no host has, which the backends' captures leave out
# (``capture --ignore-src``), should a fuzzed frame still reach one.
JUNK_SRC_IP = "10.0.0.9"
# ...and hold no ARP: a fuzzed ARP frame can teach the LB host's kernel a wrong MAC for a client
# (the socket way then answers it at the wrong host). The robustness phase sends those, then
# forgets what they taught (testbed.experiment.forget_poisoned_neighbours).
ARP_ETHERTYPE = b"\x08\x06"


def _for_the_service(frame: bytes, vip: str, port: int) -> bool:
    """True when a corpus frame parses to a flow for VIP:port (a TCP SYN, a padded datagram):
    an LB rightly forwards those, so they are no junk for ``mixed``."""
    from vnf.packet import ip_to_int, parse_frame

    flow = parse_frame(frame).flow
    return flow is not None and flow.dst_ip == ip_to_int(vip) and flow.dst_port == port


def mixed_frames(a) -> tuple[list[list[bytes]], list[dict], int]:
    """The bursts of ``mixed``: each is ``a.burst`` frames, valid and malformed alternating;
    every flow sends ``a.packets`` datagrams, one per burst in turn. Returns the bursts, one
    dict per valid frame (flow id, seq, source port, hex) and the number of malformed frames."""
    from testbed import frames as corpus_frames
    from testbed.corpus import fuzzed
    from topologies.servers import encode_request

    named = [c.frame for c in corpus_frames.cases(a.dst_mac, a.src_mac, JUNK_SRC_IP, a.vip, a.port)]
    junk = [
        f
        for f in named + fuzzed(named, 400, seed=a.seed)
        if 14 <= len(f) <= 1514
        and f[12:14] != ARP_ETHERTYPE
        and not _for_the_service(f, a.vip, a.port)
    ]
    valid = []
    for seq in range(a.packets):
        for i in range(a.flows):
            payload = (
                encode_request(a.flow_id_base + i, seq, a.client_id)
                + MIXED_MARKER
                + bytes([i % 256, seq % 256]) * 8
            )
            frame = corpus_frames.udp_frame(
                a.src_mac, a.dst_mac, a.src_ip, a.vip, a.sport_base + i, a.port, payload
            )
            valid.append(
                {
                    "flow_id": a.flow_id_base + i,
                    "seq": seq,
                    "src_port": a.sport_base + i,
                    "frame": frame,
                }
            )
    bursts, nj, half = [], 0, max(1, a.burst // 2)
    for start in range(0, len(valid), half):
        burst = []
        for v in valid[start : start + half]:
            burst.append(v["frame"])
            burst.append(junk[nj % len(junk)])
            nj += 1
        bursts.append(burst)
    sent = [{k: (v.hex() if k == "frame" else v) for k, v in d.items()} for d in valid]
    return bursts, sent, nj


def mixed(a) -> dict:
    bursts, sent, junk = mixed_frames(a)
    socks = {}  # absorb the replies (and see where they come from)
    for i in range(a.flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((a.src_ip, a.sport_base + i))
        except OSError:  # taken: its replies go unseen, its frames still count
            s.close()
            continue
        s.setblocking(False)
        socks[a.flow_id_base + i] = s
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind((a.iface, 0))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    errors = 0
    for burst in bursts:
        for frame in burst:  # back to back: one burst on the wire
            try:
                raw.send(frame)
            except OSError:
                errors += 1
        time.sleep(a.gap)
    records = {
        fid: {
            "flow_id": fid,
            "src_port": s.getsockname()[1],
            "sent": a.packets,
            "received": 0,
            "replies": 0,
            "backend_replies": {},
            "reply_from": set(),
        }
        for fid, s in socks.items()
    }
    collect_replies({s: records[fid] for fid, s in socks.items()}, a.wait)
    for s in socks.values():
        s.close()
    udp = []
    for rec in records.values():
        rec["received"] = min(rec["replies"], a.packets)
        rec["backends"] = sorted(rec["backend_replies"])
        rec["reply_from"] = sorted(rec["reply_from"])
        udp.append(rec)
    return {
        "client": a.client_id,
        "udp": udp,
        "http": [],
        "valid_sent": sent,
        "junk_sent": junk,
        "bursts": len(bursts),
        "send_errors": errors,
        "marker": MIXED_MARKER.hex(),
    }


# --- capture -----------------------------------------------------------------------------------
def capture(a) -> dict:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((a.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    frames: list[str] = []  # hex, like the marked frames
    marked: list[str] = []
    marker = bytes.fromhex(a.keep_marker) if a.keep_marker else None
    ignore = socket.inet_aton(a.ignore_src) if a.ignore_src else None
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    deadline = time.monotonic() + a.seconds
    if a.ready_file:
        open(a.ready_file, "w").close()
    while not stop["now"] and time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.1)
        if not r:
            continue
        frame, addr = sock.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:
            continue
        if ignore and frame[12:14] == b"\x08\x00" and frame[26:30] == ignore:
            continue
        if marker is not None and marker in frame:
            if len(marked) < a.keep_max:
                marked.append(frame.hex())
            continue
        if len(frames) >= a.max:
            continue
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        if proto not in (6, 17) or len(frame) < 14 + ihl + 4:
            continue
        dport = struct.unpack_from("!H", frame, 14 + ihl + 2)[0]
        if dport == a.port:
            frames.append(frame.hex())
    return {"iface": a.iface, "frames": frames, "marked": marked}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.probe")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("portpairs")
    pp.add_argument("--vip", required=True)
    pp.add_argument("--port", type=int, required=True)
    pp.add_argument("--ports", required=True, help="A-B: source ports")
    pp.add_argument("--flow-id-base", type=int, required=True)
    pp.add_argument("--client-id", type=int, default=1)
    rb = sub.add_parser("robust")
    for name in ("--iface", "--dst-mac", "--src-mac", "--src-ip", "--vip"):
        rb.add_argument(name, required=True)
    rb.add_argument("--port", type=int, required=True)
    rb.add_argument("--lb-pid", type=int, required=True)
    rb.add_argument("--fuzz", type=int, default=2000)
    rb.add_argument("--seed", type=int, default=5)
    rb.add_argument("--gap", type=float, default=0.02)
    mx = sub.add_parser("mixed")
    for name in ("--iface", "--dst-mac", "--src-mac", "--src-ip", "--vip"):
        mx.add_argument(name, required=True)
    mx.add_argument("--port", type=int, required=True)
    mx.add_argument("--flows", type=int, default=48)
    mx.add_argument("--packets", type=int, default=4)
    mx.add_argument("--burst", type=int, default=32, help="frames per burst (half of them valid)")
    mx.add_argument("--flow-id-base", type=int, default=9500000)
    mx.add_argument("--client-id", type=int, default=91)
    mx.add_argument(
        "--sport-base",
        type=int,
        default=21000,
        help="below the ephemeral range: the traffic driver's sockets use that",
    )
    mx.add_argument("--seed", type=int, default=11)
    mx.add_argument("--gap", type=float, default=0.02, help="seconds between bursts")
    mx.add_argument("--wait", type=float, default=2.0, help="seconds to wait for replies")
    rs = sub.add_parser("resend")
    rs.add_argument("--vip", required=True)
    rs.add_argument("--port", type=int, required=True)
    rs.add_argument("--flows", required=True, help="JSON: [[flow_id, src_port], ...], in order")
    rs.add_argument("--packets", type=int, default=2, help="datagrams per flow, back to back")
    rs.add_argument("--client-id", type=int, default=1)
    rs.add_argument("--gap", type=float, default=0.001, help="seconds between flows")
    rs.add_argument("--wait", type=float, default=1.0, help="seconds to wait for replies")
    cp = sub.add_parser("capture")
    cp.add_argument("--iface", required=True)
    cp.add_argument("--port", type=int, required=True)
    cp.add_argument("--seconds", type=float, default=30)
    cp.add_argument("--max", type=int, default=300)
    cp.add_argument("--ready-file")
    cp.add_argument("--keep-marker", help="hex: also keep every frame holding these bytes")
    cp.add_argument("--keep-max", type=int, default=2000)
    cp.add_argument("--ignore-src", help="leave out IPv4 frames from this source address")
    for sp in (pp, rb, mx, rs, cp):
        sp.add_argument("--out", required=True)
    a = p.parse_args(argv)
    commands = {
        "portpairs": portpairs,
        "robust": robust,
        "mixed": mixed,
        "resend": resend,
        "capture": capture,
    }
    result = commands[a.cmd](a)
    write_json_atomic(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
