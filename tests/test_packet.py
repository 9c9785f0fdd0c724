"""parse_frame: the 5-tuple of good frames, the right drop reason for bad ones, never an exception.

``scapy_frames`` / ``mangled_frames`` are also used by test_fastpath.py (C == Python).
"""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from vnf.packet import REASONS, DropReason, FiveTuple, Parsed, int_to_ip, ip_to_int, parse_frame

CLIENT, VIP = "10.0.0.1", "10.0.0.100"


def eth():
    return Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")


def udp_frame(**ip_fields):
    return bytes(
        eth() / IP(src=CLIENT, dst=VIP, **ip_fields) / UDP(sport=1234, dport=5000) / b"hello"
    )


# ---- strategies (shared with test_fastpath.py) ---------------------------------------------

ipv4 = st.integers(0, 2**32 - 1)
port = st.integers(0, 65535)


@st.composite
def scapy_frames(draw):
    """Frames scapy builds: any mix of VLAN tags, IP options, fragments, TCP/UDP/ICMP, padding."""
    frame = eth()
    for _ in range(draw(st.integers(0, 2))):
        tag = draw(st.sampled_from([Dot1Q, Dot1AD]))
        frame = frame / tag(vlan=draw(st.integers(0, 4095)), prio=draw(st.integers(0, 7)))
    ip = IP(
        src=int_to_ip(draw(ipv4)),
        dst=int_to_ip(draw(ipv4)),
        flags=draw(st.sampled_from([0, 1, 2])),  # none, MF, DF
        frag=draw(st.sampled_from([0, 0, 0, 1, 185])),
        options=[IPOption_NOP()] * draw(st.integers(0, 8)),
    )
    kind = draw(st.sampled_from(["udp", "tcp", "tcp", "icmp"]))
    if kind == "udp":
        l4 = UDP(sport=draw(port), dport=draw(port))
    elif kind == "tcp":
        l4 = TCP(
            sport=draw(port),
            dport=draw(port),
            flags="S",
            options=[("NOP", None)] * draw(st.integers(0, 12)),
        )
    else:
        l4 = ICMP()
    payload = draw(st.binary(max_size=40))
    padding = draw(st.binary(max_size=24))  # Ethernet trailer: allowed
    return bytes(frame / ip / l4 / payload) + padding


@st.composite
def mangled_frames(draw):
    """A scapy frame, then cut short and/or with a few bytes overwritten anywhere."""
    frame = bytearray(draw(scapy_frames()))
    for _ in range(draw(st.integers(0, 3))):
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    return bytes(frame[: draw(st.integers(0, len(frame)))])


any_frames = st.one_of(scapy_frames(), mangled_frames(), st.binary(max_size=128))


# ---- good frames ----------------------------------------------------------------------------


def test_udp_frame():
    parsed = parse_frame(udp_frame())
    assert parsed == Parsed(
        FiveTuple(ip_to_int(CLIENT), ip_to_int(VIP), 1234, 5000, 17), None, 14, 34, None
    )
    assert str(parsed.flow) == "udp 10.0.0.1:1234 -> 10.0.0.100:5000"


def test_tcp_frame_with_options_on_both_layers():
    frame = bytes(
        eth()
        / IP(src=CLIENT, dst=VIP, options=[IPOption_NOP()] * 8)
        / TCP(sport=40000, dport=80, options=[("MSS", 1460), ("NOP", None)])
    )
    parsed = parse_frame(frame)
    assert parsed.reason is None
    assert parsed.flow == FiveTuple(ip_to_int(CLIENT), ip_to_int(VIP), 40000, 80, 6)
    assert (parsed.l3_offset, parsed.l4_offset) == (14, 14 + 28)
    assert str(parsed.flow) == "tcp 10.0.0.1:40000 -> 10.0.0.100:80"


@pytest.mark.parametrize(
    "tags, vlan, l3",
    [
        ([Dot1Q(vlan=10)], 10, 18),
        ([Dot1AD(vlan=100), Dot1Q(vlan=20)], 100, 22),  # QinQ: the outer id is reported
        ([Dot1Q(vlan=4095, prio=7)], 4095, 18),  # priority bits are not the id
    ],
)
def test_vlan_tags(tags, vlan, l3):
    frame = eth()
    for tag in tags:
        frame = frame / tag
    parsed = parse_frame(bytes(frame / IP(src=CLIENT, dst=VIP) / UDP(sport=1, dport=2)))
    assert parsed.reason is None
    assert (parsed.vlan, parsed.l3_offset, parsed.l4_offset) == (vlan, l3, l3 + 20)


def test_ethernet_padding_after_ip_total_length_is_fine():
    frame = udp_frame()
    assert len(frame) < 60
    assert parse_frame(frame + bytes(60 - len(frame))) == parse_frame(frame)


def test_first_fragment_with_more_fragments_parses():
    # A first fragment: MF set, offset 0; its UDP length covers the whole (bigger) datagram.
    whole = IP(src=CLIENT, dst=VIP, flags="MF") / UDP(sport=1234, dport=5000) / (b"x" * 100)
    first = bytes(eth() / whole)[: 14 + 20 + 8 + 16]
    first = bytearray(first)
    struct.pack_into("!H", first, 14 + 2, 20 + 8 + 16)  # this fragment's IP total length
    parsed = parse_frame(bytes(first))
    assert parsed.reason is None and parsed.flow.dst_port == 5000


def test_accepts_bytes_bytearray_and_memoryview():
    frame = udp_frame()
    expected = parse_frame(frame)
    assert parse_frame(bytearray(frame)) == expected
    assert parse_frame(memoryview(frame)) == expected
    ring = bytearray(100) + frame  # a frame inside a bigger buffer
    assert parse_frame(memoryview(ring)[100:]) == expected


# ---- drop reasons ---------------------------------------------------------------------------


def set_byte(frame, offset, value):
    frame = bytearray(frame)
    frame[offset] = value
    return bytes(frame)


def set_u16(frame, offset, value):
    frame = bytearray(frame)
    struct.pack_into("!H", frame, offset, value)
    return bytes(frame)


UDP_FRAME = udp_frame()
TCP_FRAME = bytes(eth() / IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80))

DROPS = {
    "empty": (b"", DropReason.TRUNCATED_ETHERNET),
    "13 bytes": (UDP_FRAME[:13], DropReason.TRUNCATED_ETHERNET),
    "vlan tag cut": (bytes(eth() / Dot1Q(vlan=1))[:16], DropReason.TRUNCATED_ETHERNET),
    "second tag cut": (
        bytes(eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2))[:20],
        DropReason.TRUNCATED_ETHERNET,
    ),
    "arp": (bytes(eth() / ARP()), DropReason.ARP),
    "arp in vlan": (bytes(eth() / Dot1Q(vlan=5) / ARP()), DropReason.ARP),
    "ipv6": (bytes(eth() / IPv6() / UDP()), DropReason.IPV6),
    "lldp": (set_u16(UDP_FRAME, 12, 0x88CC), DropReason.OTHER_ETHERTYPE),
    "third vlan tag": (
        bytes(eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP()),
        DropReason.OTHER_ETHERTYPE,
    ),
    "19-byte ip": (UDP_FRAME[: 14 + 19], DropReason.TRUNCATED_IP),
    "version 6 in ipv4": (set_byte(UDP_FRAME, 14, 0x65), DropReason.BAD_IP_VERSION),
    "ihl 4": (set_byte(UDP_FRAME, 14, 0x44), DropReason.BAD_IHL),
    "ihl beyond frame": (set_byte(UDP_FRAME, 14, 0x4F)[: 14 + 40], DropReason.TRUNCATED_IP),
    "total length < ihl": (set_u16(UDP_FRAME, 16, 19), DropReason.BAD_IP_LENGTH),
    "total length > frame": (set_u16(UDP_FRAME, 16, 500), DropReason.BAD_IP_LENGTH),
    "frame cut inside udp payload": (UDP_FRAME[:-2], DropReason.BAD_IP_LENGTH),
    "later fragment": (udp_frame(frag=185), DropReason.FRAGMENT),
    "later fragment with MF": (udp_frame(frag=1, flags="MF"), DropReason.FRAGMENT),
    "icmp": (bytes(eth() / IP(src=CLIENT, dst=VIP) / ICMP()), DropReason.UNSUPPORTED_PROTO),
    "udp header cut by ip length": (set_u16(UDP_FRAME, 16, 27), DropReason.TRUNCATED_L4),
    "tcp header cut by ip length": (set_u16(TCP_FRAME, 16, 39), DropReason.TRUNCATED_L4),
    "tcp offset 4": (set_byte(TCP_FRAME, 34 + 12, 0x40), DropReason.BAD_TCP_OFFSET),
    "tcp options beyond ip": (set_byte(TCP_FRAME, 34 + 12, 0x60), DropReason.TRUNCATED_L4),
    "udp length 7": (set_u16(UDP_FRAME, 34 + 4, 7), DropReason.BAD_UDP_LENGTH),
    "udp length > ip payload": (set_u16(UDP_FRAME, 34 + 4, 14), DropReason.BAD_UDP_LENGTH),
}


@pytest.mark.parametrize("name", sorted(DROPS))
def test_drop_reasons(name):
    frame, reason = DROPS[name]
    assert parse_frame(frame) == Parsed(None, reason, 0, 0, None)


def test_every_reason_is_tested_and_reasons_match_the_c_enum_order():
    assert {reason for _, reason in DROPS.values()} == set(REASONS[1:])
    assert REASONS[0] is None
    assert REASONS[1:] == (
        "truncated-ethernet",
        "arp",
        "ipv6",
        "other-ethertype",
        "truncated-ip",
        "bad-ip-version",
        "bad-ihl",
        "bad-ip-length",
        "fragment",
        "unsupported-proto",
        "truncated-l4",
        "bad-tcp-offset",
        "bad-udp-length",
    )


def test_checksums_are_not_verified():
    frame = set_u16(UDP_FRAME, 14 + 10, 0xDEAD)  # wrong IP header checksum
    frame = set_u16(frame, 34 + 6, 0xBEEF)  # wrong UDP checksum
    assert parse_frame(frame).flow == parse_frame(UDP_FRAME).flow


def test_ip_helpers():
    assert ip_to_int("10.0.0.1") == 0x0A000001
    assert int_to_ip(0xC0A80101) == "192.168.1.1"
    assert str(FiveTuple(1, 2, 3, 4, 99)) == "99 0.0.0.1:3 -> 0.0.0.2:4"


# ---- fuzz -----------------------------------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(frame=any_frames, kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_never_raises(frame, kind):
    parsed = parse_frame(kind(frame))
    assert isinstance(parsed, Parsed)
    assert (parsed.flow is None) == (parsed.reason is not None)
    assert parsed.reason in REASONS


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(frame=scapy_frames())
def test_scapy_frames_parse_to_what_scapy_built(frame):
    packet = Ether(frame)
    ip = packet[IP]
    parsed = parse_frame(frame)
    if ip.frag != 0:
        assert parsed.reason == DropReason.FRAGMENT
    elif ICMP in packet:
        assert parsed.reason == DropReason.UNSUPPORTED_PROTO
    else:
        l4 = packet[TCP] if TCP in packet else packet[UDP]
        assert parsed.flow == FiveTuple(
            ip_to_int(ip.src), ip_to_int(ip.dst), l4.sport, l4.dport, ip.proto
        )
        assert parsed.l3_offset == len(packet) - len(ip) - (len(frame) - len(packet))
        assert parsed.l4_offset == parsed.l3_offset + ip.ihl * 4
        outer = packet.payload  # the layer after Ethernet
        assert parsed.vlan == (outer.vlan if isinstance(outer, (Dot1Q, Dot1AD)) else None)
