"""A corpus of malformed (and a few tricky but valid) Ethernet frames, with what a parser says.

Used three ways: the public parser tests of lab 2 (``expected`` is the drop reason
``vnf.packet.parse_frame`` must give, or ``"ok"`` for a frame that parses to its 5-tuple), the
grader's robustness test (every frame is sent at the load balancer's MAC from a client with a raw
socket; the LB must neither crash nor stop forwarding), and the report (hex + a scapy summary of
the frame that crashed an LB).

Pure standard library (the release copies this file to ``tests/frames.py``).
"""

from __future__ import annotations

import random
import socket
import struct
from typing import NamedTuple

from vnf.addresses import LB_MAC, SERVICE_PORT, VIP

ANY = "*"  # no particular answer: only "does not raise" is checked


class Case(NamedTuple):
    name: str
    frame: bytes
    expected: str  # a DropReason string, "ok", or ANY
    flow: tuple | None = None  # (src_ip, dst_ip, src_port, dst_port, proto) when "ok"


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _ip(ip: str) -> bytes:
    return socket.inet_aton(ip)


def _ipint(ip: str) -> int:
    return int.from_bytes(_ip(ip), "big")


def checksum(data: bytes) -> int:
    """RFC 1071, as vnf.checksum.internet_checksum (tests/test_checksum.py holds them equal); a
    copy because the release runs this file with the system python3, where vnf is not installed."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    ihl: int = 5,
    total: int | None = None,
    version: int = 4,
    frag: int = 0,
    options: bytes = b"",
) -> bytes:
    total = 20 + len(options) + len(payload) if total is None else total
    head = (
        struct.pack(
            "!BBHHHBBH4s4s",
            (version << 4) | ihl,
            0,
            total & 0xFFFF,
            0x1234,
            frag,
            64,
            proto,
            0,
            _ip(src),
            _ip(dst),
        )
        + options
    )
    csum = checksum(head)
    return head[:10] + struct.pack("!H", csum) + head[12:] + payload


def udp(sport: int, dport: int, data: bytes, length: int | None = None) -> bytes:
    length = 8 + len(data) if length is None else length
    return struct.pack("!HHHH", sport, dport, length & 0xFFFF, 0) + data


def udp_frame(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes
) -> bytes:
    """A well-formed Ethernet + IPv4 + UDP frame with correct IPv4 header and UDP checksums
    (the generators' traffic; the corpus below bends one field at a time)."""
    src, dst = _ip(src_ip), _ip(dst_ip)
    segment = udp(sport, dport, payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, len(segment))
    csum = checksum(pseudo + segment) or 0xFFFF  # a computed 0 is sent as 0xFFFF (RFC 768)
    segment = segment[:6] + struct.pack("!H", csum) + segment[8:]
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + ipv4(src_ip, dst_ip, 17, segment)


def tcp(
    sport: int, dport: int, offset_words: int = 5, flags: int = 0x02, extra: bytes = b""
) -> bytes:
    return (
        struct.pack("!HHIIBBHHH", sport, dport, 1, 0, offset_words << 4, flags, 65535, 0, 0) + extra
    )


def cases(
    dst_mac: str = LB_MAC,
    src_mac: str = "02:00:00:00:01:01",
    src_ip: str = "10.0.0.11",
    vip: str = VIP,
    port: int = SERVICE_PORT,
    seed: int = 1,
) -> list[Case]:
    """The corpus, addressed from a client (src) to the LB's MAC and the VIP."""
    eth = _mac(dst_mac) + _mac(src_mac)
    e4 = eth + b"\x08\x00"
    payload = b"VNFL" + bytes(10)
    good_udp = ipv4(src_ip, vip, 17, udp(40001, port, payload))
    flow = lambda sport, proto: (_ipint(src_ip), _ipint(vip), sport, port, proto)  # noqa: E731
    rnd = random.Random(seed)
    garbage = bytes(rnd.randrange(256) for _ in range(1500))
    out = [
        Case("empty frame", b"", "truncated-ethernet"),
        Case("10 bytes", garbage[:10], "truncated-ethernet"),
        Case("20-byte frame (Ethernet + 6 bytes of IPv4)", e4 + good_udp[:6], "truncated-ip"),
        Case("Ethernet header only", e4, "truncated-ip"),
        Case(
            "ARP request",
            eth
            + b"\x08\x06"
            + bytes.fromhex("0001080006040001")
            + _mac(src_mac)
            + _ip(src_ip)
            + bytes(6)
            + _ip(vip),
            "arp",
        ),
        Case(
            "IPv6 UDP",
            eth
            + b"\x86\xdd"
            + bytes.fromhex("60000000000811ff")
            + bytes(32)
            + udp(40002, port, b""),
            "ipv6",
        ),
        Case("LLDP ethertype", eth + b"\x88\xcc" + bytes(46), "other-ethertype"),
        Case("all-zero 60-byte frame", bytes(60), "other-ethertype"),
        Case("802.1Q tag cut short", eth + b"\x81\x00\x00", "truncated-ethernet"),
        Case(
            "QinQ inner tag cut short", eth + b"\x88\xa8\x00\x0a\x81\x00\x00", "truncated-ethernet"
        ),
        Case(
            "802.1Q + UDP to the VIP",
            eth + b"\x81\x00\x00\x0a\x08\x00" + ipv4(src_ip, vip, 17, udp(40003, port, payload)),
            "ok",
            flow(40003, 17),
        ),
        Case(
            "QinQ + UDP to the VIP",
            eth
            + b"\x88\xa8\x00\x0a\x81\x00\x00\x0b\x08\x00"
            + ipv4(src_ip, vip, 17, udp(40004, port, payload)),
            "ok",
            flow(40004, 17),
        ),
        Case(
            "IP version 6 in an IPv4 ethertype",
            e4 + ipv4(src_ip, vip, 17, udp(40005, port, payload), version=6),
            "bad-ip-version",
        ),
        Case(
            "IHL 4 (16-byte header)",
            e4 + ipv4(src_ip, vip, 17, udp(40006, port, payload), ihl=4),
            "bad-ihl",
        ),
        Case("IHL 0", e4 + ipv4(src_ip, vip, 17, udp(40007, port, payload), ihl=0), "bad-ihl"),
        Case(
            "IHL 15 beyond the frame", e4 + ipv4(src_ip, vip, 17, b"", ihl=15)[:24], "truncated-ip"
        ),
        Case(
            "total length beyond the frame",
            e4 + ipv4(src_ip, vip, 17, udp(40008, port, payload), total=1400),
            "bad-ip-length",
        ),
        Case(
            "total length below the header",
            e4 + ipv4(src_ip, vip, 17, udp(40009, port, payload), total=12),
            "bad-ip-length",
        ),
        Case(
            "later fragment (offset 185)",
            e4 + ipv4(src_ip, vip, 17, bytes(24), frag=185),
            "fragment",
        ),
        Case(
            "first fragment, UDP length covers the whole datagram",
            e4 + ipv4(src_ip, vip, 17, udp(40010, port, payload, length=3000), frag=0x2000),
            "ok",
            flow(40010, 17),
        ),
        Case(
            "ICMP echo",
            e4 + ipv4(src_ip, vip, 1, bytes.fromhex("0800f7ff00000000")),
            "unsupported-proto",
        ),
        Case(
            "TCP header cut at 10 bytes",
            e4 + ipv4(src_ip, vip, 6, tcp(40011, port)[:10]),
            "truncated-l4",
        ),
        Case(
            "TCP data offset 4",
            e4 + ipv4(src_ip, vip, 6, tcp(40012, port, offset_words=4)),
            "bad-tcp-offset",
        ),
        Case(
            "TCP data offset 15 beyond the segment",
            e4 + ipv4(src_ip, vip, 6, tcp(40013, port, offset_words=15)),
            "truncated-l4",
        ),
        Case(
            "UDP header cut at 6 bytes",
            e4 + ipv4(src_ip, vip, 17, udp(40014, port, b"")[:6]),
            "truncated-l4",
        ),
        Case(
            "UDP length 4",
            e4 + ipv4(src_ip, vip, 17, udp(40015, port, payload, length=4)),
            "bad-udp-length",
        ),
        Case(
            "UDP length beyond the datagram",
            e4 + ipv4(src_ip, vip, 17, udp(40016, port, payload, length=900)),
            "bad-udp-length",
        ),
        Case(
            "IPv4 with options (IHL 6) + UDP",
            e4
            + ipv4(src_ip, vip, 17, udp(40017, port, payload), ihl=6, options=b"\x01\x01\x01\x00"),
            "ok",
            flow(40017, 17),
        ),
        Case(
            "UDP padded to 60 bytes",
            (e4 + ipv4(src_ip, vip, 17, udp(40018, port, b"VNFL"))).ljust(60, b"\0"),
            "ok",
            flow(40018, 17),
        ),
        Case(
            "TCP SYN to the VIP", e4 + ipv4(src_ip, vip, 6, tcp(40019, port)), "ok", flow(40019, 6)
        ),
        Case("1514 bytes of garbage after an IPv4 ethertype", e4 + garbage, ANY),
        Case("1514 bytes of garbage", eth + garbage, ANY),
    ]
    for _i in range(8):  # random truncations of a valid frame
        cut = rnd.randrange(14, 14 + len(good_udp))
        out.append(Case(f"valid UDP frame cut at {cut} bytes", (e4 + good_udp)[:cut], ANY))
    return out


def describe(frame: bytes) -> str:
    """One line for a report: scapy's summary when scapy is there, else the length."""
    try:
        from scapy.layers.l2 import Ether

        return Ether(frame).summary()
    except Exception:  # noqa: BLE001 - a report line must never fail
        return f"{len(frame)} bytes"


def hexdump(frame: bytes, limit: int = 96) -> str:
    text = frame[:limit].hex(" ")
    return text + (" ..." if len(frame) > limit else "")
