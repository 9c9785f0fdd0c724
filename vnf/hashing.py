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
