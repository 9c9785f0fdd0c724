"""Backend servers for the load-balancer lab: an HTTP server and a UDP echo server.

Each backend records per-flow facts (flow id, 5-tuple as seen, counts, sequence gaps, the
wall-clock times of the flow's first and last packet here) so the affinity checker
(``testbed.checker``) can tell whether every flow stayed on one backend, and on which backend
a flow was before and after a pool change (``judge_pool_change``). Flows
are identified by the *flow id* the driver (``testbed.traffic``) puts in each datagram or HTTP
request, never by addresses: the LB may rewrite addresses (proxy, NAT, direct server return).

Wire format (shared with ``testbed.traffic``, which imports it from here):

* UDP request: ``!4sIIH`` = magic ``b"VNFL"``, flow id (u32), sequence (u32), client id (u16),
  then any padding.
* UDP reply: ``!4sIIHB`` = magic ``b"VNFR"``, flow id, sequence, client id, name length (u8),
  then the backend name (ASCII). Short on purpose: the reply path only has to prove delivery
  and name the backend.
* HTTP: ``GET /?size=N`` with headers ``X-Flow-Id`` (and optional ``X-Seq``, ``X-Client-Id``).
  The body is ``http_body(backend, flow_id, seq, N)``: a first line
  ``backend=b1 flow=123 seq=0`` then a fixed pattern up to N bytes, so the client can rebuild
  the expected body and check it byte for byte.

Replies to UDP leave from the address the request was sent to (IP_PKTINFO), so with L2 direct
server return (VIP on the backend's loopback) the client sees the reply come from the VIP.

CLI::

    python -m topologies.servers --name b1 --bind 0.0.0.0 --http-port 80 --udp-port 5000 \\
        --record /tmp/b1.json [--ready-file /tmp/b1.ready]

Port 0 picks a free port; the ready file (JSON) tells which ports were bound.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAGIC = b"VNFL"
REPLY_MAGIC = b"VNFR"
REQUEST = struct.Struct("!4sIIH")
REPLY = struct.Struct("!4sIIHB")
PROTO_NUM = {"udp": 17, "tcp": 6}
MAX_HTTP_BODY = 16 * 1024 * 1024
MAX_TUPLES_KEPT = 8          # distinct 5-tuples remembered per flow (more is only counted)
UDP_RCVBUF = 8 * 1024 * 1024
_PAD = b"abcdefghijklmnopqrstuvwxyz0123456789\n"

# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
_PKTINFO = struct.Struct("=i4s4s")
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def encode_request(flow_id: int, seq: int, client_id: int, size: int = REQUEST.size) -> bytes:
    """One driver datagram; padding (zeros) makes it ``size`` bytes long."""
    head = REQUEST.pack(MAGIC, flow_id, seq, client_id)
    return head + bytes(max(0, size - len(head)))


def encode_reply(flow_id: int, seq: int, client_id: int, backend: bytes) -> bytes:
    """The echo server's answer: the request header plus the backend name."""
    return REPLY.pack(REPLY_MAGIC, flow_id, seq, client_id, len(backend)) + backend


def decode_reply(data: bytes):
    """``(flow_id, seq, client_id, backend)`` or ``None`` when ``data`` is not a reply."""
    if len(data) < REPLY.size:
        return None
    magic, flow_id, seq, client_id, nlen = REPLY.unpack_from(data)
    if magic != REPLY_MAGIC or len(data) < REPLY.size + nlen:
        return None
    return flow_id, seq, client_id, data[REPLY.size:REPLY.size + nlen].decode("ascii", "replace")


def http_body(backend: str, flow_id, seq, size: int) -> bytes:
    """The HTTP body: names backend and flow, padded with a fixed pattern to ``size`` bytes.

    Deterministic so a client that read the backend name from the first line can rebuild the
    whole body and compare it, which proves it arrived intact.
    """
    line = f"backend={backend} flow={flow_id} seq={seq}\n".encode()
    if size <= len(line):
        return line
    need = size - len(line)
    reps = need // len(_PAD) + 1
    return line + (_PAD * reps)[:need]


def parse_body_line(body: bytes) -> dict:
    """Fields of the body's first line (``backend``, ``flow``, ``seq``) as strings."""
    first = body.split(b"\n", 1)[0].decode("ascii", "replace")
    out = {}
    for part in first.split():
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


def wait_ready(path: str, timeout: float = 10.0, proc=None) -> dict:
    """Block until a backend's ready file exists; return its JSON (ports, pid).

    For orchestration and tests that start backends with port 0. ``proc`` (a Popen) makes a
    backend that died early fail fast instead of waiting out the timeout.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"backend exited with code {proc.returncode} before ready")
        try:
            with open(path) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            time.sleep(0.02)
    raise TimeoutError(f"backend not ready after {timeout} s ({path})")


class FlowRecord:
    """What one backend saw of one flow. Sequence numbers are kept as a set to count gaps."""

    __slots__ = ("flow_id", "proto", "client", "tuples", "extra_tuples", "packets", "bytes",
                 "first_seq", "last_seq", "min_seq", "max_seq", "seen", "dups", "reordered",
                 "first_t", "last_t")

    def __init__(self, flow_id: int, proto: str, client, five_tuple: tuple):
        self.flow_id = flow_id
        self.proto = proto
        self.client = client
        self.tuples = [five_tuple]
        self.extra_tuples = 0
        self.packets = 0
        self.bytes = 0
        self.first_seq = None
        self.last_seq = None
        self.min_seq = None
        self.max_seq = None
        self.seen = set()
        self.dups = 0
        self.reordered = 0
        self.first_t = self.last_t = None     # wall-clock time of its first and last packet here

    def add(self, seq: int, nbytes: int, five_tuple: tuple, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.first_t is None:
            self.first_t = now
        self.last_t = now
        self.packets += 1
        self.bytes += nbytes
        if five_tuple != self.tuples[0] and five_tuple not in self.tuples:
            if len(self.tuples) < MAX_TUPLES_KEPT:
                self.tuples.append(five_tuple)
            else:
                self.extra_tuples += 1
        if seq in self.seen:
            self.dups += 1
        else:
            self.seen.add(seq)
        if self.first_seq is None:
            self.first_seq = self.min_seq = self.max_seq = seq
        else:
            if seq < self.max_seq:
                self.reordered += 1
            else:
                self.max_seq = seq
            if seq < self.min_seq:
                self.min_seq = seq
        self.last_seq = seq

    def to_json(self) -> dict:
        missing = 0 if self.min_seq is None else (self.max_seq - self.min_seq + 1) - len(self.seen)
        return {
            "flow_id": self.flow_id,
            "proto": self.proto,
            "client": self.client,
            "five_tuple": list(self.tuples[0]),
            "tuples_seen": len(self.tuples) + self.extra_tuples,
            "packets": self.packets,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "min_seq": self.min_seq,
            "max_seq": self.max_seq,
            "missing": missing,
            "dups": self.dups,
            "reordered": self.reordered,
            "bytes": self.bytes,
            "first_t": self.first_t,
            "last_t": self.last_t,
        }


class Recorder:
    """Thread-safe store of flow records, shared by the UDP loop and the HTTP threads."""

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.flows: dict[tuple, FlowRecord] = {}
        self.malformed_udp = 0
        self.malformed_http = 0
        self.udp_packets = 0
        self.udp_reply_errors = 0
        self.http_requests = 0

    def note(self, proto: str, flow_id: int, client, seq: int, nbytes: int, five_tuple: tuple):
        key = (proto, flow_id)
        with self.lock:
            rec = self.flows.get(key)
            if rec is None:
                rec = self.flows[key] = FlowRecord(flow_id, proto, client, five_tuple)
            rec.add(seq, nbytes, five_tuple)
            if proto == "udp":
                self.udp_packets += 1
            else:
                self.http_requests += 1

    def snapshot(self, **extra) -> dict:
        with self.lock:
            flows = [r.to_json() for r in self.flows.values()]
            counts = {
                "malformed": self.malformed_udp + self.malformed_http,
                "malformed_udp": self.malformed_udp,
                "malformed_http": self.malformed_http,
                "udp_packets": self.udp_packets,
                "udp_reply_errors": self.udp_reply_errors,
                "http_requests": self.http_requests,
            }
        flows.sort(key=lambda f: (f["proto"], f["flow_id"]))
        return {"backend": self.name, **extra, "written_at": time.time(), **counts,
                "flows": flows}


def write_json_atomic(path: str, obj) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.write("\n")
    os.replace(tmp, path)


class UDPEchoServer:
    """Single-threaded recvmsg loop: record, then reply from the address the request hit."""

    def __init__(self, recorder: Recorder, bind: str, port: int):
        self.recorder = recorder
        self.name_bytes = recorder.name.encode("ascii", "replace")[:255]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is None:
                continue
            try:  # SO_RCVBUFFORCE (root) may exceed net.core.rmem_max; fall back otherwise
                self.sock.setsockopt(socket.SOL_SOCKET, opt, UDP_RCVBUF)
                break
            except OSError:
                continue
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.bind((bind, port))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._loop, name="udp-echo", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        rec = self.recorder
        sock = self.sock
        recvmsg, sendmsg, sendto = sock.recvmsg, sock.sendmsg, sock.sendto
        unpack = REQUEST.unpack_from
        min_len = REQUEST.size
        anc_size = socket.CMSG_SPACE(_PKTINFO.size)
        name = self.name_bytes
        local_ip, local_port = sock.getsockname()
        pktinfo_cache: dict[bytes, list] = {}
        ip_level = socket.IPPROTO_IP
        ntoa = socket.inet_ntoa
        while True:
            try:
                data, anc, _flags, addr = recvmsg(65535, anc_size)
            except OSError:
                if sock.fileno() < 0:
                    return
                continue
            dst_raw = None
            for level, ctype, cdata in anc:
                if level == ip_level and ctype == IP_PKTINFO and len(cdata) >= _PKTINFO.size:
                    dst_raw = _PKTINFO.unpack_from(cdata)[2]
            if len(data) < min_len or data[:4] != MAGIC:
                with rec.lock:
                    rec.malformed_udp += 1
                continue
            _m, flow_id, seq, client = unpack(data)
            dst_ip = ntoa(dst_raw) if dst_raw is not None else local_ip
            five = (addr[0], dst_ip, addr[1], local_port, 17)
            rec.note("udp", flow_id, client, seq, len(data), five)
            reply = REPLY.pack(REPLY_MAGIC, flow_id, seq, client, len(name)) + name
            try:
                if dst_raw is not None:
                    cmsg = pktinfo_cache.get(dst_raw)
                    if cmsg is None:
                        cmsg = pktinfo_cache[dst_raw] = [
                            (ip_level, IP_PKTINFO, _PKTINFO.pack(0, dst_raw, bytes(4)))]
                    try:
                        sendmsg([reply], cmsg, 0, addr)
                    except OSError:  # e.g. destination was not a local address: plain reply
                        sendto(reply, addr)
                else:
                    sendto(reply, addr)
            except OSError:
                with rec.lock:
                    rec.udp_reply_errors += 1


class _BackendHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup that can hang on lab hosts.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port


def _make_handler(recorder: Recorder):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "vnflab-backend"
        timeout = 30  # idle keep-alive connections do not hold a thread forever

        def setup(self):
            super().setup()
            self._requests_here = 0

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            pass

        def _fail(self, code: int, why: str) -> None:
            with recorder.lock:
                recorder.malformed_http += 1
            body = f"backend={recorder.name} error={why}\n".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            try:
                size = int(query.get("size", ["0"])[0])
                if not 0 <= size <= MAX_HTTP_BODY:
                    raise ValueError
            except ValueError:
                return self._fail(400, "bad-size")
            raw_flow = self.headers.get("X-Flow-Id")
            try:
                flow_id = int(raw_flow)
            except (TypeError, ValueError):
                return self._fail(400, "no-flow-id")
            seq_hdr = self.headers.get("X-Seq")
            try:
                seq = int(seq_hdr) if seq_hdr is not None else self._requests_here
            except ValueError:
                seq = self._requests_here
            client_hdr = self.headers.get("X-Client-Id")
            client = int(client_hdr) if client_hdr and client_hdr.isdigit() else None
            self._requests_here += 1
            body = http_body(recorder.name, flow_id, seq, size)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", recorder.name)
            self.end_headers()
            self.wfile.write(body)
            local = self.connection.getsockname()
            five = (self.client_address[0], local[0], self.client_address[1], local[1], 6)
            recorder.note("tcp", flow_id, client, seq, len(body), five)

    return Handler


class Backend:
    """Both servers plus the record file: the whole backend host process."""

    def __init__(self, name: str, bind: str, http_port: int, udp_port: int, record: str,
                 ready_file: str | None = None, interval: float = 1.0):
        self.recorder = Recorder(name)
        self.record_path = record
        self.ready_file = ready_file
        self.interval = interval
        self.http = _BackendHTTPServer((bind, http_port), _make_handler(self.recorder))
        self.udp = UDPEchoServer(self.recorder, bind, udp_port)
        self.http_port = self.http.server_address[1]
        self.udp_port = self.udp.port
        self.bind = bind
        # Plain flags, set by signal handlers: an Event's internal lock could deadlock if a
        # handler ran while the main thread held it.
        self._stop = False
        self._flush = False
        self._http_thread = threading.Thread(target=self.http.serve_forever,
                                             kwargs={"poll_interval": 0.2},
                                             name="http", daemon=True)

    def write_record(self, final: bool = False) -> None:
        snap = self.recorder.snapshot(pid=os.getpid(), bind=self.bind,
                                      http_port=self.http_port, udp_port=self.udp_port,
                                      final=final)
        write_json_atomic(self.record_path, snap)

    def request_stop(self, *_args) -> None:
        self._stop = True

    def request_flush(self, *_args) -> None:
        self._flush = True

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; rewrite the record every ``interval`` s and on SIGUSR1."""
        self._http_thread.start()
        self.udp.start()
        self.write_record()
        if self.ready_file:
            write_json_atomic(self.ready_file, {
                "backend": self.recorder.name, "pid": os.getpid(), "bind": self.bind,
                "http_port": self.http_port, "udp_port": self.udp_port})
        next_write = time.monotonic() + self.interval
        while not self._stop:
            time.sleep(0.05)
            if self._flush or time.monotonic() >= next_write:
                self._flush = False
                self.write_record()
                next_write = time.monotonic() + self.interval
        self.http.shutdown()
        self.http.server_close()
        self.write_record(final=True)
        self.udp.sock.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m topologies.servers",
                                     description="vnflab backend: HTTP + UDP echo, per-flow record")
    parser.add_argument("--name", required=True, help="backend name, e.g. b1 (ASCII)")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--http-port", type=int, default=80, help="0 = any free port")
    parser.add_argument("--udp-port", type=int, default=5000, help="0 = any free port")
    parser.add_argument("--record", required=True, help="JSON record path (rewritten atomically)")
    parser.add_argument("--ready-file", help="written (JSON with ports) once both servers listen")
    parser.add_argument("--interval", type=float, default=1.0, help="record rewrite period, s")
    args = parser.parse_args(argv)
    backend = Backend(args.name, args.bind, args.http_port, args.udp_port, args.record,
                      args.ready_file, args.interval)
    signal.signal(signal.SIGTERM, backend.request_stop)
    signal.signal(signal.SIGINT, backend.request_stop)
    signal.signal(signal.SIGUSR1, backend.request_flush)
    backend.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
