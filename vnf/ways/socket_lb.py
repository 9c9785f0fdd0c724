"""Way 1: the load balancer on ordinary kernel sockets (the reference for lab 1).

The kernel does all the packet work here. For every datagram the LB forwards, Linux takes an
interrupt/softirq, allocates an skb, runs IP and UDP, copies the payload into our buffer
(``recvfrom``: one syscall, one context switch, one copy), and then does it all again the other
way (``send``). Those per-packet costs are what ways 2 and 3 remove; here they are the price of
convenience, and ``vnflab bench`` measures them.

Design: a *proxy*. The VIP is an address of the LB host, so clients talk to the LB's kernel,
and the LB opens its own socket to the chosen backend:

* UDP: one socket bound to VIP:port receives from every client. The client's 5-tuple is the
  flow key; ``LoadBalancer.backend_for`` picks the backend (the same for every packet of the
  flow). One connected upstream socket per (client, backend) carries the flow to the backend;
  its replies are relayed back to the client from the VIP.
* TCP: accept on VIP:port, connect to the chosen backend, relay bytes both ways.

Why one thread with ``selectors`` (epoll): it is the plainest honest event loop — each ready
socket costs exactly the syscalls you see. Threads would add context switches and GIL hand-offs
per packet; asyncio adds a layer of Python per event. Neither teaches anything about packets.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time

from vnf.packet import FiveTuple, ip_to_int
from vnf.ways.common import LBProgram, fail

UDP, TCP = 17, 6
MAX_DATAGRAM = 2048
RELAY_CHUNK = 65536
RECV_BATCH = 64  # datagrams drained per wake-up before we look at other sockets
SWEEP_EVERY_S = 1.0


class SocketLB(LBProgram):
    """The whole way-1 LB. ``run()`` is the hot loop; the rest is bookkeeping."""

    way = "socket"

    def setup(self) -> None:
        cfg = self.config
        self.vip_int = ip_to_int(cfg.vip)
        self.selector = selectors.DefaultSelector()
        self.udp_front = self._bind(socket.SOCK_DGRAM, cfg.port)
        self.selector.register(self.udp_front, selectors.EVENT_READ, self.on_udp_from_client)
        self.tcp_listener = self._bind(socket.SOCK_STREAM, cfg.port)
        self.tcp_listener.listen(1024)
        self.selector.register(self.tcp_listener, selectors.EVENT_READ, self.on_tcp_accept)
        # (client address, backend name) -> upstream UDP socket; and the way back.
        self.udp_upstream: dict[tuple, socket.socket] = {}
        self.udp_client_of: dict[socket.socket, tuple] = {}
        self.udp_last_used: dict[socket.socket, float] = {}
        self.count = {
            "udp_from_clients": 0,
            "udp_to_backends": 0,
            "udp_replies": 0,
            "tcp_connections": 0,
            "tcp_bytes": 0,
            "upstream_errors": 0,
        }

    def _bind(self, kind: int, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        try:
            sock.bind((self.config.vip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
                fail("port", f"{proto} {self.config.vip}:{port} is already in use")
            if exc.errno == errno.EADDRNOTAVAIL:
                fail("vip", f"{self.config.vip} is not an address of this host")
            raise
        sock.setblocking(False)
        return sock

    # --- the hot loop ------------------------------------------------------------------------
    def run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_EVERY_S
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.2):
                key.data(key.fileobj)  # the handler registered for that socket
            now = time.monotonic()
            if now >= next_sweep:
                self.close_idle_udp(now)
                next_sweep = now + SWEEP_EVERY_S

    # --- UDP -------------------------------------------------------------------------------------
    def on_udp_from_client(self, front: socket.socket) -> None:
        # BEGIN SOLUTION lab1: drain up to RECV_BATCH datagrams (recvfrom until BlockingIOError); build the flow's FiveTuple (client ip/port, VIP, port, UDP); ask self.lb.backend_for; send on the (client, backend) upstream socket (open_udp_upstream when new); count
        now = time.monotonic()
        for _ in range(RECV_BATCH):
            try:
                data, client = front.recvfrom(MAX_DATAGRAM)  # one syscall + one copy
            except BlockingIOError:
                return
            self.count["udp_from_clients"] += 1
            flow = FiveTuple(ip_to_int(client[0]), self.vip_int, client[1], self.config.port, UDP)
            backend = self.lb.backend_for(flow, now)  # THE decision, shared by all ways
            if backend is None:  # every backend down or draining
                continue
            upstream = self.udp_upstream.get((client, backend.name))
            if upstream is None:
                upstream = self.open_udp_upstream(client, backend)
            try:
                upstream.send(data)  # and one more syscall + copy
                self.count["udp_to_backends"] += 1
                self.udp_last_used[upstream] = now
            except OSError:
                self.count["upstream_errors"] += 1
        # END SOLUTION

    def open_udp_upstream(self, client: tuple, backend) -> socket.socket:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.setblocking(False)
        upstream.connect((backend.ip, backend.port))
        self.udp_upstream[(client, backend.name)] = upstream
        self.udp_client_of[upstream] = client
        self.selector.register(upstream, selectors.EVENT_READ, self.on_udp_from_backend)
        return upstream

    def on_udp_from_backend(self, upstream: socket.socket) -> None:
        # BEGIN SOLUTION lab1: find the client of this upstream socket; drain up to RECV_BATCH replies (recv until BlockingIOError, count OSError as upstream_errors) and sendto the client from the front socket
        client = self.udp_client_of[upstream]
        for _ in range(RECV_BATCH):
            try:
                data = upstream.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:  # e.g. ICMP port unreachable from the backend
                self.count["upstream_errors"] += 1
                return
            self.udp_front.sendto(data, client)  # the reply leaves from VIP:port
            self.count["udp_replies"] += 1
        # END SOLUTION

    def close_idle_udp(self, now: float) -> None:
        """Upstream sockets are I/O plumbing only; drop those idle past the flow timeout."""
        idle = [s for s, t in self.udp_last_used.items() if now - t > self.config.idle_timeout]
        for upstream in idle:
            self.udp_client_of.pop(upstream)
            for key in [k for k, v in self.udp_upstream.items() if v is upstream]:
                del self.udp_upstream[key]
            del self.udp_last_used[upstream]
            self.selector.unregister(upstream)
            upstream.close()

    # --- TCP -------------------------------------------------------------------------------------
    def on_tcp_accept(self, listener: socket.socket) -> None:
        now = time.monotonic()
        while True:
            try:
                conn, client = listener.accept()
            except BlockingIOError:
                return
            self.count["tcp_connections"] += 1
            flow = FiveTuple(ip_to_int(client[0]), self.vip_int, client[1], self.config.port, TCP)
            backend = self.lb.backend_for(flow, now)
            if backend is None:  # no backend left: refuse
                conn.close()
                continue
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            conn.setblocking(False)
            upstream.connect_ex((backend.ip, backend.port))  # completes in the background
            relay = TcpRelay(self, conn, upstream)
            self.selector.register(conn, selectors.EVENT_READ, relay.on_client)
            self.selector.register(upstream, selectors.EVENT_READ, relay.on_backend)

    def close(self) -> None:
        for sock in list(self.udp_client_of):
            sock.close()
        self.udp_front.close()
        self.tcp_listener.close()

    def extra_stats(self) -> dict:
        return {**self.count, "udp_upstream_sockets": len(self.udp_client_of)}


class TcpRelay:
    """Copies bytes between a client connection and its backend connection.

    Small request/response traffic fits in the socket buffers, so a plain ``sendall`` on the
    other side is enough; a short blocking wait only happens if a peer stops reading.
    """

    def __init__(self, owner: SocketLB, client: socket.socket, backend: socket.socket):
        self.owner, self.client, self.backend = owner, client, backend
        self.closed = False

    def on_client(self, sock: socket.socket) -> None:
        self._pump(self.client, self.backend)

    def on_backend(self, sock: socket.socket) -> None:
        self._pump(self.backend, self.client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            data = src.recv(RELAY_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        try:
            dst.setblocking(True)
            dst.settimeout(2.0)
            dst.sendall(data)
            dst.setblocking(False)
            self.owner.count["tcp_bytes"] += len(data)
        except OSError:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.backend):
            try:
                self.owner.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()


if __name__ == "__main__":
    SocketLB.main()
