"""The backend server as a real process on loopback: UDP echo, HTTP, records, signals."""

import http.client
import json
import os
import signal
import socket
import time

import pytest
from local_backends import start_backend, stop_backend

from topologies.servers import (
    decode_reply,
    encode_reply,
    encode_request,
    http_body,
    parse_body_line,
)


@pytest.fixture
def backend(tmp_path):
    proc, info, record = start_backend(tmp_path, "b1")
    yield proc, info, record
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def udp_client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    return s


def test_wire_helpers_round_trip():
    assert decode_reply(encode_reply(7, 9, 3, b"b2")) == (7, 9, 3, "b2")
    assert decode_reply(b"VNFR") is None
    assert decode_reply(encode_request(1, 2, 3)) is None  # a request is not a reply
    assert len(encode_request(1, 2, 3, size=100)) == 100
    body = http_body("b1", 42, 0, 1000)
    assert len(body) == 1000
    assert parse_body_line(body) == {"backend": "b1", "flow": "42", "seq": "0"}
    assert http_body("b1", 42, 0, 3).startswith(b"backend=b1 flow=42")


def test_udp_echo_and_final_record_on_sigterm(backend):
    proc, info, record = backend
    dest = ("127.0.0.2", info["udp_port"])
    s = udp_client()
    for seq in (0, 1, 3, 3, 4):  # seq 2 missing, seq 3 twice
        s.sendto(encode_request(11, seq, 5, size=64), dest)
        data, addr = s.recvfrom(2048)
        assert decode_reply(data) == (11, seq, 5, "b1")
        assert addr == dest
    for junk in (b"", b"VNF", b"XXXX" + bytes(20), b"VNFL\x00"):
        s.sendto(junk, dest)
    s.sendto(encode_request(12, 0, 5), dest)  # still answers after junk
    assert decode_reply(s.recvfrom(2048)[0])[0] == 12
    s.close()

    rec = stop_backend(proc, record)
    assert rec["final"] is True and rec["backend"] == "b1"
    assert rec["malformed_udp"] == 4 and rec["malformed"] == 4
    flows = {(f["proto"], f["flow_id"]): f for f in rec["flows"]}
    f = flows[("udp", 11)]
    assert f["packets"] == 5 and f["bytes"] == 5 * 64 and f["client"] == 5
    assert (f["first_seq"], f["last_seq"], f["missing"], f["dups"]) == (0, 4, 1, 1)
    src_ip, dst_ip, src_port, dst_port, proto = f["five_tuple"]
    assert (src_ip, dst_ip, dst_port, proto) == ("127.0.0.1", "127.0.0.2", dest[1], 17)
    assert src_port > 0 and f["tuples_seen"] == 1
    assert flows[("udp", 12)]["packets"] == 1
    # when its first and last packet arrived (the pool-change judge places flows in time)
    assert f["first_t"] <= f["last_t"] <= flows[("udp", 12)]["first_t"] <= rec["written_at"]


def test_http_body_echo_and_malformed(backend):
    proc, info, record = backend
    conn = http.client.HTTPConnection("127.0.0.2", info["http_port"], timeout=3)
    for seq in range(3):  # keep-alive: one connection
        conn.request("GET", "/?size=500", headers={"X-Flow-Id": "77", "X-Seq": str(seq)})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and resp.getheader("X-Backend") == "b1"
        assert body == http_body("b1", 77, seq, 500)
    conn.request("GET", "/?size=-5", headers={"X-Flow-Id": "78"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 400
    conn.request("GET", "/", headers={"X-Flow-Id": "seventy"})
    resp = conn.getresponse()
    assert resp.status == 400 and b"bad-flow-id" in resp.read()
    conn.request("POST", "/", body=b"x" * 10)  # only GET and HEAD: 405, closed
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 405 and resp.getheader("Allow") == "GET, HEAD"
    conn.close()

    rec = stop_backend(proc, record)
    assert rec["malformed_http"] == 3 and rec["http_requests"] == 3
    assert rec["anonymous_requests"] == 0 and rec["anonymous"] == []
    (f,) = [f for f in rec["flows"] if f["proto"] == "tcp"]
    assert f["flow_id"] == 77 and f["packets"] == 3 and f["bytes"] == 1500
    assert (f["missing"], f["dups"]) == (0, 0)
    assert f["five_tuple"][1:] == ["127.0.0.2", f["five_tuple"][2], info["http_port"], 6]


def test_plain_http_gets_200_naming_the_backend_and_an_anonymous_flow(backend):
    """curl's first check: no X-Flow-Id, still 200, and the record keeps it apart."""
    proc, info, record = backend
    conn = http.client.HTTPConnection("127.0.0.2", info["http_port"], timeout=3)
    for _ in range(2):  # two requests, one connection
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"b1 (127.0.0.2)\n"
    conn.request("HEAD", "/")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    assert resp.getheader("Content-Length") == str(len(b"b1 (127.0.0.2)\n"))
    conn.request("GET", "/?size=200000")  # more than one send() worth
    resp = conn.getresponse()
    body = resp.read()
    assert len(body) == 200000 and body.startswith(b"b1 (127.0.0.2)\nabc")
    local_port = conn.sock.getsockname()[1]
    conn.close()
    # HTTP/1.0 without keep-alive, two pipelined requests in one write: one answer, then close
    with socket.create_connection(("127.0.0.2", info["http_port"]), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 1 and b"Connection: close" in data

    rec = stop_backend(proc, record)
    assert rec["anonymous_requests"] == 5 and rec["flows"] == [] and rec["malformed"] == 0
    by_port = {a["five_tuple"][2]: a for a in rec["anonymous"]}
    assert len(by_port) == 2
    first = by_port[local_port]
    assert first["requests"] == 4 and first["proto"] == "tcp"
    assert first["five_tuple"] == ["127.0.0.1", "127.0.0.2", local_port, info["http_port"], 6]


def test_pipelined_requests_are_all_answered_in_order(backend):
    """20 requests in one write, 1 MB answers each: more than the server buffers at once, so it
    must keep answering as the output drains (and read no more while it cannot send)."""
    proc, info, record = backend
    request = b"GET /?size=1000000 HTTP/1.1\r\nHost: x\r\nX-Flow-Id: %d\r\n\r\n"
    with socket.create_connection(("127.0.0.2", info["http_port"]), timeout=5) as s:
        s.sendall(b"".join(request % 5 for _ in range(20)))
        time.sleep(0.3)  # the server fills its socket buffer and waits for us
        s.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 20
    bodies = [http_body("b1", 5, seq, 1000000) for seq in range(20)]
    assert all(data.find(body) >= 0 for body in (bodies[0], bodies[19]))
    rec = stop_backend(proc, record)
    (f,) = rec["flows"]
    assert (f["packets"], f["first_seq"], f["last_seq"], f["missing"]) == (20, 0, 19, 0)


def test_sigusr1_and_periodic_record(backend):
    proc, info, record = backend
    s = udp_client()
    s.sendto(encode_request(99, 0, 1), ("127.0.0.2", info["udp_port"]))
    s.recvfrom(2048)
    s.close()
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with open(record) as f:
            rec = json.load(f)
        if any(fl["flow_id"] == 99 for fl in rec["flows"]):
            break
        time.sleep(0.05)
    else:
        pytest.fail("record never showed the flow")
    assert rec["final"] is False and proc.poll() is None
    assert not [p for p in os.listdir(os.path.dirname(record)) if ".tmp." in p]


def test_reply_leaves_from_the_address_it_was_sent_to(tmp_path):
    """Direct server return needs the reply to come from the VIP the request was sent to."""
    proc, info, record = start_backend(tmp_path, "b9", bind="0.0.0.0")
    try:
        s = udp_client()
        for target in ("127.0.0.7", "127.0.0.9"):
            s.sendto(encode_request(1, 0, 1), (target, info["udp_port"]))
            data, addr = s.recvfrom(2048)
            assert addr == (target, info["udp_port"])
        s.close()
        rec = stop_backend(proc, record)
        (f,) = rec["flows"]
        assert f["tuples_seen"] == 2  # same flow id, two destination addresses
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
