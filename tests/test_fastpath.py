"""The C layer (vnf/csrc/nf.h via vnf._fastpath) must agree with the Python reference bit for bit:
same drop reason, same 5-tuple, offsets and VLAN, same flow hash, same rewritten bytes."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from test_packet import any_frames

from vnf.hashing import flow_hash
from vnf.packet import REASONS, FiveTuple, parse_frame
from vnf.rewrite import nat_rewrite_dst, nat_rewrite_src, set_macs

fastpath = pytest.importorskip("vnf._fastpath", reason="build it: setup.py build_ext --inplace")

SLOW_OK = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def python_view(frame):
    """parse_frame's answer in parse_one's shape."""
    p = parse_frame(frame)
    if p.flow is None:
        return (REASONS.index(p.reason), 0, 0, 0, 0, 0, 0, 0, 0, None)
    return (0, *p.flow, flow_hash(p.flow), p.l3_offset, p.l4_offset, p.vlan)


def test_reason_count_matches():
    assert fastpath.REASON_COUNT == len(REASONS)


@SLOW_OK
@given(frame=any_frames)
def test_parse_one_equals_parse_frame(frame):
    assert fastpath.parse_one(frame) == python_view(frame)


@given(
    flow=st.builds(
        FiveTuple,
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.integers(0, 255),
    )
)
def test_flow_hash_equals_python(flow):
    assert fastpath.flow_hash(*flow) == flow_hash(flow)


def batch_arrays(n):
    return dict(
        src_ip=np.zeros(n, np.uint32),
        dst_ip=np.zeros(n, np.uint32),
        src_port=np.zeros(n, np.uint16),
        dst_port=np.zeros(n, np.uint16),
        proto=np.zeros(n, np.uint8),
        hash=np.zeros(n, np.uint32),
        reason=np.zeros(n, np.uint8),
        l4_offset=np.zeros(n, np.uint16),
    )


def run_batch(buf, offsets, lengths, count, out):
    return fastpath.parse_batch(
        buf,
        offsets,
        lengths,
        count,
        out["src_ip"],
        out["dst_ip"],
        out["src_port"],
        out["dst_port"],
        out["proto"],
        out["hash"],
        out["reason"],
        out["l4_offset"],
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(any_frames, min_size=1, max_size=20), gap=st.integers(0, 7))
def test_parse_batch_equals_parse_one(frames, gap):
    # Frames laid out in one buffer with gaps, as in a ring block.
    buf, offsets = bytearray(), []
    for frame in frames:
        buf += bytes(gap)
        offsets.append(len(buf))
        buf += frame
    n = len(frames)
    out = batch_arrays(n + 3)  # longer than count is fine
    ok = run_batch(
        bytes(buf),
        np.array(offsets, np.uint32),
        np.array([len(f) for f in frames], np.uint32),
        n,
        out,
    )
    expected = [fastpath.parse_one(f) for f in frames]
    assert ok == sum(e[0] == 0 for e in expected)
    for i, e in enumerate(expected):
        got = (
            int(out["reason"][i]),
            int(out["src_ip"][i]),
            int(out["dst_ip"][i]),
            int(out["src_port"][i]),
            int(out["dst_port"][i]),
            int(out["proto"][i]),
            int(out["hash"][i]),
            int(out["l4_offset"][i]),
        )
        assert got == (e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[8])


def test_parse_batch_reads_an_mmap():
    import mmap

    frame = bytes.fromhex(
        "00000000000200000000000108004500001c00000000401100000a0000010a00006404d2138800080000"
    )
    ring = mmap.mmap(-1, 4096)
    ring[100 : 100 + len(frame)] = frame
    out = batch_arrays(1)
    assert (
        run_batch(ring, np.array([100], np.uint32), np.array([len(frame)], np.uint32), 1, out) == 1
    )
    assert out["dst_port"][0] == 5000 and out["hash"][0] == 0x22F57402
    ring.close()


def test_parse_batch_rejects_bad_arguments():
    out = batch_arrays(2)
    offsets, lengths = np.array([0, 10], np.uint32), np.array([60, 60], np.uint32)
    with pytest.raises(ValueError, match="frame 1: offset 10 \\+ length 60 is beyond"):
        run_batch(bytes(64), offsets, lengths, 2, out)
    with pytest.raises(ValueError, match="out_src_ip: has 2 items, need at least 3"):
        run_batch(bytes(200), np.zeros(3, np.uint32), np.zeros(3, np.uint32), 3, out)
    with pytest.raises(TypeError, match="offsets: need an integer array of 4-byte items"):
        run_batch(bytes(64), np.zeros(2, np.uint16), lengths, 2, out)
    out["proto"] = np.zeros(2, np.float32).view(np.uint8)[:2]  # still bytes: fine
    out["hash"] = np.zeros(2, np.float32)
    with pytest.raises(TypeError, match="out_hash"):
        run_batch(bytes(200), offsets, lengths, 2, out)
    with pytest.raises(ValueError, match="count"):
        run_batch(bytes(200), offsets, lengths, -1, batch_arrays(2))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=any_frames,
    new_ip=st.integers(0, 2**32 - 1),
    new_port=st.integers(0, 65535),
    which=st.sampled_from(["dst", "src"]),
)
def test_c_nat_rewrite_equals_python(frame, new_ip, new_port, which):
    parsed = parse_frame(frame)
    c_frame, py_frame = bytearray(frame), bytearray(frame)
    c_nat = fastpath.nat_dst if which == "dst" else fastpath.nat_src
    reason = c_nat(c_frame, new_ip, new_port)
    assert reason == REASONS.index(parsed.reason)
    if parsed.flow is not None:
        py_nat = nat_rewrite_dst if which == "dst" else nat_rewrite_src
        py_nat(py_frame, parsed, new_ip, new_port)
    assert c_frame == py_frame  # and untouched when the frame did not parse


def test_c_set_macs_equals_python():
    frame = bytes(range(60))
    c_frame, py_frame = bytearray(frame), bytearray(frame)
    fastpath.set_macs(c_frame, b"\xaa" * 6, b"\xbb" * 6)
    set_macs(py_frame, b"\xaa" * 6, b"\xbb" * 6)
    assert c_frame == py_frame
    with pytest.raises(ValueError):
        fastpath.set_macs(bytearray(60), b"\xaa" * 5, b"\xbb" * 6)
    with pytest.raises(BufferError):
        fastpath.set_macs(frame, b"\xaa" * 6, b"\xbb" * 6)  # bytes are read-only


def test_parse_one_equals_parse_frame_next_to_the_common_frame():
    """nf_parse checks the common frame (no VLAN, IPv4 without options, TCP or UDP) first, on a
    fast path of its own; every other frame takes the general checks. Each byte of the headers
    that path reads, set to each of its 256 values, and each length the frame could be cut to,
    must parse exactly as vnf.packet does, on whichever path it lands."""
    base = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02") / IP(
        src="10.0.0.1", dst="10.0.0.100"
    )
    frames = [
        bytes(base / UDP(sport=1234, dport=8080) / (b"x" * 18)),
        bytes(base / TCP(sport=40000, dport=8080, flags="S")),
    ]
    checked = 0
    for good in frames:
        assert fastpath.parse_one(good)[0] == 0  # the fast path's own frame parses
        for cut in range(len(good) + 1):
            frame = good[:cut]
            assert fastpath.parse_one(frame) == python_view(frame), cut
            checked += 1
        for at in range(12, len(good)):  # ethertype .. the end of the L4 header
            for value in range(256):
                frame = bytearray(good)
                frame[at] = value
                assert fastpath.parse_one(bytes(frame)) == python_view(bytes(frame)), (at, value)
                checked += 1
    assert checked > 20000
