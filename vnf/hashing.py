"""The flow hash: which number a 5-tuple maps to.

The contract is this exact function, CRC-32 (zlib's, IEEE 802.3) of the five fields packed in
network byte order (13 bytes). Hash-mod-N and Maglev both index with it, and the C layer
(``nf_flow_hash`` in ``vnf/csrc/nf.h``) computes the same value, so every way and every LB
instance sends a given flow to the same backend. CRC-32 is not a cryptographic hash: a client
that wants to aim its flows at one backend can; real LBs add a secret seed.
"""

from __future__ import annotations

import struct
import zlib

_FLOW_KEY = struct.Struct("!IIHHB")


def flow_hash(flow) -> int:
    """32-bit hash of a FiveTuple (src_ip, dst_ip, src_port, dst_port, proto)."""
    return zlib.crc32(_FLOW_KEY.pack(*flow))


def cache_bits(flow_capacity: int) -> int:
    """log2 of the slots of a flow cache made for ``flow_capacity`` flows (``vnf.batch``): the
    table is the power of two >= it."""
    return max(0, int(flow_capacity) - 1).bit_length()


def cache_slot(flow_hash: int, bits: int) -> int:
    """The first slot a flow may occupy in a table of ``2**bits`` slots (the second is this one
    ^ 1: the two make its set). Fibonacci hashing (the top bits of hash * 2^32/phi), because
    CRC-32 is linear and flows differing in a few bits (stepped source ports) would share few
    low-bit patterns. The C kernel computes the same (nf_cache_slot in nf.h). Public: which
    flows share a set is also what a check of the cache's eviction must know."""
    return ((flow_hash * 2654435769) & 0xFFFFFFFF) >> (32 - bits) if bits else 0
