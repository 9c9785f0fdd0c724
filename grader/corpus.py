"""Malformed and fuzzed Ethernet frames for robustness tests of a load balancer's data path.

The policy every way must follow (and the grader checks): a frame the NF cannot parse is
*counted and dropped* — never a crash, never a stall. ``named_cases()`` are hand-made frames,
one per thing that goes wrong on real networks; ``fuzzed()`` mutates valid frames (truncation,
bit flips, random header bytes) so the parser sees everything in between.

Frames are addressed to the LB's MAC so they really enter its data path.
"""
from __future__ import annotations

import random
import struct

from vnf.checksum import internet_checksum

ETH_IPV4, ETH_ARP, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x0806, 0x86DD, 0x8100, 0x88A8


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def ipv4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def ip_header(src: str, dst: str, proto: int, payload_len: int, ihl: int = 5, flags_frag: int = 0,
              total_length: int | None = None, version: int = 4) -> bytes:
    total = total_length if total_length is not None else ihl * 4 + payload_len
    header = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total, 0x1234, flags_frag, 64,
                         proto, 0, ipv4(src), ipv4(dst)) + b"\x01" * (ihl * 4 - 20 if ihl > 5 else 0)
    csum = internet_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:]


def udp(sport: int, dport: int, payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, length if length is not None else 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, offset_words: int = 5, flags: int = 0x02) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, offset_words << 4, flags, 65535, 0, 0) + \
        b"\x00" * max(0, offset_words * 4 - 20)


class FrameFactory:
    """Builds frames from a client to the VIP, as the LB would receive them."""

    def __init__(self, dst_mac: str, src_mac: str, src_ip: str, vip: str, port: int):
        self.eth_dst, self.eth_src = mac(dst_mac), mac(src_mac)
        self.src_ip, self.vip, self.port = src_ip, vip, port

    def eth(self, ethertype: int, body: bytes) -> bytes:
        return self.eth_dst + self.eth_src + struct.pack("!H", ethertype) + body

    def udp_frame(self, sport: int = 40000, payload: bytes = b"FUZZ" + b"\x00" * 10) -> bytes:
        # Not the traffic driver's magic: a backend counts these as malformed, not as flows.
        seg = udp(sport, self.port, payload)
        return self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg)) + seg)

    def tcp_frame(self, sport: int = 40001) -> bytes:
        seg = tcp(sport, self.port)
        return self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 6, len(seg)) + seg)

    def named_cases(self) -> list[tuple[str, bytes]]:
        """(name, frame): one of each malformation the parser must survive."""
        good_udp = self.udp_frame()
        seg = udp(40002, self.port, b"x" * 16)
        ip_ok = ip_header(self.src_ip, self.vip, 17, len(seg))
        vlan_tag = struct.pack("!HH", 100, ETH_IPV4)
        return [
            ("empty frame", b""),
            ("1 byte", b"\x00"),
            ("13 bytes (short Ethernet header)", good_udp[:13]),
            ("14 bytes (Ethernet header only)", good_udp[:14]),
            ("20-byte frame", good_udp[:20]),
            ("truncated IPv4 header", good_udp[:30]),
            ("truncated UDP header", good_udp[:38]),
            ("ARP request", self.eth(ETH_ARP, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1,
                                                          self.eth_src, ipv4(self.src_ip),
                                                          b"\x00" * 6, ipv4(self.vip)))),
            ("IPv6", self.eth(ETH_IPV6, b"\x60" + b"\x00" * 39 + seg)),
            ("unknown ethertype", self.eth(0x88B5, b"\x00" * 46)),
            ("IP version 6 in an IPv4 ethertype", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), version=6) + seg)),
            ("IHL 4 (< 5)", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), ihl=4) + seg)),
            ("IHL 15 beyond the frame", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), ihl=15)[:24] + seg[:4])),
            ("IP options (IHL 6), valid", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), ihl=6) + seg)),
            ("total length beyond the frame", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), total_length=1400) + seg)),
            ("total length < header", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), total_length=12) + seg)),
            ("non-first fragment", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), flags_frag=185) + seg)),
            ("first fragment (MF set)", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, len(seg), flags_frag=0x2000) + seg)),
            ("ICMP echo", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 1, 8) + b"\x08\x00\x00\x00\x00\x01\x00\x01")),
            ("UDP length 4 (< 8)", self.eth(ETH_IPV4, ip_ok + udp(40003, self.port, b"x" * 16, length=4))),
            ("UDP length beyond IP payload", self.eth(ETH_IPV4, ip_ok + udp(40004, self.port, b"x" * 16, length=900))),
            ("TCP data offset 2", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 6, 20) + tcp(40005, self.port, offset_words=2)[:20])),
            ("TCP data offset 15 beyond the frame", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 6, 20) + tcp(40006, self.port, offset_words=15)[:20])),
            ("802.1Q-tagged UDP", self.eth(ETH_VLAN, vlan_tag + ip_ok + seg)),
            ("802.1Q tag, truncated", self.eth(ETH_VLAN, vlan_tag[:2])),
            ("QinQ, two tags", self.eth(ETH_QINQ, struct.pack("!HH", 10, ETH_VLAN) + vlan_tag + ip_ok + seg)),
            ("three VLAN tags", self.eth(ETH_VLAN, struct.pack("!HHHH", 1, ETH_VLAN, 2, ETH_VLAN) + vlan_tag + ip_ok + seg)),
            ("bad IP checksum (forwarded unchanged by policy)", good_udp[:24] + b"\xde\xad" + good_udp[26:]),
            ("oversized 9000-byte frame", self.eth(ETH_IPV4, ip_header(self.src_ip, self.vip, 17, 8958) + udp(40007, self.port, b"j" * 8950))),
            ("random garbage 64 bytes", bytes(random.Random(1).randrange(256) for _ in range(64))),
        ]

    def fuzzed(self, count: int, seed: int = 0) -> list[bytes]:
        """``count`` frames: valid UDP/TCP frames mutated by truncation, bit flips and random
        header bytes. Every one is at least an Ethernet header long (shorter frames cannot exist
        on the wire; ``named_cases`` has them for parser unit tests). Deterministic for a seed."""
        rng = random.Random(seed)
        templates = [self.udp_frame(40100 + i) for i in range(8)] + \
                    [self.tcp_frame(40200 + i) for i in range(8)] + \
                    [f for _, f in self.named_cases() if 14 <= len(f) <= 1514]   # fits a 1500 MTU
        out = []
        for i in range(count):
            frame = bytearray(rng.choice(templates))
            kind = i % 4
            if kind == 0 and len(frame) > 14:                   # truncate anywhere past the MACs
                del frame[rng.randrange(14, len(frame) + 1):]
            elif kind == 1:                                     # flip bits in the headers
                for _ in range(rng.randint(1, 4)):
                    if len(frame) > 14:
                        pos = rng.randrange(12, min(len(frame), 60))
                        frame[pos] ^= 1 << rng.randrange(8)
            elif kind == 2 and len(frame) > 14:                 # random bytes over the headers
                start = rng.randrange(12, min(len(frame), 54))
                for pos in range(start, min(len(frame), start + rng.randint(1, 8))):
                    frame[pos] = rng.randrange(256)
            else:                                               # pure noise after the MACs
                frame = bytearray(frame[:12]) + bytearray(rng.getrandbits(8) for _ in range(rng.randrange(2, 80)))
            if len(frame) < 14:
                frame = bytearray(frame) + bytes(14 - len(frame))
            out.append(bytes(frame))
        return out


def send_frames(iface: str, frames: list[bytes]) -> dict:
    """Send raw frames out of ``iface`` (AF_PACKET). Frames shorter than an Ethernet header or
    longer than the MTU cannot exist on the wire and are counted as skipped."""
    import socket
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sent = skipped = 0
    for frame in frames:
        if len(frame) < 14:
            skipped += 1
            continue
        try:
            sock.send(frame)
            sent += 1
        except OSError:          # EMSGSIZE beyond the MTU, ENOBUFS under pressure
            skipped += 1
    sock.close()
    return {"sent": sent, "skipped": skipped}


def main(argv=None) -> int:
    import argparse
    import json
    p = argparse.ArgumentParser(prog="python -m grader.corpus",
                                description="send the malformed corpus and fuzzed frames at a MAC")
    p.add_argument("--iface", required=True)
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--src-mac", required=True)
    p.add_argument("--src-ip", required=True)
    p.add_argument("--vip", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=100_000, help="fuzzed frames on top of the named cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the send summary as JSON")
    args = p.parse_args(argv)
    factory = FrameFactory(args.dst_mac, args.src_mac, args.src_ip, args.vip, args.port)
    frames = [f for _, f in factory.named_cases()] + factory.fuzzed(args.count, args.seed)
    summary = send_frames(args.iface, frames)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
