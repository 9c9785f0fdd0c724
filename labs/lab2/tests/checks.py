"""Lab 2 unit checks of your parser (parse_frame in packet.py) over a corpus of frames.

Each case of ``frames.py`` says what the parser must answer: a drop reason, or "ok" and the
5-tuple. ``"*"`` cases only have to not raise. ``test_public.py`` runs these with pytest; the
grader runs the same checks (and more frames).
"""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import frames  # the release's tests/frames.py
except ImportError:  # the instructor tree: testbed/frames.py
    from testbed import frames


def _check(m, case):
    try:
        parsed = m.parse_frame(case.frame)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(
            f"{case.name}: parse_frame raised {type(exc).__name__}: {exc} "
            f"(frame {case.frame[:40].hex()})"
        ) from None
    if case.expected == frames.ANY:
        return
    if case.expected == "ok":
        assert parsed.reason is None and parsed.flow is not None, (
            f"{case.name}: should parse, got reason {parsed.reason!r}"
        )
        assert tuple(parsed.flow) == case.flow, (
            f"{case.name}: flow {tuple(parsed.flow)} != {case.flow}"
        )
    else:
        assert parsed.flow is None and parsed.reason == case.expected, (
            f"{case.name}: expected drop reason {case.expected!r}, got {parsed.reason!r}"
        )


def _group(name, pred):
    def check(m):
        for case in frames.cases():
            if pred(case):
                _check(m, case)

    check.__name__ = name
    return check


check_short_frames = _group(
    "check_short_frames", lambda c: len(c.frame) <= 20 or "cut short" in c.name
)
check_non_ipv4 = _group(
    "check_non_ipv4", lambda c: c.expected in ("arp", "ipv6", "other-ethertype")
)
check_vlan = _group("check_vlan", lambda c: "802.1Q" in c.name or "QinQ" in c.name)
check_ip_header = _group(
    "check_ip_header",
    lambda c: c.expected in ("bad-ip-version", "bad-ihl", "bad-ip-length") or "IHL" in c.name,
)
check_fragments = _group("check_fragments", lambda c: "fragment" in c.name)
check_l4 = _group(
    "check_l4",
    lambda c: (
        c.expected in ("truncated-l4", "bad-tcp-offset", "bad-udp-length", "unsupported-proto")
    ),
)
check_valid_frames = _group("check_valid_frames", lambda c: c.expected == "ok")
check_garbage = _group("check_garbage", lambda c: c.expected == frames.ANY)


def check_random_bytes_never_raise(m):
    rnd = random.Random(7)
    base = frames.cases()[10].frame
    for _ in range(3000):
        frame = bytearray(base[: rnd.randrange(len(base) + 1)])
        for _ in range(rnd.randrange(4)):
            if frame:
                frame[rnd.randrange(len(frame))] = rnd.randrange(256)
        try:
            m.parse_frame(bytes(frame))
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(
                f"parse_frame raised {type(exc).__name__} on {bytes(frame).hex()}"
            ) from None


CHECKS = [
    check_short_frames,
    check_non_ipv4,
    check_vlan,
    check_ip_header,
    check_fragments,
    check_l4,
    check_valid_frames,
    check_garbage,
    check_random_bytes_never_raise,
]
try:  # the grader's hidden corpus (every field of Parsed): not in the release
    import hidden_checks

    CHECKS += hidden_checks.CHECKS
except ImportError:
    pass
LAB = 2  # which lab (test_public.py, shared by labs 1 and 2, reads it)
MODULE = "packet"
