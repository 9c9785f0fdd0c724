"""The provided AF_PACKET layer of way 2: TPACKET_V3 RX/TX rings shared with the kernel.

See ``vnf/afpacket/ring.py`` for the concepts; ``vnf/ways/afpacket_lb.py`` is the student loop.
"""

from vnf.afpacket.ring import (
    DROP,
    REASON_NAMES,
    RECORD_DTYPE,
    Batch,
    MmsgTx,
    Rewrite,
    RxRing,
    RxStats,
    TxRing,
    TxStats,
    interface_mac,
    mac_bytes,
)

__all__ = [
    "DROP",
    "REASON_NAMES",
    "RECORD_DTYPE",
    "Batch",
    "MmsgTx",
    "Rewrite",
    "RxRing",
    "RxStats",
    "TxRing",
    "TxStats",
    "interface_mac",
    "mac_bytes",
]
