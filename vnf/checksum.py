"""The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

IPv4, TCP and UDP protect their headers with the 16-bit one's complement of the one's complement
sum of the data taken as 16-bit words. One's complement addition is "add, then fold the carry back
into the low bits", which makes the sum independent of byte order and of the order of the words.

A NAT rewrites a few header fields of every packet. Recomputing the checksum would read the whole
segment (TCP/UDP checksums cover the payload); RFC 1624 instead patches it from the old and new
values of the changed field only, in O(1):

    HC' = ~(~HC + ~m + m')        (RFC 1624, eqn. 3; all sums one's complement)

Eqn. 3 gives exactly what a full recomputation gives, including the case RFC 1624 is about: the
older form HC' = HC - ~m - m' (RFC 1141) can yield 0xFFFF where recomputation yields 0x0000.
(The one input where eqn. 3 and recomputation differ is data that becomes all zeros: 0x0000
instead of 0xFFFF. No IPv4, TCP or UDP header is all zero.)

UDP adds one rule (RFC 768): checksum 0 means "the sender computed none", so a rewrite leaves it 0,
and a computed 0 is sent as 0xFFFF (the other zero of one's complement). ``vnf/rewrite.py`` applies
these rules; ``vnf/csrc/nf.h`` does the same in C.
"""

from __future__ import annotations

import struct

Buffer = bytes | bytearray | memoryview


def ones_complement_fold(total: int) -> int:
    """Fold carries above bit 15 back in (end-around carry) until the sum fits 16 bits."""
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_complement_sum(data: Buffer) -> int:
    """One's complement sum of data as big-endian 16-bit words (odd length: pad with a zero byte).

    Summing as one big integer and folding at the end is allowed because one's complement
    addition is associative: the carries can be added back at any time (RFC 1071, section 2).
    """
    data = bytes(data)
    if len(data) % 2:
        data += b"\x00"
    return ones_complement_fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def internet_checksum(data: Buffer) -> int:
    """RFC 1071 checksum of data: the complement of its one's complement sum."""
    return ~ones_complement_sum(data) & 0xFFFF


def update16(checksum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one 16-bit word that changed from old to new."""
    total = (~checksum & 0xFFFF) + (~old & 0xFFFF) + new
    return ~ones_complement_fold(total) & 0xFFFF


def update32(checksum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address): two 16-bit words at once."""
    total = (
        (~checksum & 0xFFFF)
        + (~(old >> 16) & 0xFFFF)
        + (~old & 0xFFFF)
        + (new >> 16)
        + (new & 0xFFFF)
    )
    return ~ones_complement_fold(total) & 0xFFFF
