"""Packet captures at the hosts' interfaces, and the frames of chosen flows picked out of them.

Students would rather *look* at a flow than read about it: a capture opens in Wireshark (or
``scapy.all.rdpcap``) and shows each frame's addresses, ports and payload at the point where it
was seen. :class:`Captures` runs ``tcpdump -w`` on Mininet hosts (run inside the sandbox, like
``testbed.experiment``); the files are plain pcap, written packet by packet (``-U``) so a capture
stopped at any moment is readable.

:func:`frames_of_flows` picks the frames of some flows out of captures. A flow is named by the
traffic driver's flow id, which every datagram carries in its payload (``topologies.servers``)
and every HTTP connection in its ``X-Flow-Id`` header, so it is found whatever the LB rewrote
(the proxy way opens a new 5-tuple to the backend; DSR keeps the client's): a frame belongs to
the flow when its conversation (addresses + ports, either direction) carried the id at that
interface. :func:`write_pcapng` writes them into one pcapng file, one interface per capture
point and a comment per frame, so Wireshark's "Interface" column says where each frame was seen.

Only the standard library: a capture of a 2,000-flow run is read in well under a second.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from dataclasses import dataclass

from topologies.servers import MAGIC, REPLY_MAGIC

LINKTYPE_ETHERNET = 1
ETH_IPV4 = 0x0800
IPPROTO_TCP, IPPROTO_UDP = 6, 17
PROTO_NUMBERS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
FLOW_HEADER = b"x-flow-id: "  # lower-cased; http.client writes "X-Flow-Id: N\r\n"


@dataclass
class CaptureFile:
    """One running (or finished) tcpdump: where, into which file."""

    host: str
    iface: str
    path: str
    proc: subprocess.Popen
    log_path: str
    until: float | None = None  # time.monotonic() past which it is stopped (None: by stop())

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self) -> None:
        """Stop it now (SIGTERM: tcpdump closes its file cleanly), killing it if it lingers."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.path):
            os.chmod(self.path, 0o644)

    def frames(self) -> int:
        """Frames written so far (the file is readable while tcpdump runs, thanks to -U)."""
        try:
            return len(read_pcap(self.path)[1])
        except (OSError, ValueError):
            return 0


class Captures:
    """tcpdump at hosts' first interfaces (``HOST-eth0``) of a started Mininet network."""

    START_TIMEOUT_S = 5.0

    def __init__(self, net, directory: str, log_dir: str | None = None):
        self.net = net
        self.directory = directory
        self.log_dir = log_dir or directory
        self.files: list[CaptureFile] = []
        os.makedirs(directory, exist_ok=True)

    def start(
        self, hosts: list[str], seconds: float | None = None, prefix: str = ""
    ) -> list[CaptureFile]:
        """One tcpdump per host, into ``DIRECTORY/PREFIXHOST-eth0.pcap``, running until
        :meth:`stop` (or for ``seconds``); returns once every one of them is listening."""
        started = []
        for host in hosts:
            iface = f"{host}-eth0"
            path = os.path.join(self.directory, f"{prefix}{iface}.pcap")
            log_path = os.path.join(self.log_dir, f"tcpdump-{prefix}{iface}.log")
            # -Z root: Debian's tcpdump drops to its own user, which could not write here
            argv = ["tcpdump", "-n", "-i", iface, "-U", "-Z", "root", "-w", path]
            with open(log_path, "wb") as log:
                proc = self.net[host].popen(argv, stdout=subprocess.DEVNULL, stderr=log)
            # A timed capture is stopped by expire() once its time is up: not by timeout(1),
            # whose signal the interactive shell's children did not act on
            until = time.monotonic() + seconds if seconds else None
            started.append(CaptureFile(host, iface, path, proc, log_path, until))
        deadline = time.monotonic() + self.START_TIMEOUT_S
        for cap in started:
            while time.monotonic() < deadline and cap.running():
                with open(cap.log_path, "rb") as f:
                    if b"listening on" in f.read():
                        break
                time.sleep(0.05)
        self.files += started
        return started

    def expire(self) -> None:
        """Stop the timed captures whose time is up."""
        now = time.monotonic()
        for cap in self.files:
            if cap.until is not None and now >= cap.until and cap.running():
                cap.finish()

    def stop(self) -> list[CaptureFile]:
        """Stop every running capture (SIGTERM: tcpdump closes its file cleanly, and unlike
        SIGINT it is not ignored by children of the interactive shell); make the files
        readable by everyone (Wireshark usually runs as the user, not root)."""
        for cap in self.files:  # all at once, then wait for each
            if cap.running():
                cap.proc.send_signal(signal.SIGTERM)
        for cap in self.files:
            cap.finish()
        return self.files


def lb_and_backends(bed) -> list[str]:
    """The hosts whose interfaces show what an LB does: the LB's and the backends'. The DPDK
    way's LB has no kernel interface (its port is a vhost-user port of OVS-DPDK): there the
    clients' interfaces show what went in and came back."""
    cfg = bed.topo_cfg
    front = cfg.client_names() if bed.ovs is not None else ["lb"]
    return front + cfg.backend_names()


# --------------------------------------------------------------------------------------------
# reading and writing capture files
# --------------------------------------------------------------------------------------------

_PCAP_MAGICS = {0xA1B2C3D4: 1e-6, 0xA1B23C4D: 1e-9}  # microsecond, nanosecond timestamps


def read_pcap(path: str) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type, [(timestamp, frame), ...]) of a classic pcap file (what ``tcpdump -w``
    writes). ValueError if it is not one."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file (too short)")
    for order in "<>":
        magic = struct.unpack_from(order + "I", data)[0]
        if magic in _PCAP_MAGICS:
            unit = _PCAP_MAGICS[magic]
            break
    else:
        raise ValueError(f"{path}: not a pcap file")
    linktype = struct.unpack_from(order + "I", data, 20)[0]
    record = struct.Struct(order + "IIII")
    frames, pos = [], 24
    while pos + record.size <= len(data):
        sec, frac, caplen, _ = record.unpack_from(data, pos)
        pos += record.size
        if pos + caplen > len(data):  # a frame cut off at the end of the file
            break
        frames.append((sec + frac * unit, data[pos : pos + caplen]))
        pos += caplen
    return linktype, frames


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def write_pcapng(path: str, interfaces: list[str], frames: list[tuple]) -> None:
    """A pcapng file with one interface per name in ``interfaces`` (Ethernet) and ``frames`` =
    [(timestamp, interface index, frame, comment or None), ...] in that order."""
    end = struct.pack("<HH", 0, 0)
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for name in interfaces:
        out.append(
            _block(
                1,
                struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 262144) + _option(2, name.encode()) + end,
            )
        )
    for ts, index, frame, comment in frames:
        micros = int(round(ts * 1e6))
        body = (
            struct.pack("<IIIII", index, micros >> 32, micros & 0xFFFFFFFF, len(frame), len(frame))
            + frame
            + b"\0" * (-len(frame) % 4)
        )
        if comment:
            body += _option(1, comment.encode()) + end
        out.append(_block(6, body))
    with open(path, "wb") as f:
        f.write(b"".join(out))
    os.chmod(path, 0o644)


# --------------------------------------------------------------------------------------------
# the frames of chosen flows
# --------------------------------------------------------------------------------------------


def _conversation(frame: bytes):
    """(proto, conversation key, L4 payload) of an IPv4 TCP/UDP frame; the key is the same in
    both directions. None for anything else."""
    if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != ETH_IPV4:
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    l4 = 14 + ihl
    if proto not in (IPPROTO_TCP, IPPROTO_UDP) or len(frame) < l4 + 8:
        return None
    src, dst = frame[26:30], frame[30:34]
    sport, dport = struct.unpack_from("!HH", frame, l4)
    if proto == IPPROTO_UDP:
        payload = frame[l4 + 8 :]
    else:
        payload = frame[l4 + (frame[l4 + 12] >> 4) * 4 :] if len(frame) >= l4 + 20 else b""
    key = (proto,) + tuple(sorted([(src, sport), (dst, dport)]))
    return proto, key, payload


def _flow_id_in(proto: int, payload: bytes) -> int | None:
    """The flow id a datagram or the first segment of an HTTP request carries, if any."""
    if proto == IPPROTO_UDP:
        if len(payload) >= 8 and payload[:4] in (MAGIC, REPLY_MAGIC):
            return struct.unpack_from("!I", payload, 4)[0]
        return None
    at = payload.lower().find(FLOW_HEADER)
    if at < 0:
        return None
    digits = payload[at + len(FLOW_HEADER) : at + len(FLOW_HEADER) + 12].split(b"\r")[0]
    return int(digits) if digits.strip().isdigit() else None


def frames_of_flows(
    captures: dict[str, str], flows: list[tuple[str, int]], limit: int = 200
) -> tuple[list[str], list[tuple]]:
    """The frames of ``flows`` ([(proto, flow id), ...]) in ``captures`` ({interface: pcap
    path}), for :func:`write_pcapng`: (interface names, [(ts, interface index, frame,
    comment)]) in time order, at most ``limit`` per flow. Captures that cannot be read are
    skipped."""
    wanted = {(PROTO_NUMBERS[p], int(fid)) for p, fid in flows}
    names: list[str] = []
    picked: list[tuple] = []
    per_flow: dict[tuple, int] = {}
    for iface, path in captures.items():
        try:
            _, frames = read_pcap(path)
        except (OSError, ValueError):
            continue
        parsed = [(ts, frame, _conversation(frame)) for ts, frame in frames]
        owner: dict[tuple, tuple] = {}  # conversation -> (proto, flow id)
        for _, _, conv in parsed:
            if conv:
                fid = _flow_id_in(conv[0], conv[2])
                if fid is not None and (conv[0], fid) in wanted:
                    owner.setdefault(conv[1], (conv[0], fid))
        if not owner:
            continue
        index = len(names)
        names.append(iface)
        for ts, frame, conv in parsed:
            flow = owner.get(conv[1]) if conv else None
            if flow is None or per_flow.get(flow, 0) >= limit:
                continue
            per_flow[flow] = per_flow.get(flow, 0) + 1
            proto = "udp" if flow[0] == IPPROTO_UDP else "tcp"
            picked.append((ts, index, frame, f"{proto} flow {flow[1]} seen at {iface}"))
    picked.sort(key=lambda f: f[0])
    return names, picked
