"""In-place header rewrites: what the LB does to a packet after choosing its backend.

Two ways to hand a packet to a backend, both in the lecture:

* **L2 direct server return (DSR)**: only the Ethernet addresses change. The backend also owns
  the VIP (on a loopback), so it accepts the packet as is and answers the client directly; the
  return traffic never crosses the LB. No IP or L4 field changes, so no checksum changes.
* **NAT**: the destination IP/port become the backend's (``nat_rewrite_dst``), and the answers
  coming back get the VIP as source again (``nat_rewrite_src``). The IPv4 header checksum covers
  the addresses; the TCP/UDP checksum covers a *pseudo-header* with both addresses, plus the
  ports, so both checksums change. They are patched incrementally (RFC 1624, ``vnf.checksum``):
  O(1) work instead of a pass over the payload.

All functions modify ``frame`` (a bytearray or writable memoryview) in place and take the
``Parsed`` of that frame, so the offsets are known without a second parse. ``vnf/csrc/nf.h``
does the same in C (``nf_set_macs``, ``nf_nat_dst``, ``nf_nat_src``).
"""

from __future__ import annotations

import struct

from vnf.checksum import update16, update32
from vnf.packet import IPPROTO_TCP, IPPROTO_UDP, Parsed

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

IP_CHECKSUM = 10
IP_SRC, IP_DST = 12, 16
L4_SRC_PORT, L4_DST_PORT = 0, 2
TCP_CHECKSUM = 16
UDP_CHECKSUM = 6


def set_dst_mac(frame, mac_bytes: bytes) -> None:
    """Point the frame at a backend's MAC (L2 DSR)."""
    frame[0:6] = mac_bytes


def set_src_mac(frame, mac_bytes: bytes) -> None:
    """Send the frame from the LB's own MAC (switches learn it; the backend answers to it)."""
    frame[6:12] = mac_bytes


def set_macs(frame, dst_mac: bytes, src_mac: bytes) -> None:
    frame[0:6] = dst_mac
    frame[6:12] = src_mac


def _nat_rewrite(
    frame, parsed: Parsed, ip_field: int, port_field: int, new_ip: int, new_port: int
) -> None:
    """Replace one address and one port, and patch both checksums (see the module docstring)."""
    assert parsed.flow is not None, "a dropped frame has no 5-tuple to rewrite"
    l3, l4, proto = parsed.l3_offset, parsed.l4_offset, parsed.flow.proto
    old_ip = _U32.unpack_from(frame, l3 + ip_field)[0]
    old_port = _U16.unpack_from(frame, l4 + port_field)[0]

    ip_checksum = _U16.unpack_from(frame, l3 + IP_CHECKSUM)[0]
    _U16.pack_into(frame, l3 + IP_CHECKSUM, update32(ip_checksum, old_ip, new_ip))
    _U32.pack_into(frame, l3 + ip_field, new_ip)

    l4_checksum_at = l4 + (TCP_CHECKSUM if proto == IPPROTO_TCP else UDP_CHECKSUM)
    l4_checksum = _U16.unpack_from(frame, l4_checksum_at)[0]
    # UDP checksum 0 means "none was computed" (RFC 768): leave it 0.
    if proto == IPPROTO_TCP or l4_checksum != 0:
        l4_checksum = update32(l4_checksum, old_ip, new_ip)  # pseudo-header address
        l4_checksum = update16(l4_checksum, old_port, new_port)  # the port itself
        if proto == IPPROTO_UDP and l4_checksum == 0:
            l4_checksum = 0xFFFF  # computed 0 is sent as 0xFFFF
        _U16.pack_into(frame, l4_checksum_at, l4_checksum)
    _U16.pack_into(frame, l4 + port_field, new_port)


def nat_rewrite_dst(frame, parsed: Parsed, new_ip: int, new_port: int) -> None:
    """Destination NAT, client -> backend: dst IP/port become the backend's (host-order ints)."""
    _nat_rewrite(frame, parsed, IP_DST, L4_DST_PORT, new_ip, new_port)


def nat_rewrite_src(frame, parsed: Parsed, new_ip: int, new_port: int) -> None:
    """Source NAT, backend -> client: src IP/port become the VIP's again."""
    _nat_rewrite(frame, parsed, IP_SRC, L4_SRC_PORT, new_ip, new_port)
