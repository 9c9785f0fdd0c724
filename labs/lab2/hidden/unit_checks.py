"""Lab 2's hidden parser checks (instructor-only: never released). The grader copies this file
next to the public ``checks.py`` as ``hidden_checks.py``; ``checks.py`` adds its CHECKS.

The public corpus compares the reason and the 5-tuple. The frame rewrite also uses the offsets
and the VLAN id ``parse_frame`` returns (NAT rewrites the IP header at ``l3_offset`` and the
ports at ``l4_offset``), so these checks compare *every* field of ``Parsed`` on frames the
public corpus does not hold: 0, 1 or 2 VLAN tags (802.1Q, 802.1ad), IPv4 options of every
length, TCP options, first fragments, odd ports and addresses. Each expected value follows
from how the frame is built here (where its headers were put), not from another parser.
"""

import random
import struct

try:
    import frames  # next to checks.py in the grader's unit directory
except ImportError:  # the instructor tree
    from testbed import frames

ETH_8021Q, ETH_8021AD, ETH_IPV4 = 0x8100, 0x88A8, 0x0800


def _build(rnd, tags, ihl, proto, frag=0, tcp_words=5, pad=0):
    """One frame and what parse_frame must say about it: (frame, expected fields)."""
    src, dst = rnd.getrandbits(32), rnd.getrandbits(32)
    sport, dport = rnd.randrange(1, 65536), rnd.randrange(1, 65536)
    eth = bytes(rnd.getrandbits(8) for _ in range(12))
    vlan = None
    l2 = eth
    tpids = [ETH_8021AD, ETH_8021Q][-tags:] if tags == 2 else [ETH_8021Q] * tags
    for i, tpid in enumerate(tpids):
        tci = (rnd.randrange(8) << 13) | rnd.randrange(1, 4095)
        if i == 0:
            vlan = tci & 0x0FFF
        l2 += struct.pack("!H", tpid) + struct.pack("!H", tci)
    l2 += struct.pack("!H", ETH_IPV4)
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, tcp_words << 4, 0x18, 1024, 0, 0)
        l4 += bytes(4 * (tcp_words - 5)) + b"data"
    else:
        body = b"VNFL" + bytes(rnd.randrange(0, 40))
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    options = bytes([1] * (4 * (ihl - 5)))
    total = 4 * ihl + len(l4)
    ip = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            total,
            7,
            frag,
            64,
            proto,
            0,
            src.to_bytes(4, "big"),
            dst.to_bytes(4, "big"),
        )
        + options
    )
    frame = l2 + ip + l4 + bytes(pad)
    l3_off = len(l2)
    want = {
        "reason": None,
        "flow": (src, dst, sport, dport, proto),
        "l3_offset": l3_off,
        "l4_offset": l3_off + 4 * ihl,
        "vlan": vlan,
    }
    return frame, want


def _cases(seed=2024, n=400):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        tags = i % 3
        ihl = 5 + rnd.randrange(11) if i % 4 else 5
        proto = 6 if i % 2 else 17
        frag = 0x2000 if i % 7 == 0 and proto == 17 else 0  # first fragment: still parsed
        tcp_words = 5 + rnd.randrange(11) if proto == 6 else 5
        pad = rnd.choice((0, 0, 0, 18))  # Ethernet padding after IP
        frame, want = _build(rnd, tags, ihl, proto, frag, tcp_words, pad)
        name = (
            f"{['untagged', '802.1Q', 'QinQ'][tags]} {'TCP' if proto == 6 else 'UDP'} "
            f"IHL {ihl}{' first fragment' if frag else ''}{' padded' if pad else ''}"
        )
        out.append((name, frame, want))
    return out


def _fields(parsed):
    return {
        "reason": parsed.reason,
        "flow": None if parsed.flow is None else tuple(parsed.flow),
        "l3_offset": parsed.l3_offset,
        "l4_offset": parsed.l4_offset,
        "vlan": parsed.vlan,
    }


def check_hidden_every_field(m):
    """400 valid frames: reason, 5-tuple, both offsets and the VLAN id all right."""
    for name, frame, want in _cases():
        got = _fields(m.parse_frame(frame))
        bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        assert not bad, (
            f"{name}: "
            + "; ".join(f"{k} {g!r}, expected {w!r}" for k, (g, w) in bad.items())
            + f" (frame {frame[:48].hex()})"
        )


def check_hidden_drops_have_no_offsets(m):
    """Every public malformed frame: a drop is flow None, offsets 0, vlan None."""
    for case in frames.cases(seed=99):
        if case.expected in ("ok", frames.ANY):
            continue
        p = m.parse_frame(case.frame)
        assert (p.flow, p.reason, p.l3_offset, p.l4_offset, p.vlan) == (
            None,
            case.expected,
            0,
            0,
            None,
        ), f"{case.name}: got {tuple(p)!r}, expected a drop {case.expected!r} with no offsets"


CHECKS = [check_hidden_every_field, check_hidden_drops_have_no_offsets]
