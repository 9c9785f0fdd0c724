"""Tests of the provided AF_PACKET layer (vnf/afpacket): C block walk/parse/TX fill and the rings.

Two kinds of test:
* unit tests feed ``_ring`` a hand-built TPACKET_V3 block and TX ring in a bytearray (no kernel);
* network tests run a *scenario* (a function below) in a child process inside a vnflab sandbox
  (fresh network + PID + mount namespaces): it makes its own veth pair, and when the child exits
  the kernel deletes the namespace with everything in it, whatever happened. The scenario asserts;
  the parent checks the exit code and shows the child's output on failure.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from vnf.afpacket import _ring  # noqa: E402
from vnf.afpacket.ring import (  # noqa: E402
    DROP,
    REASON_NAMES,
    RECORD_DTYPE,
    MmsgTx,
    Rewrite,
    RxRing,
    TxRing,
    interface_mac,
)

ETH_P_ALL = 3
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
LB_MAC = "02:00:00:00:00:99"
BACKEND_MACS = ["02:00:00:00:00:b1", "02:00:00:00:00:b2", "02:00:00:00:00:b3"]


def _scapy():
    from scapy.all import ARP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw  # noqa: F401

    return locals()


def udp_frame(sport=1000, dport=80, payload=b"hello", src="10.0.0.1", dst="10.0.0.2", vlan=None):
    s = _scapy()
    eth = s["Ether"](src=MAC_A, dst=MAC_B)
    if vlan is not None:
        eth = eth / s["Dot1Q"](vlan=vlan)
    return bytes(eth / s["IP"](src=src, dst=dst) / s["UDP"](sport=sport, dport=dport) / payload)


def malformed_frames():
    """(frame, expected reason) pairs that must come through a batch without harm."""
    s = _scapy()
    Ether, IP, UDP = s["Ether"], s["IP"], s["UDP"]
    good = udp_frame(payload=b"x" * 30)
    eth = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0800))
    frag = bytes(
        Ether(src=MAC_A, dst=MAC_B)
        / IP(src="10.0.0.1", dst="10.0.0.2", frag=10, proto=17)
        / (b"y" * 30)
    )
    bad_udp = bytearray(good)
    struct.pack_into("!H", bad_udp, 14 + 20 + 4, 3)  # UDP length 3 < 8
    return [
        (eth + b"\x45\x00", "truncated-ip"),  # 2 bytes of IP
        (bytes(Ether(src=MAC_A, dst=MAC_B) / s["ARP"](pdst="10.0.0.2")), "arp"),
        (bytes(Ether(src=MAC_A, dst=MAC_B) / s["IPv6"]() / UDP()), "ipv6"),
        (bytes(Ether(src=MAC_A, dst=MAC_B, type=0x1234) / (b"z" * 40)), "other-ethertype"),
        (frag, "fragment"),
        (bytes(bad_udp), "bad-udp-length"),
        (
            bytes(
                Ether(src=MAC_A, dst=MAC_B)
                / IP(src="10.0.0.1", dst="10.0.0.2", proto=47)
                / (b"g" * 20)
            ),
            "unsupported-proto",
        ),
        (good, "ok"),
    ]


# ---------------------------------------------------------------------------------------------
# Unit tests on hand-made rings (no kernel involved)

TP3_HDR = struct.Struct("<IIIIIIHHIIHH8x")  # struct tpacket3_hdr, 48 bytes
SLL_OFF = 48  # sockaddr_ll follows at TPACKET_ALIGN(48)
TP_STATUS_USER, TP_STATUS_VLAN_VALID, TP_STATUS_CSUMNOTREADY = 1, 1 << 4, 1 << 3


def build_block(frames, block_size=1 << 16, pkttypes=None, statuses=None, tcis=None):
    """A TPACKET_V3 block as the kernel lays it out: descriptor, then a chain of
    tpacket3_hdr + sockaddr_ll + frame, each entry 16-byte aligned."""
    block = bytearray(block_size)
    first = 48
    struct.pack_into("<III", block, 8, TP_STATUS_USER, len(frames), first)
    pos = first
    for k, frame in enumerate(frames):
        mac = 80  # header + sll, aligned
        entry = (mac + len(frame) + 15) & ~15
        nxt = entry if k + 1 < len(frames) else 0
        status = TP_STATUS_USER | (statuses[k] if statuses else 0)
        tci = tcis[k] if tcis else 0
        TP3_HDR.pack_into(
            block,
            pos,
            nxt,
            0,
            0,
            len(frame),
            len(frame),
            status,
            mac,
            mac + 14,
            0,
            tci,
            0x8100 if tci else 0,
            0,
        )
        block[pos + SLL_OFF + 10] = pkttypes[k] if pkttypes else 0  # sll_pkttype
        block[pos + mac : pos + mac + len(frame)] = frame
        pos += entry
    return block


def records(n=64):
    return np.zeros(n, dtype=RECORD_DTYPE)


def test_record_layout_matches_c():
    assert RECORD_DTYPE.itemsize == _ring.RECORD_SIZE
    assert _ring.TX_DATA_OFFSET == 48


def test_parse_block_matches_python_parser():
    from vnf.packet import parse_frame

    cases = malformed_frames() + [(b"\x00" * 10, "truncated-ethernet")]
    frames = [f for f, _ in cases]
    block = build_block(frames)
    recs = records()
    n = _ring.parse_block(block, 0, len(block), recs)
    assert n == len(frames)
    for i, (frame, reason) in enumerate(cases):
        assert REASON_NAMES[recs[i]["reason"]] == reason
        assert bytes(block[recs[i]["offset"] : recs[i]["offset"] + recs[i]["length"]]) == frame
        ref = parse_frame(frame)
        assert (ref.reason or "ok") == reason
        if ref.flow is not None:
            assert (
                tuple(
                    int(recs[i][k]) for k in ("src_ip", "dst_ip", "src_port", "dst_port", "proto")
                )
                == ref.flow
            )
            from vnf.hashing import flow_hash

            assert int(recs[i]["hash"]) == flow_hash(ref.flow)
            assert (recs[i]["l3_offset"], recs[i]["l4_offset"]) == (ref.l3_offset, ref.l4_offset)
    flows = _ring.flows(recs, n, None)
    assert [f is None for f in flows] == [r != "ok" for _, r in cases]


def test_flows_builds_five_tuples():
    from vnf.packet import FiveTuple

    block = build_block([udp_frame(sport=5000 + i) for i in range(10)])
    recs = records()
    n = _ring.parse_block(block, 0, len(block), recs)
    flows = _ring.flows(recs, n, FiveTuple)
    assert all(type(f) is FiveTuple for f in flows)
    assert flows[3] == FiveTuple(0x0A000001, 0x0A000002, 5003, 80, 17)
    assert {flows[3]: "x"}[FiveTuple(0x0A000001, 0x0A000002, 5003, 80, 17)] == "x"
    with pytest.raises(TypeError):
        _ring.flows(recs, n, dict)
    import gc

    assert not gc.is_tracked(flows[0])  # ints only: no cycles to watch
    gc.collect()
    assert flows[3].src_port == 5003 and "10.0.0.1" in str(flows[3])


def test_block_ownership_and_outgoing_skipped():
    block = build_block([udp_frame(sport=1), udp_frame(sport=2)], pkttypes=[0, 4])  # 4 = OUTGOING
    recs = records()
    assert _ring.block_ready(block, 0)
    assert _ring.parse_block(block, 0, len(block), recs) == 1
    assert recs[0]["src_port"] == 1
    _ring.release_block(block, 0)
    assert not _ring.block_ready(block, 0)
    assert _ring.parse_block(block, 0, len(block), recs) == -1


def test_corrupt_chain_does_not_escape_block():
    block = build_block([udp_frame()] * 3, block_size=4096)
    struct.pack_into("<I", block, 48, 1 << 30)  # first tp_next_offset points far away
    struct.pack_into("<I", block, 12, 1000)  # and num_pkts lies
    assert _ring.parse_block(block, 0, len(block), records()) == 1
    with pytest.raises(ValueError):
        _ring.parse_block(block, 4000, 4096, records())


def _tx_ring(frame_size=256, count=8):
    return bytearray(frame_size * count), frame_size, count


def _tx_frame(ring, frame_size, slot):
    length = struct.unpack_from("<I", ring, slot * frame_size + 16)[0]
    base = slot * frame_size + 48
    return bytes(ring[base : base + length])


def test_tx_fill_dsr_vlan_and_drops():
    frames = [udp_frame(sport=i) for i in range(4)] + [b"\x00" * 10]
    block = build_block(
        frames, statuses=[0, TP_STATUS_VLAN_VALID, 0, 0, 0], tcis=[0, 0x2007, 0, 0, 0]
    )
    recs = records()
    n = _ring.parse_block(block, 0, len(block), recs)
    assert recs[1]["vlan"] == 7
    tx, fs, count = _tx_ring()
    macs = Rewrite.dsr(LB_MAC, BACKEND_MACS)
    i, slot, sent, dropped = _ring.tx_fill(
        tx, fs, count, 0, block, recs, n, 0, [0, 1, DROP, None, 2], macs.src_mac, macs.dst_macs
    )
    assert (i, slot, sent, dropped) == (5, 2, 2, 3)
    out0, out1 = _tx_frame(tx, fs, 0), _tx_frame(tx, fs, 1)
    assert out0[:12] == bytes.fromhex("0200000000b1") + bytes.fromhex("020000000099")
    assert out0[12:] == frames[0][12:]
    s = _scapy()
    tagged = s["Ether"](out1)
    assert tagged[s["Dot1Q"]].vlan == 7 and tagged[s["Dot1Q"]].prio == 1
    assert bytes(tagged[s["IP"]]) == frames[1][14:]
    assert struct.unpack_from("<I", tx, 20)[0] == 1  # TP_STATUS_SEND_REQUEST


def test_tx_fill_stops_when_ring_full_and_resumes():
    frames = [udp_frame(sport=i) for i in range(6)]
    block = build_block(frames)
    recs = records()
    n = _ring.parse_block(block, 0, len(block), recs)
    tx, fs, count = _tx_ring(count=4)
    m = Rewrite.dsr(LB_MAC, BACKEND_MACS)
    i, slot, sent, _ = _ring.tx_fill(
        tx, fs, count, 0, block, recs, n, 0, [0] * n, m.src_mac, m.dst_macs
    )
    assert (i, slot, sent) == (4, 0, 4)  # slot 0 still "in flight"
    assert _ring.tx_pending(tx, fs, count) == 4
    for s in range(count):  # the kernel hands them back
        struct.pack_into("<I", tx, s * fs + 20, 0)
    i, slot, sent, _ = _ring.tx_fill(
        tx, fs, count, slot, block, recs, n, i, [0] * n, m.src_mac, m.dst_macs
    )
    assert (i, slot, sent) == (6, 2, 2)
    assert _tx_frame(tx, fs, 1)[12:] == frames[5][12:]


def test_tx_fill_nat_and_partial_checksum():
    s = _scapy()
    frame = bytearray(udp_frame(sport=4242, dport=80, payload=b"payload!"))
    tcp = bytes(
        s["Ether"](src=MAC_A, dst=MAC_B)
        / s["IP"](src="10.0.0.1", dst="10.0.0.2")
        / s["TCP"](sport=4243, dport=80, flags="S")
    )
    # A CHECKSUM_PARTIAL frame holds only the pseudo-header sum in the UDP checksum field.
    partial = bytearray(frame)
    ip = s["IP"](bytes(frame[14:]))
    pseudo = struct.pack(
        "!4s4sBBH", socket.inet_aton(ip.src), socket.inet_aton(ip.dst), 0, 17, ip[s["UDP"]].len
    )
    total = sum(struct.unpack("!6H", pseudo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", partial, 14 + 20 + 6, total)
    block = build_block(
        [bytes(frame), tcp, bytes(partial)], statuses=[0, 0, TP_STATUS_CSUMNOTREADY]
    )
    recs = records()
    n = _ring.parse_block(block, 0, len(block), recs)
    assert recs[2]["flags"] & _ring.FLAG_CSUM_PARTIAL
    tx, fs, count = _tx_ring()
    m = Rewrite.nat(LB_MAC, BACKEND_MACS, ["10.0.1.1", "10.0.1.2", "10.0.1.3"], [8080, 0, 9])
    _ring.tx_fill(
        tx,
        fs,
        count,
        0,
        block,
        recs,
        n,
        0,
        [0, 1, 2],
        m.src_mac,
        m.dst_macs,
        m.nat_ips,
        m.nat_ports,
    )
    for slot, (dst, dport) in enumerate([("10.0.1.1", 8080), ("10.0.1.2", 80), ("10.0.1.3", 9)]):
        out = s["Ether"](_tx_frame(tx, fs, slot))
        assert out[s["IP"]].dst == dst and out[s["IP"]].dport == dport
        fixed = s["Ether"](bytes(out))
        del fixed[s["IP"]].chksum
        l4 = s["UDP"] if s["UDP"] in fixed else s["TCP"]
        del fixed[l4].chksum
        fixed = s["Ether"](bytes(fixed))  # scapy recomputes both
        assert out[s["IP"]].chksum == fixed[s["IP"]].chksum
        assert out[l4].chksum == fixed[l4].chksum


# ---------------------------------------------------------------------------------------------
# Network scenarios: run in a child inside a sandbox (see module docstring)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def make_veth(a="a0", b="b0"):
    """lo up, IPv6 off (no router solicitations in the rings), one veth pair a <-> b."""
    sh("ip link set lo up")
    for path in (
        "/proc/sys/net/ipv6/conf/default/disable_ipv6",
        "/proc/sys/net/ipv6/conf/all/disable_ipv6",
    ):
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("1")
    sh(f"ip link add {a} address {MAC_A} type veth peer name {b} address {MAC_B}")
    sh(f"ip link set {a} up && ip link set {b} up")


def raw_sender(ifname):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    return sock


def collect(rx, want, timeout_ms=2000):
    """Read batches until ``want`` frames arrived or nothing came for ``timeout_ms``."""
    got, sizes = [], []
    while len(got) < want:
        batch = rx.next_batch(timeout_ms)
        if batch is None:
            break
        sizes.append(batch.count)
        got.extend(zip([bytes(f) for f in batch.frames()], batch.flows(), batch.reasons()))
        batch.release()
    return got, sizes


def scenario_rx_intact():
    make_veth()
    frames = [udp_frame(sport=10000 + i, payload=os.urandom(i % 200 + 1)) for i in range(500)]
    with (
        RxRing("b0", block_size=1 << 16, block_count=8, timeout_ms=5) as rx,
        raw_sender("a0") as tx,
    ):
        for f in frames:
            tx.send(f)
        got, sizes = collect(rx, len(frames))
        # Our own transmissions from b0 must not appear in b0's RX ring.
        with TxRing("b0") as own:
            own.send_frames(frames[:50])
            assert own.wait_idle()
        assert rx.next_batch(200) is None, "RxRing re-read its own interface's transmissions"
        assert [g[0] for g in got] == frames
        assert all(r == "ok" for _, _, r in got)
        assert [g[1].src_port for g in got] == [10000 + i for i in range(500)]
        assert len(sizes) >= 2, "a 64 KiB block cannot hold 500 frames: expected several batches"
        stats = rx.stats()
        assert stats.drops == 0
    print(json.dumps({"batches": sizes}))


def scenario_tx_forward(use_sendmmsg=False):
    make_veth()
    frames = [udp_frame(sport=20000 + i, payload=b"p" * (i % 100)) for i in range(300)]
    s = _scapy()
    tx_port = MmsgTx("b0") if use_sendmmsg else TxRing("b0", frame_count=256)
    with (
        RxRing("b0", timeout_ms=5) as rx,
        tx_port as tx,
        RxRing("a0", timeout_ms=5) as sink,
        raw_sender("a0") as gen,
    ):
        assert use_sendmmsg or tx.frame_count == 256
        for f in frames:
            gen.send(f)
        rewrite = Rewrite.dsr(interface_mac("b0"), BACKEND_MACS)
        forwarded = 0
        for batch in rx.batches(idle_timeout=0.3):
            choices = [flow.src_port % 3 for flow in batch.flows()]
            forwarded += tx.send_batch(batch, choices, rewrite)
            batch.release()
            if forwarded == len(frames):
                break
        assert tx.wait_idle()
        got, _ = collect(sink, len(frames))
        assert forwarded == len(frames) == len(got), (forwarded, len(got))
        assert tx.stats().kicks < len(frames) // 10, "expected one kick per batch"
        for original, (out, flow, _reason) in zip(frames, got):
            backend = BACKEND_MACS[flow.src_port % 3]
            assert out[:6] == bytes.fromhex(backend.replace(":", ""))
            assert out[6:12] == bytes.fromhex(MAC_B.replace(":", ""))
            assert out[12:] == original[12:]
        # NAT, and a frame from the kernel's own UDP stack (CHECKSUM_PARTIAL on veth).
        sh("ip addr add 10.0.0.1/24 dev a0")
        sh(f"ip neigh add 10.0.0.2 lladdr {MAC_B} dev a0")
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(20):
            udp.sendto(b"from-the-stack-%d" % i, ("10.0.0.2", 7000 + i))
        udp.close()
        nat = Rewrite.nat(interface_mac("b0"), [MAC_A], ["10.9.9.9"], [9999])
        partial, sent = 0, 0
        for batch in rx.batches(idle_timeout=0.3):
            partial += int(np.count_nonzero(batch.flags & _ring.FLAG_CSUM_PARTIAL))
            sent += tx.send_batch(batch, [0] * batch.count, nat)
            if sent >= 20:
                break
        assert sent == 20 and tx.wait_idle()
        got, _ = collect(sink, 20)
        assert len(got) == 20
        for out, _flow, _ in got:
            pkt = s["Ether"](out)
            assert pkt[s["IP"]].dst == "10.9.9.9" and pkt[s["UDP"]].dport == 9999
            again = s["Ether"](out)
            del again[s["UDP"]].chksum, again[s["IP"]].chksum
            again = s["Ether"](bytes(again))
            assert pkt[s["UDP"]].chksum == again[s["UDP"]].chksum, "bad UDP checksum on the wire"
            assert pkt[s["IP"]].chksum == again[s["IP"]].chksum
    print(json.dumps({"forwarded": forwarded, "csum_partial_seen": partial}))


def scenario_mmsg_forward():
    """The same with sendmmsg from the RX ring instead of the TX ring (vnf.afpacket.MmsgTx)."""
    scenario_tx_forward(use_sendmmsg=True)


def scenario_fanout():
    make_veth()
    n_flows, per_flow = 1000, 3
    frames = [
        udp_frame(sport=1024 + i, src=f"10.1.{i % 7}.{i % 250 + 1}", payload=b"%d" % rep)
        for rep in range(per_flow)
        for i in range(n_flows)
    ]
    rings = [
        RxRing("b0", block_size=1 << 16, block_count=32, timeout_ms=50, fanout_group=42)
        for _ in range(2)
    ]
    try:
        with raw_sender("a0") as gen:
            for frame in frames:
                gen.send(frame)
        seen = [dict(), dict()]
        idle = 0
        while idle < 3:
            got_any = False
            for k, ring in enumerate(rings):
                batch = ring.next_batch(20)
                if batch is None:
                    continue
                got_any = True
                for flow in batch.flows():
                    seen[k][flow] = seen[k].get(flow, 0) + 1
                batch.release()
            idle = 0 if got_any else idle + 1
        stats = [ring.stats() for ring in rings]
        # What the workers transmit leaves through the same interface: the group must not
        # hand it back to any of them (PACKET_FANOUT_FLAG_IGNORE_OUTGOING).
        with raw_sender("b0") as out:
            for frame in frames[:200]:
                out.send(frame)
        time.sleep(0.1)
        outgoing_seen = sum(ring.stats().packets for ring in rings)
    finally:
        for ring in rings:
            ring.close()
    assert outgoing_seen == 0, f"{outgoing_seen} of our own outgoing frames reached the rings"
    drops = [ring_stats.drops for ring_stats in stats]
    both = set(seen[0]) & set(seen[1])
    assert drops == [0, 0], drops
    assert not both, f"{len(both)} flows reached both workers"
    assert len(seen[0]) + len(seen[1]) == n_flows
    assert all(c == per_flow for s in seen for c in s.values())
    assert min(len(seen[0]), len(seen[1])) > n_flows // 4, "hash split very uneven"
    print(json.dumps({"split": [len(seen[0]), len(seen[1])]}))


def scenario_malformed():
    make_veth()
    cases = malformed_frames()
    with RxRing("b0", timeout_ms=5) as rx, TxRing("b0") as tx, raw_sender("a0") as gen:
        for _ in range(3):
            for frame, _ in cases:
                gen.send(frame)
        # (A frame shorter than 14 bytes is refused by send(): EINVAL. The unit test
        # test_parse_block_matches_python_parser covers truncated-ethernet.)
        gen.send(bytes.fromhex("02000000000b02000000000a0800"))  # header only
        got, _ = collect(rx, 3 * len(cases) + 1)
        reasons = [r for _, _, r in got]
        assert reasons == [r for _, r in cases] * 3 + ["truncated-ip"]
        assert [f for f, _, _ in got[: len(cases)]] == [f for f, _ in cases]
        # Forwarding a batch full of junk drops the junk and sends the good frames.
        for frame, _ in cases:
            gen.send(frame)
        batch = rx.next_batch(1000)
        assert batch is not None
        sent = tx.send_batch(batch, [0] * batch.count, Rewrite.dsr(LB_MAC, BACKEND_MACS))
        batch.release()
        assert sent == sum(r == "ok" for _, r in cases)
        assert tx.stats().dropped == batch.count - sent
    print(json.dumps({"reasons": reasons[: len(cases)]}))


def scenario_tx_stall_is_bounded():
    """A TX ring whose frames cannot drain (peer down) must not hang the loop."""
    import time

    make_veth()
    with (
        RxRing("b0", timeout_ms=5) as rx,
        TxRing("b0", frame_count=128) as tx,
        raw_sender("a0") as gen,
    ):
        for frame in [udp_frame(sport=i + 1) for i in range(400)]:  # built first: see RxRing
            gen.send(frame)
        got = 0
        sh("ip link set a0 down")
        start = time.monotonic()
        for batch in rx.batches(idle_timeout=0.2):
            got += batch.count
            tx.send_batch(
                batch, [0] * batch.count, Rewrite.dsr(LB_MAC, BACKEND_MACS), stall_timeout_ms=100
            )
            batch.release()
        elapsed = time.monotonic() - start
        assert got == 400, (got, tx.stats(), rx.stats())
        assert elapsed < 5, elapsed
        sent, dropped, _ = tx.stats()
        assert sent + dropped == 400
    print(json.dumps({"elapsed": round(elapsed, 2), "sent": sent, "dropped": dropped}))


def scenario_cleanup():
    make_veth()

    def fds():
        return len(os.listdir("/proc/self/fd"))

    def maps():
        with open("/proc/self/maps") as f:
            return sum("socket:" in line or "packet" in line for line in f)

    before_fds, before_maps = fds(), maps()
    for _ in range(5):
        rx = RxRing("b0", block_size=1 << 16, block_count=4)
        tx = TxRing("b0", frame_count=64)
        with raw_sender("a0") as gen:
            gen.send(udp_frame())
        batch = rx.next_batch(500)
        views = batch.frames()  # still held while the ring closes: must not raise
        rx.close()
        tx.close()
        del views, batch
    import gc

    gc.collect()
    assert fds() == before_fds, (before_fds, fds())
    assert maps() == before_maps, "ring mappings left behind"
    with pytest.raises(OSError):
        RxRing("no-such-if0")
    assert fds() == before_fds, "a failed constructor leaked its socket"
    print(json.dumps({"fds": fds()}))


SCENARIOS = {
    name[len("scenario_") :]: fn for name, fn in globals().items() if name.startswith("scenario_")
}


def run_scenario(name, *args, timeout=90, script=__file__):
    """Run ``script``'s scenario ``name`` (with string ``args``) in a child inside a sandbox."""
    from testbed import sandbox

    reason = sandbox.can_sandbox()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    result = sandbox.run(
        [sys.executable, os.path.abspath(script), name, *args],
        timeout=timeout,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"scenario {name} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.network
def test_rx_ring_receives_frames_intact_in_batches():
    out = run_scenario("rx_intact")
    assert sum(out["batches"]) == 500


@pytest.mark.network
def test_tx_ring_forwards_with_rewritten_macs_and_nat():
    out = run_scenario("tx_forward")
    assert out["forwarded"] == 300


@pytest.mark.network
def test_sendmmsg_from_the_rx_ring_forwards_with_rewritten_macs_and_nat():
    out = run_scenario("mmsg_forward")
    assert out["forwarded"] == 300


@pytest.mark.network
def test_fanout_hash_keeps_each_flow_on_one_ring():
    out = run_scenario("fanout")
    assert sum(out["split"]) == 1000


@pytest.mark.network
def test_malformed_frames_get_reasons_and_are_dropped_on_forward():
    out = run_scenario("malformed")
    assert out["reasons"][-1] == "ok"


@pytest.mark.network
def test_tx_stall_is_bounded_when_nothing_drains():
    out = run_scenario("tx_stall_is_bounded")
    assert out["sent"] + out["dropped"] == 400


@pytest.mark.network
def test_rings_release_sockets_and_mappings():
    assert run_scenario("cleanup")["fds"] > 0


if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
