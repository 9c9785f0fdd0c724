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
* Plain HTTP (no ``X-Flow-Id``: ``curl http://VIP:8080/``, a browser, ``wrk``): 200 with a body
  naming the backend, ``b2 (10.0.0.102)``, padded to N bytes with ``?size=N``. Such requests
  are recorded apart, as *anonymous* flows keyed by the connection's 5-tuple as the backend saw
  it (``anonymous`` in the record), so they never mix with the driver's flows.

Why the HTTP side is a small epoll loop in Python and not nginx: both are fast enough that a
load generator (``wrk -t2 -c50``) measures the load balancer instead of the backends (the
thread-per-connection ``http.server`` was not: every way looked alike at ~1,000 requests/s).
nginx would add a package, a config and a log parser per backend host, and its access log
cannot hold what the checker needs (sequence gaps, per-flow 5-tuples, the UDP side in the same
record). One Python process keeps one record format, one codebase students can read, and the
same event loop they write in the socket way (``vnf/ways/socket_lb.py``).

Replies to UDP leave from the address the request was sent to (IP_PKTINFO), so with L2 direct
server return (VIP on the backend's loopback) the client sees the reply come from the VIP.

CLI::

    python -m topologies.servers --name b1 --bind 0.0.0.0 --http-port 80 --udp-port 5000 \\
        --record /tmp/b1.json [--ready-file /tmp/b1.ready] [--address 10.0.0.101]

Port 0 picks a free port; the ready file (JSON) tells which ports were bound.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from typing import NamedTuple

from vnf.jsonfile import write_json_atomic

MAGIC = b"VNFL"
REPLY_MAGIC = b"VNFR"
REQUEST = struct.Struct("!4sIIH")
REPLY = struct.Struct("!4sIIHB")
PROTO_NUM = {"udp": 17, "tcp": 6}
MAX_HTTP_BODY = 16 * 1024 * 1024
MAX_HTTP_HEAD = 64 * 1024  # request line + headers
MAX_TUPLES_KEPT = 8  # distinct 5-tuples remembered per flow (more is only counted)
MAX_ANONYMOUS_KEPT = 4096  # anonymous connections remembered (more are only counted)
HTTP_REASONS = {
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}
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
    return flow_id, seq, client_id, data[REPLY.size : REPLY.size + nlen].decode("ascii", "replace")


def padded(line: bytes, size: int) -> bytes:
    """``line`` then the fixed pattern, ``size`` bytes in all (just ``line`` if it is longer)."""
    if size <= len(line):
        return line
    need = size - len(line)
    return line + (_PAD * (need // len(_PAD) + 1))[:need]


def http_body(backend: str, flow_id, seq, size: int) -> bytes:
    """The HTTP body: names backend and flow, padded with a fixed pattern to ``size`` bytes.

    Deterministic so a client that read the backend name from the first line can rebuild the
    whole body and compare it, which proves it arrived intact.
    """
    return padded(f"backend={backend} flow={flow_id} seq={seq}\n".encode(), size)


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

    __slots__ = (
        "flow_id",
        "proto",
        "client",
        "tuples",
        "extra_tuples",
        "packets",
        "bytes",
        "first_seq",
        "last_seq",
        "min_seq",
        "max_seq",
        "seen",
        "dups",
        "reordered",
        "first_t",
        "last_t",
    )

    def __init__(self, flow_id: int, proto: str, client, five_tuple: tuple):
        self.flow_id = flow_id
        self.proto = proto
        self.client = client
        self.tuples = [five_tuple]
        self.extra_tuples = 0
        self.packets = 0
        self.bytes = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.min_seq: int | None = None
        self.max_seq: int | None = None
        self.seen: set[int] = set()
        self.dups = 0
        self.reordered = 0
        self.first_t: float | None = None  # wall-clock time of its first and last packet here
        self.last_t: float | None = None

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
            assert self.min_seq is not None and self.max_seq is not None  # set with first_seq
            if seq < self.max_seq:
                self.reordered += 1
            else:
                self.max_seq = seq
            if seq < self.min_seq:
                self.min_seq = seq
        self.last_seq = seq

    def to_json(self) -> dict:
        if self.min_seq is None or self.max_seq is None:
            missing = 0
        else:
            missing = (self.max_seq - self.min_seq + 1) - len(self.seen)
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
        self.http_requests = 0  # driver requests (with X-Flow-Id)
        # Requests without a flow id (curl, wrk, a browser), per connection 5-tuple.
        self.anonymous: dict[tuple, list[int]] = {}  # 5-tuple -> [requests, bytes]
        self.anonymous_requests = 0
        self.anonymous_untracked = 0  # connections beyond MAX_ANONYMOUS_KEPT

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

    def note_anonymous(self, five_tuple: tuple, nbytes: int) -> None:
        """A request without a flow id: counted under its connection's 5-tuple."""
        with self.lock:
            self.anonymous_requests += 1
            counts = self.anonymous.get(five_tuple)
            if counts is None:
                if len(self.anonymous) >= MAX_ANONYMOUS_KEPT:
                    self.anonymous_untracked += 1
                    return
                counts = self.anonymous[five_tuple] = [0, 0]
            counts[0] += 1
            counts[1] += nbytes

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
                "anonymous_requests": self.anonymous_requests,
                "anonymous_untracked": self.anonymous_untracked,
            }
            anonymous = [
                {
                    "proto": "tcp" if five[4] == 6 else "udp",
                    "five_tuple": list(five),
                    "requests": n,
                    "bytes": nbytes,
                }
                for five, (n, nbytes) in self.anonymous.items()
            ]
        flows.sort(key=lambda f: (f["proto"], f["flow_id"]))
        return {
            "backend": self.name,
            **extra,
            "written_at": time.time(),
            **counts,
            "flows": flows,
            "anonymous": anonymous,
        }


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
                            (ip_level, IP_PKTINFO, _PKTINFO.pack(0, dst_raw, bytes(4)))
                        ]
                    try:
                        sendmsg([reply], cmsg, 0, addr)
                    except OSError:  # e.g. destination was not a local address: plain reply
                        sendto(reply, addr)
                else:
                    sendto(reply, addr)
            except OSError:
                with rec.lock:
                    rec.udp_reply_errors += 1


class HTTPRequest(NamedTuple):
    """One parsed request head: what the backend needs of it, nothing more."""

    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names
    length: int  # bytes of the head and body together, to drop from the buffer


class BadRequest(Exception):
    """The bytes are not an HTTP/1.x request we can answer; ``status`` is the reply's."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status
        self.why = why


def parse_request(buf: bytes | bytearray) -> HTTPRequest | None:
    """The first request in ``buf``, or None when its head (or body) has not all arrived yet.

    Enough HTTP/1.x for curl, wget, browsers, wrk, ab and the driver: a request line, headers,
    and a ``Content-Length`` body (read and ignored). Chunked request bodies are refused (501).
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HTTP_HEAD:
            raise BadRequest(431, "head-too-large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "bad-request-line")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "bad-header")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked-body")
    try:
        body = int(headers.get("content-length", "0"))
        if body < 0:
            raise ValueError
    except ValueError:
        raise BadRequest(400, "bad-content-length") from None
    length = end + 4 + body
    if len(buf) < length:
        return None
    return HTTPRequest(parts[0], parts[1], parts[2], headers, length)


def wants_keep_alive(req: HTTPRequest) -> bool:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless asked not to."""
    connection = req.headers.get("connection", "").lower()
    if req.version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


class Connection:
    """One client connection: bytes in, bytes still to send, and who it is (its 5-tuple)."""

    __slots__ = (
        "sock",
        "five_tuple",
        "inbuf",
        "outbuf",
        "requests",
        "last_active",
        "close_when_sent",
        "writing",
    )

    def __init__(self, sock: socket.socket, five_tuple: tuple):
        self.sock = sock
        self.five_tuple = five_tuple
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.requests = 0  # requests answered here (the default X-Seq)
        self.last_active = time.monotonic()
        self.close_when_sent = False
        self.writing = False  # registered for EVENT_WRITE too


class HTTPServer:
    """The backend's HTTP side: one thread, one epoll loop (``selectors``), keep-alive.

    Why not ``http.server.ThreadingHTTPServer``: it spends a thread per connection and several
    layers of Python (rfile/wfile, email-style header parsing) per request, so the *backends*
    capped every way at about 1,000 requests/s and a load generator measured them, not the LB.
    One event loop answering from memory is the design every fast server uses (nginx, the
    socket-way LB itself): per request it costs one ``recv``, a split of the head, one ``send``.

    Requests with ``X-Flow-Id`` are the driver's: the body is ``http_body`` and the request is
    recorded under its flow id. Any other GET (curl, a browser, wrk without headers) is answered
    too, with a body naming the backend, and recorded as an *anonymous* flow keyed by the
    connection's 5-tuple as this backend saw it.
    """

    IDLE_TIMEOUT_S = 30.0  # idle keep-alive connections are closed after this
    MAX_OUTPUT = 1 << 20  # stop parsing pipelined requests while this much is unsent

    def __init__(self, recorder: Recorder, bind: str, port: int, address: str | None = None):
        self.recorder = recorder
        self.name = recorder.name
        self.address = address
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((bind, port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.conns: dict[int, Connection] = {}
        self.running = True
        self.thread = threading.Thread(target=self.serve, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=2)

    # --- the loop ----------------------------------------------------------------------------
    def serve(self) -> None:
        next_sweep = time.monotonic() + 1.0
        while self.running:
            for key, mask in self.selector.select(timeout=0.2):
                conn = key.data
                if conn is None:
                    self.on_accept()
                    continue
                if conn.sock.fileno() < 0:  # closed earlier in this same batch
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(conn)
                if mask & selectors.EVENT_READ and conn.sock.fileno() >= 0:
                    self.on_readable(conn)
            if time.monotonic() >= next_sweep:
                self.close_idle()
                next_sweep = time.monotonic() + 1.0
        for conn in list(self.conns.values()):
            self.close(conn)
        self.selector.close()
        self.listener.close()

    def on_accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: leave the rest in the backlog for now
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = sock.getsockname()
            conn = Connection(sock, (peer[0], local[0], peer[1], local[1], 6))
            self.conns[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def on_readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close(conn)
        if not data:
            return self.close(conn)
        conn.last_active = time.monotonic()
        conn.inbuf += data
        self.answer_pending(conn)

    def answer_pending(self, conn: Connection) -> None:
        """Answer every complete request in the buffer (pipelining), about MAX_OUTPUT of
        answers at a time, sending as we go; stop while the socket buffer is full."""
        while True:
            answered = 0
            while conn.inbuf and not conn.close_when_sent and len(conn.outbuf) < self.MAX_OUTPUT:
                try:
                    req = parse_request(conn.inbuf)
                except BadRequest as bad:
                    self.reply_error(conn, bad.status, bad.why, keep_alive=False)
                    conn.inbuf.clear()
                    break
                if req is None:
                    break
                del conn.inbuf[: req.length]
                self.answer(conn, req)
                answered += 1
            self.flush(conn)
            if (
                not answered
                or conn.writing
                or conn.close_when_sent
                or not conn.inbuf
                or conn.sock.fileno() < 0
            ):
                return

    def flush(self, conn: Connection) -> None:
        """Send what we can. While the socket buffer is full, wait for EVENT_WRITE and read
        nothing more: TCP's flow control then slows a client that sends faster than it reads."""
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return self.close(conn)
            if sent:
                del conn.outbuf[:sent]
                conn.last_active = time.monotonic()
        if conn.outbuf:
            if not conn.writing:
                conn.writing = True
                self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        if conn.close_when_sent:
            return self.close(conn)
        if conn.writing:
            conn.writing = False
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
            if conn.inbuf:  # requests that waited for the output to drain
                self.answer_pending(conn)

    def close(self, conn: Connection) -> None:
        if self.conns.pop(conn.sock.fileno(), None) is None:
            return
        self.selector.unregister(conn.sock)
        conn.sock.close()

    def close_idle(self) -> None:
        too_old = time.monotonic() - self.IDLE_TIMEOUT_S
        for conn in [c for c in self.conns.values() if c.last_active < too_old]:
            self.close(conn)

    # --- the answers -------------------------------------------------------------------------
    def answer(self, conn: Connection, req: HTTPRequest) -> None:
        keep_alive = wants_keep_alive(req)
        if req.method not in ("GET", "HEAD"):
            return self.reply_error(
                conn, 405, "method", keep_alive=False, extra="Allow: GET, HEAD\r\n"
            )
        size = 0
        path, _, query = req.target.partition("?")
        if query:
            try:
                size = int(urllib.parse.parse_qs(query).get("size", ["0"])[0])
                if not 0 <= size <= MAX_HTTP_BODY:
                    raise ValueError
            except ValueError:
                return self.reply_error(conn, 400, "bad-size", keep_alive)
        headers = req.headers
        raw_flow = headers.get("x-flow-id")
        seq = conn.requests
        conn.requests += 1
        if raw_flow is None:
            where = self.address or conn.five_tuple[1]
            body = padded(f"{self.name} ({where})\n".encode(), size)
            self.recorder.note_anonymous(conn.five_tuple, len(body))
        else:
            try:
                flow_id = int(raw_flow)
            except ValueError:
                return self.reply_error(conn, 400, "bad-flow-id", keep_alive)
            raw_seq = headers.get("x-seq")
            if raw_seq is not None and raw_seq.isdigit():
                seq = int(raw_seq)
            raw_client = headers.get("x-client-id")
            client = int(raw_client) if raw_client and raw_client.isdigit() else None
            body = http_body(self.name, flow_id, seq, size)
            self.recorder.note("tcp", flow_id, client, seq, len(body), conn.five_tuple)
        self.reply(conn, 200, "OK", body, keep_alive, head_only=req.method == "HEAD")

    def reply(
        self,
        conn: Connection,
        status: int,
        reason: str,
        body: bytes,
        keep_alive: bool,
        head_only: bool = False,
        extra: str = "",
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {reason}\r\nServer: vnflab-backend\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"X-Backend: {self.name}\r\n{extra}"
            f"{'Connection: keep-alive' if keep_alive else 'Connection: close'}\r\n\r\n"
        )
        conn.outbuf += head.encode("latin-1")
        if not head_only:
            conn.outbuf += body
        if not keep_alive:
            conn.close_when_sent = True

    def reply_error(
        self, conn: Connection, status: int, why: str, keep_alive: bool, extra: str = ""
    ) -> None:
        with self.recorder.lock:
            self.recorder.malformed_http += 1
        body = f"backend={self.name} error={why}\n".encode()
        self.reply(conn, status, HTTP_REASONS.get(status, "Error"), body, keep_alive, extra=extra)


class Backend:
    """Both servers plus the record file: the whole backend host process."""

    def __init__(
        self,
        name: str,
        bind: str,
        http_port: int,
        udp_port: int,
        record: str,
        ready_file: str | None = None,
        interval: float = 1.0,
        address: str | None = None,
    ):
        self.recorder = Recorder(name)
        self.record_path = record
        self.ready_file = ready_file
        self.interval = interval
        if address is None and bind not in ("", "0.0.0.0"):
            address = bind
        self.http = HTTPServer(self.recorder, bind, http_port, address)
        self.udp = UDPEchoServer(self.recorder, bind, udp_port)
        self.http_port = self.http.port
        self.udp_port = self.udp.port
        self.bind = bind
        # Plain flags, set by signal handlers: an Event's internal lock could deadlock if a
        # handler ran while the main thread held it.
        self._stop = False
        self._flush = False

    def write_record(self, final: bool = False) -> None:
        snap = self.recorder.snapshot(
            pid=os.getpid(),
            bind=self.bind,
            http_port=self.http_port,
            udp_port=self.udp_port,
            final=final,
        )
        write_json_atomic(self.record_path, snap)

    def request_stop(self, *_args) -> None:
        self._stop = True

    def request_flush(self, *_args) -> None:
        self._flush = True

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; rewrite the record every ``interval`` s and on SIGUSR1."""
        self.http.start()
        self.udp.start()
        self.write_record()
        if self.ready_file:
            write_json_atomic(
                self.ready_file,
                {
                    "backend": self.recorder.name,
                    "pid": os.getpid(),
                    "bind": self.bind,
                    "http_port": self.http_port,
                    "udp_port": self.udp_port,
                },
            )
        next_write = time.monotonic() + self.interval
        while not self._stop:
            time.sleep(0.05)
            if self._flush or time.monotonic() >= next_write:
                self._flush = False
                self.write_record()
                next_write = time.monotonic() + self.interval
        self.http.stop()
        self.write_record(final=True)
        self.udp.sock.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m topologies.servers",
        description="vnflab backend: HTTP + UDP echo, per-flow record",
    )
    parser.add_argument("--name", required=True, help="backend name, e.g. b1 (ASCII)")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--http-port", type=int, default=80, help="0 = any free port")
    parser.add_argument("--udp-port", type=int, default=5000, help="0 = any free port")
    parser.add_argument("--record", required=True, help="JSON record path (rewritten atomically)")
    parser.add_argument("--ready-file", help="written (JSON with ports) once both servers listen")
    parser.add_argument("--interval", type=float, default=1.0, help="record rewrite period, s")
    parser.add_argument(
        "--address",
        help="this host's address, named in replies to plain HTTP "
        "requests (default: --bind, else the address hit)",
    )
    args = parser.parse_args(argv)
    backend = Backend(
        args.name,
        args.bind,
        args.http_port,
        args.udp_port,
        args.record,
        args.ready_file,
        args.interval,
        args.address,
    )
    signal.signal(signal.SIGTERM, backend.request_stop)
    signal.signal(signal.SIGINT, backend.request_stop)
    signal.signal(signal.SIGUSR1, backend.request_flush)
    backend.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
