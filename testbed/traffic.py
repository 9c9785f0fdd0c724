"""Traffic driver run on each client host: paced UDP flows and HTTP connections to the VIP.

Every UDP flow has its own socket (own source port, hence its own 5-tuple) and a flow id that
is unique across all clients, carried in every datagram (format in ``topologies.servers``).
Replies are accepted from any source address, because with direct server return or NAT they
need not come from exactly where the request went. Each HTTP connection is one flow too: its
flow id travels in the ``X-Flow-Id`` header and the body is checked byte for byte.

Flow ids: ``base + i`` for UDP flow i, ``base + HTTP_ID_OFFSET + j`` for HTTP connection j,
with ``base = client_id * 1_000_000`` unless ``--flow-id-base`` is given.

CLI::

    python -m testbed.traffic --vip 10.0.0.100 --udp-port 5000 --http-port 80 --client-id 3 \\
        --udp-flows 200 --packets-per-flow 50 --rate 5000 --http-conns 50 --out /tmp/c3.json

In-process: ``run(TrafficConfig(...)) -> dict`` (same JSON), or ``run_udp`` / ``run_http``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import http.client
import os
import random
import resource
import selectors
import socket
import sys
import threading
import time
from typing import Any

from topologies.servers import MAGIC, REQUEST, decode_reply, http_body, parse_body_line
from vnf.addresses import SERVICE_PORT
from vnf.jsonfile import write_json_atomic

FLOW_ID_SPAN = 1_000_000  # flow ids reserved per client
HTTP_ID_OFFSET = 500_000  # HTTP flow ids start here inside a client's span
MAX_FLOW_ID = 2**32 - 1
CLIENT_RCVBUF = 256 * 1024


@dataclasses.dataclass
class TrafficConfig:
    """Everything one client run needs; field names mirror the CLI options."""

    vip: str
    client_id: int
    udp_port: int = SERVICE_PORT
    http_port: int = 80
    udp_flows: int = 10
    packets_per_flow: int = 10
    rate: float = 1000.0  # aggregate UDP packets per second, all flows together
    payload_size: int = 64  # UDP payload bytes (>= 14, the header)
    http_conns: int = 0
    http_requests: int = 1  # keep-alive requests per HTTP connection
    http_size: int = 256  # requested HTTP body size
    http_workers: int = 8  # concurrent HTTP connections
    http_timeout: float = 5.0
    drain_s: float = 1.0  # wait this long for late UDP replies
    max_send_s: float | None = None  # cap on the UDP send phase (default from rate)
    flow_id_base: int | None = None
    bind: str | None = None  # source address for all sockets (default: kernel's)

    def base(self) -> int:
        return self.client_id * FLOW_ID_SPAN if self.flow_id_base is None else self.flow_id_base

    def validate(self) -> None:
        if not 0 <= self.client_id <= 0xFFFF:
            raise ValueError("client id must fit in 16 bits")
        if self.udp_flows > HTTP_ID_OFFSET or self.http_conns > FLOW_ID_SPAN - HTTP_ID_OFFSET:
            raise ValueError("too many flows for one client's flow-id span")
        if self.base() + FLOW_ID_SPAN - 1 > MAX_FLOW_ID:
            raise ValueError("flow ids would not fit in 32 bits; pass a smaller --flow-id-base")
        if self.payload_size < REQUEST.size:
            raise ValueError(f"payload size must be at least {REQUEST.size}")
        if self.rate <= 0:
            raise ValueError("rate must be positive")


def raise_fd_limit(needed: int) -> None:
    """Lift the soft RLIMIT_NOFILE so one socket per flow fits; fail clearly if it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # root (CAP_SYS_RESOURCE) may raise the hard limit too, up to fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError):
            raise OSError(f"need {needed} file descriptors, hard limit is {hard}") from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class _UdpFlow:
    __slots__ = (
        "flow_id",
        "sock",
        "src_port",
        "sent",
        "send_errors",
        "acked",
        "received",
        "replies",
        "dup_replies",
        "bad_replies",
        "foreign",
        "backends",
        "reply_from",
    )

    def __init__(self, flow_id: int, sock: socket.socket, packets: int):
        self.flow_id = flow_id
        self.sock = sock
        self.src_port = sock.getsockname()[1]
        self.sent = 0
        self.send_errors = 0
        self.acked = bytearray(packets)  # one byte per sequence number: reply seen
        self.received = 0  # distinct sequence numbers answered
        self.replies = 0  # all reply datagrams, duplicates included
        self.dup_replies = 0
        self.bad_replies = 0  # not a reply, or for another seq range
        self.foreign = 0  # a reply naming another flow id
        self.backends: dict[str, int] = {}
        self.reply_from: set = set()

    def to_json(self) -> dict:
        return {
            "flow_id": self.flow_id,
            "src_port": self.src_port,
            "sent": self.sent,
            "received": self.received,
            "replies": self.replies,
            "dup_replies": self.dup_replies,
            "bad_replies": self.bad_replies,
            "foreign_replies": self.foreign,
            "send_errors": self.send_errors,
            "backends": sorted(self.backends),
            "backend_replies": dict(sorted(self.backends.items())),
            "reply_from": sorted(f"{ip}:{port}" for ip, port in self.reply_from),
        }


def _drain_socket(flow: _UdpFlow) -> int:
    """Read every queued reply on one flow's socket; return how many new seqs were answered."""
    new = 0
    recvfrom = flow.sock.recvfrom
    npackets = len(flow.acked)
    while True:
        try:
            data, addr = recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return new
        except OSError:  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
            return new
        parsed = decode_reply(data)
        if parsed is None:
            flow.bad_replies += 1
            continue
        flow_id, seq, _client, backend = parsed
        if flow_id != flow.flow_id:
            flow.foreign += 1
            continue
        if seq >= npackets:
            flow.bad_replies += 1
            continue
        flow.replies += 1
        flow.backends[backend] = flow.backends.get(backend, 0) + 1
        if len(flow.reply_from) < 4:
            flow.reply_from.add(addr)
        if flow.acked[seq]:
            flow.dup_replies += 1
        else:
            flow.acked[seq] = 1
            flow.received += 1
            new += 1


def run_udp(cfg: TrafficConfig) -> tuple[list[dict], dict]:
    """Send ``packets_per_flow`` datagrams on each of ``udp_flows`` sockets, interleaved.

    Pacing: packet k of the run is due at ``start + k / rate``; while ahead of schedule we wait
    for replies instead of sleeping, so replies are read as they come and never overflow the
    sockets' buffers. The send phase stops at ``max_send_s`` whatever the rate achieved.
    Returns (per-flow records, summary).
    """
    nflows, npackets = cfg.udp_flows, cfg.packets_per_flow
    if nflows <= 0 or npackets <= 0:
        return [], {"sent": 0, "received": 0, "send_s": 0.0, "truncated": False}
    dest = (cfg.vip, cfg.udp_port)
    base = cfg.base()
    total = nflows * npackets
    max_send = cfg.max_send_s if cfg.max_send_s is not None else total / cfg.rate * 2 + 5
    sel = selectors.DefaultSelector()
    flows: list[_UdpFlow] = []
    try:
        for i in range(nflows):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
                sock.bind((cfg.bind or "0.0.0.0", 0))
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            flow = _UdpFlow(base + i, sock, npackets)
            flows.append(flow)
            sel.register(sock, selectors.EVENT_READ, flow)

        buf = bytearray(cfg.payload_size)
        pack_into = REQUEST.pack_into
        client_id = cfg.client_id
        done = 0  # distinct replies so far
        k = 0
        interval = 1.0 / cfg.rate
        start = time.monotonic()
        deadline = start + max_send
        truncated = False
        now = start
        # Each round visits the flows in a fresh (seeded) order. In a fixed order, the packets
        # of a flow are exactly len(flows) apart at the LB, and a broken LB that picks a backend
        # per packet (round-robin over N backends) sends every packet of a flow to the same
        # backend whenever that distance is a multiple of N: the split would go unseen.
        order = random.Random(cfg.client_id * 7919 + nflows)
        for seq in range(npackets):
            round_flows = flows[:]
            if seq:
                order.shuffle(round_flows)
            for flow in round_flows:
                due = start + k * interval
                if k & 31 == 0 or due > now:
                    now = time.monotonic()
                    if now >= deadline:
                        truncated = True
                        break
                    # Ahead of schedule: read replies until due (a reply may wake us early, so
                    # loop). Behind: poll without waiting every 32 packets so replies are read.
                    if due <= now:
                        if k & 31 == 0:
                            for key, _ev in sel.select(0):
                                done += _drain_socket(key.data)
                    else:
                        while due > now:
                            for key, _ev in sel.select(due - now):
                                done += _drain_socket(key.data)
                            now = time.monotonic()
                pack_into(buf, 0, MAGIC, flow.flow_id, seq, client_id)
                try:
                    flow.sock.sendto(buf, dest)
                    flow.sent += 1
                except (BlockingIOError, InterruptedError):
                    # Send queue full: give the kernel a moment and try once more.
                    time.sleep(0.001)
                    try:
                        flow.sock.sendto(buf, dest)
                        flow.sent += 1
                    except OSError:
                        flow.send_errors += 1
                except OSError:
                    flow.send_errors += 1
                k += 1
            if truncated:
                break
        send_s = time.monotonic() - start
        sent = sum(f.sent for f in flows)
        drain_end = time.monotonic() + cfg.drain_s
        while done < sent:
            left = drain_end - time.monotonic()
            if left <= 0:
                break
            for key, _ev in sel.select(left):
                done += _drain_socket(key.data)
        records = [f.to_json() for f in flows]
        summary = {
            "sent": sent,
            "received": done,
            "send_s": round(send_s, 4),
            "achieved_pps": round(sent / send_s, 1) if send_s > 0 else None,
            "truncated": truncated,
        }
        return records, summary
    finally:
        sel.close()
        for flow in flows:
            flow.sock.close()


def _one_http_conn(cfg: TrafficConfig, flow_id: int) -> dict:
    """One connection, ``http_requests`` keep-alive GETs; checks status and body byte for byte."""
    rec: dict[str, Any] = {
        "flow_id": flow_id,
        "src_port": None,
        "status": None,
        "backend": None,
        "backends": [],
        "requests": 0,
        "ok": False,
        "error": None,
        "elapsed_ms": None,
    }
    source = (cfg.bind, 0) if cfg.bind else None
    conn = http.client.HTTPConnection(
        cfg.vip, cfg.http_port, timeout=cfg.http_timeout, source_address=source
    )
    t0 = time.monotonic()
    problems = []
    try:
        conn.connect()
        rec["src_port"] = conn.sock.getsockname()[1]
        for seq in range(cfg.http_requests):
            conn.request(
                "GET",
                f"/?size={cfg.http_size}",
                headers={
                    "X-Flow-Id": str(flow_id),
                    "X-Seq": str(seq),
                    "X-Client-Id": str(cfg.client_id),
                },
            )
            resp = conn.getresponse()
            body = resp.read()
            rec["requests"] += 1
            if rec["status"] is None or resp.status != 200:
                rec["status"] = resp.status
            if resp.status != 200:
                problems.append(f"status {resp.status}")
                continue
            fields = parse_body_line(body)
            backend = fields.get("backend")
            if backend is None:
                problems.append("body names no backend")
                continue
            if backend not in rec["backends"]:
                rec["backends"].append(backend)
            if fields.get("flow") != str(flow_id):
                problems.append(f"body names flow {fields.get('flow')}")
            elif body != http_body(backend, flow_id, seq, cfg.http_size):
                problems.append(f"body not intact ({len(body)} bytes)")
    except (OSError, http.client.HTTPException) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    rec["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 2)
    rec["backend"] = rec["backends"][0] if rec["backends"] else None
    if len(rec["backends"]) > 1:
        problems.append("answered by more than one backend")
    if rec["requests"] < cfg.http_requests and not problems:
        problems.append("fewer requests than asked")
    rec["error"] = "; ".join(problems) if problems else None
    rec["ok"] = not problems
    return rec


def run_http(cfg: TrafficConfig) -> list[dict]:
    """``http_conns`` connections through a small thread pool; one record per connection."""
    if cfg.http_conns <= 0:
        return []
    first = cfg.base() + HTTP_ID_OFFSET
    workers = max(1, min(cfg.http_workers, cfg.http_conns))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="http") as pool:
        return list(pool.map(lambda j: _one_http_conn(cfg, first + j), range(cfg.http_conns)))


def run(cfg: TrafficConfig) -> dict:
    """The whole client run: HTTP (in a thread pool) alongside UDP; returns the output JSON."""
    cfg.validate()
    raise_fd_limit(cfg.udp_flows + min(cfg.http_workers, cfg.http_conns) + 64)
    t0 = time.monotonic()
    http_result: list = []
    http_thread = threading.Thread(
        target=lambda: http_result.extend(run_http(cfg)), name="http-driver", daemon=True
    )
    http_thread.start()
    udp, udp_summary = run_udp(cfg)
    http_thread.join()
    return {
        "client": cfg.client_id,
        "vip": cfg.vip,
        "params": dataclasses.asdict(cfg),
        "udp": udp,
        "udp_summary": udp_summary,
        "http": http_result,
        "duration_s": round(time.monotonic() - t0, 4),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m testbed.traffic",
        description="vnflab client: UDP flows + HTTP connections to a VIP",
    )
    p.add_argument("--vip", required=True)
    p.add_argument("--udp-port", type=int, default=SERVICE_PORT)
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--client-id", type=int, required=True)
    p.add_argument("--udp-flows", type=int, default=10)
    p.add_argument("--packets-per-flow", type=int, default=10)
    p.add_argument("--rate", type=float, default=1000.0, help="aggregate UDP packets/s")
    p.add_argument("--payload-size", type=int, default=64)
    p.add_argument("--http-conns", type=int, default=0)
    p.add_argument("--http-requests", type=int, default=1, help="keep-alive requests per conn")
    p.add_argument("--http-size", type=int, default=256)
    p.add_argument("--http-workers", type=int, default=8)
    p.add_argument("--http-timeout", type=float, default=5.0)
    p.add_argument("--drain", type=float, default=1.0, help="seconds to wait for late replies")
    p.add_argument("--max-send", type=float, default=None, help="cap on the UDP send phase, s")
    p.add_argument("--flow-id-base", type=int, default=None)
    p.add_argument("--bind", default=None, help="source address")
    p.add_argument("--out", required=True, help="output JSON path (written atomically)")
    a = p.parse_args(argv)
    cfg = TrafficConfig(
        vip=a.vip,
        client_id=a.client_id,
        udp_port=a.udp_port,
        http_port=a.http_port,
        udp_flows=a.udp_flows,
        packets_per_flow=a.packets_per_flow,
        rate=a.rate,
        payload_size=a.payload_size,
        http_conns=a.http_conns,
        http_requests=a.http_requests,
        http_size=a.http_size,
        http_workers=a.http_workers,
        http_timeout=a.http_timeout,
        drain_s=a.drain,
        max_send_s=a.max_send,
        flow_id_base=a.flow_id_base,
        bind=a.bind,
    )
    try:
        result = run(cfg)
    except (ValueError, OSError) as exc:
        print(f"testbed.traffic: {exc}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    write_json_atomic(a.out, result)
    s = result["udp_summary"]
    bad_http = sum(1 for h in result["http"] if not h["ok"])
    print(
        f"client {cfg.client_id}: udp sent {s['sent']} replies {s['received']}, "
        f"http {len(result['http'])} conns {bad_http} failed, {result['duration_s']} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
