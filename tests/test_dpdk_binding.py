"""The DPDK binding (vnf/dpdk) against real DPDK vdevs.

Every DPDK process runs in a subprocess inside testbed.dpdk_sandbox (private mount + pid
namespaces, private hugetlbfs/tmpfs): whatever happens, nothing leaks. Each snippet prints one
JSON line that the test checks here; the Python-side expectations (vnf.packet.parse_frame,
zlib.crc32, scapy checksums) are computed in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import pytest

from testbed import dpdk_sandbox as sandbox
from vnf.dpdk import hugepages

pytestmark = pytest.mark.dpdk

try:
    from vnf.dpdk import _dpdk  # noqa: F401

    HAVE_BINDING = True
except ImportError:
    HAVE_BINDING = False

needs_dpdk = pytest.mark.skipif(
    not HAVE_BINDING or os.geteuid() != 0 or not shutil.which("unshare"),
    reason="needs the compiled binding (libdpdk-dev), root and unshare",
)

PRELUDE = """
import json, os, sys, time
import numpy as np
from vnf import dpdk
from vnf.dpdk import _dpdk
def out(**kw):
    print("RESULT " + json.dumps(kw), flush=True)
"""


def run_dpdk(code: str, setup: str = "", timeout: float = 90) -> dict:
    """Run `setup` + `code` in a sandboxed Python; return the dict it passed to out()."""
    r = sandbox.run_python(PRELUDE + setup + textwrap.dedent(code), timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (
        f"rc={r.returncode}\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-4000:]}"
    )
    return json.loads(lines[-1][7:])


# ------------------------------------------------------------------ frames
def _scapy():
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    return Ether, Dot1Q, IP, TCP, UDP, ICMP, ARP, IPv6


def good_frames(n: int = 16) -> list:
    Ether, Dot1Q, IP, TCP, UDP, *_ = _scapy()
    frames = []
    for i in range(n):
        l4 = (
            UDP(sport=10000 + i, dport=8080) if i % 2 else TCP(sport=20000 + i, dport=80, flags="S")
        )
        pkt = (
            Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:bb")
            / IP(src=f"10.0.0.{i + 1}", dst="10.0.1.1")
            / l4
            / (b"payload-%d" % i)
        )
        frames.append(bytes(pkt))
    return frames


def mixed_frames() -> list:
    """Good frames of every shape plus one malformed frame per drop reason."""
    Ether, Dot1Q, IP, TCP, UDP, ICMP, ARP, IPv6 = _scapy()
    e = Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:bb")
    udp = bytes(e / IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=1234, dport=53) / b"q")
    frames = [
        udp,
        bytes(
            e
            / IP(src="10.0.0.2", dst="10.0.1.1", options=[b"\x01\x01\x01\x00"])
            / TCP(sport=4321, dport=80, options=[("MSS", 1460)])
        ),
        bytes(e / Dot1Q(vlan=42) / IP(src="10.0.0.3", dst="10.0.1.1") / UDP(sport=7, dport=9)),
        bytes(
            Ether(type=0x88A8)
            / Dot1Q(vlan=7)
            / Dot1Q(vlan=8)
            / IP(src="10.0.0.4", dst="10.0.1.1")
            / TCP(sport=5, dport=6)
        ),
        bytes(e / IP(src="10.0.0.5", dst="10.0.1.1") / UDP(sport=1, dport=2)) + b"\0" * 10,
        udp[:13],  # truncated ethernet
        bytes(e / ARP()),  # arp
        bytes(e / IPv6() / UDP()),  # ipv6
        bytes(Ether(type=0x88CC) / (b"\0" * 40)),  # other ethertype
        udp[: 14 + 12],  # truncated ip
        udp[:14] + bytes([0x65]) + udp[15:],  # bad version
        udp[:14] + bytes([0x44]) + udp[15:],  # bad ihl
        udp[:16] + struct.pack("!H", 1000) + udp[18:],  # bad ip length
        bytes(e / IP(src="10.0.0.6", dst="10.0.1.1", frag=100) / (b"x" * 20)),  # fragment
        bytes(e / IP(src="10.0.0.7", dst="10.0.1.1") / ICMP()),  # unsupported proto
        bytes(e / IP(src="10.0.0.8", dst="10.0.1.1", proto=6) / (b"x" * 8)),  # trunc. l4
        bytes(e / IP(src="10.0.0.9", dst="10.0.1.1") / TCP(dataofs=2)),  # tcp offset
        bytes(e / IP(src="10.0.0.10", dst="10.0.1.1") / UDP(len=4)),  # udp length
    ]
    return frames


def hexes(frames):
    return json.dumps([f.hex() for f in frames])


LOOP_SETUP = """
dpdk.init(mem_mb=64, reserve_hugepages=True)
pool = dpdk.pool(n=2047)
port = dpdk.Port.open("net_ring0", pool)
frames = [bytes.fromhex(h) for h in json.loads(FRAMES)]
def loop(frames):
    b = _dpdk.burst_from_frames(pool, frames)
    sent = port.tx(b)
    assert sent == len(frames), sent
    r = port.rx(n=len(frames))
    assert len(r) == len(frames), len(r)
    return r
"""


# ------------------------------------------------------------------ tests
def test_hugepage_error_message(monkeypatch):
    monkeypatch.setattr(
        hugepages, "status", lambda size_kb=2048: {"size_kb": 2048, "total": 0, "free": 0}
    )
    with pytest.raises(hugepages.HugePagesError) as ei:
        hugepages.require(64)
    assert "no huge pages reserved: run echo 256 > /proc/sys/vm/nr_hugepages" in str(ei.value)
    monkeypatch.setattr(
        hugepages, "status", lambda size_kb=2048: {"size_kb": 2048, "total": 64, "free": 10}
    )
    with pytest.raises(hugepages.HugePagesError, match="not enough free huge pages"):
        hugepages.require(64)


def test_hugepage_status_reads_the_kernel():
    st = hugepages.status()
    assert st["size_kb"] == 2048 and 0 <= st["free"] <= st["total"]


@needs_dpdk
def test_eal_init_is_a_singleton_and_errors_carry_dpdk_text():
    res = run_dpdk("""
    try:
        dpdk.Port.open("net_null0", None)
    except dpdk.DpdkError as e:
        before = str(e)
    e1 = dpdk.init(mem_mb=64, reserve_hugepages=True)
    e2 = dpdk.init(mem_mb=64, reserve_hugepages=True)
    try:
        dpdk.init(mem_mb=32)
        other = None
    except dpdk.DpdkError as e:
        other = str(e)
    try:
        _dpdk.port_by_name("net_nosuch0")
        missing = None
    except dpdk.DpdkError as e:
        missing = (e.errno, str(e))
    try:
        _dpdk.dev_probe("net_nosuchdriver0")
        probe = None
    except dpdk.DpdkError as e:
        probe = str(e)
    try:
        _dpdk.pool_create("p", 1 << 30)
        big = None
    except dpdk.DpdkError as e:
        big = str(e)
    out(same=e1 is e2, before=before, other=other, missing=missing, probe=probe, big=big,
        args=e1.args, hz=e1.tsc_hz, runtime=os.listdir("/dev/shm/run"))
    """)
    assert res["same"]
    assert "not initialised" in res["before"]
    assert "once per process" in res["other"]
    assert (
        res["missing"][0] > 0 and "rte_eth_dev_get_port_by_name(net_nosuch0)" in res["missing"][1]
    )
    assert "rte_dev_probe(net_nosuchdriver0)" in res["probe"]
    assert "rte_pktmbuf_pool_create" in res["big"]
    args = res["args"]
    for flag in ("--no-pci", "--file-prefix", "-m", "--in-memory", "--single-file-segments"):
        assert flag in args
    assert res["hz"] > 10**8


@needs_dpdk
def test_ring_loopback_returns_the_frames_and_memoryviews_are_writable():
    frames = good_frames(16)
    res = run_dpdk(
        setup=f"FRAMES = {hexes(frames)!r}\n" + LOOP_SETUP,
        code="""
    r = loop(frames)
    got = [bytes(r[i]).hex() for i in range(len(r))]
    same_as_data = all(bytes(r.data(i)) == r.frame(i) for i in range(len(r)))
    mv = r[0]
    mv[0:6] = b"\\x02\\x11\\x22\\x33\\x44\\x55"    # write through the view into the mbuf
    r2 = _dpdk.Burst(8)
    assert port.tx(r) == 16 and len(r) == 0
    dpdk.rx_burst(port.id, 0, 16, r2)   # reuse a Burst: at most its capacity
    first = r2.frame(0).hex()
    n2 = len(r2)
    r2.free()
    rest = port.rx(n=32)
    n3 = len(rest)
    rest.free()
    out(got=got, same_as_data=same_as_data, first=first, n2=n2, n3=n3,
        in_use=pool.in_use(), cap=r2.capacity)
    """,
    )
    assert [bytes.fromhex(h) for h in res["got"]] == frames
    assert res["same_as_data"]
    assert bytes.fromhex(res["first"])[:6] == bytes.fromhex("021122334455")
    assert bytes.fromhex(res["first"])[6:] == frames[0][6:]
    assert (res["n2"], res["n3"], res["cap"]) == (8, 8, 8)
    assert res["in_use"] == 0, "mbufs leaked"


@needs_dpdk
def test_c_parse_equals_python_parse():
    from vnf.packet import REASONS, parse_frame

    frames = mixed_frames()
    res = run_dpdk(
        setup=f"FRAMES = {hexes(frames)!r}\n" + LOOP_SETUP,
        code="""
    r = loop(frames)
    a = dpdk.ParseArrays(64)
    n = r.parse(a)
    fields = ("src_ip", "dst_ip", "src_port", "dst_port", "proto", "hash", "reason",
              "l3_offset", "l4_offset", "vlan")
    res = {f: getattr(a, f)[:n].tolist() for f in fields}
    d = {f: np.zeros(64, getattr(a, f).dtype) for f in fields if f not in ("l3_offset", "vlan")}
    r.parse(d)
    res["dict_same"] = all(d[f][:n].tolist() == res[f] for f in d)
    # parse() holds the block of the ParseArrays it parsed into last: switching between two
    # (and back, into a cleared one) must still fill the one passed
    b = dpdk.ParseArrays(64)
    r.parse(b)
    a.hash[:] = 0
    a.reason[:] = 0
    r.parse(a)
    res["switch_same"] = all(
        getattr(x, f)[:n].tolist() == res[f] for x in (a, b) for f in fields
    )
    try:
        r.parse(dpdk.ParseArrays(2))
        res["too_small"] = "no error"
    except ValueError as e:
        res["too_small"] = str(e)
    res["reasons"] = a.reasons(n)
    res["flow_i"] = [r.flow(i) for i in range(n)]          # the per-packet style's parse
    res["reason_i"] = [r.reason(i) for i in range(n)]
    r.set_macs_at(0, bytes.fromhex("0a0000000001"), bytes.fromhex("0affffffff00"))
    res["rewritten"] = r.frame(0)[:12].hex()
    r.free()
    out(n=n, **res)
    """,
    )
    assert res["n"] == len(frames) and res["dict_same"] and res["switch_same"]
    assert res["too_small"] == f"ParseArrays for 2 packets, burst has {len(frames)}"
    assert res["rewritten"] == "0a00000000010affffffff00"
    for i, f in enumerate(frames):
        p = parse_frame(f)
        assert res["reason_i"][i] == p.reason, i
        assert res["flow_i"][i] == (None if p.flow is None else list(p.flow)), i
    seen = set()
    for i, f in enumerate(frames):
        p = parse_frame(f)
        assert res["reasons"][i] == p.reason, (i, res["reasons"][i], p.reason)
        assert REASONS[res["reason"][i]] == p.reason
        seen.add(p.reason)
        if p.flow is None:
            assert res["hash"][i] == 0
            continue
        got = (
            res["src_ip"][i],
            res["dst_ip"][i],
            res["src_port"][i],
            res["dst_port"][i],
            res["proto"][i],
        )
        assert got == tuple(p.flow), i
        assert res["hash"][i] == zlib.crc32(struct.pack("!IIHHB", *got))
        assert res["l3_offset"][i] == p.l3_offset and res["l4_offset"][i] == p.l4_offset
        assert res["vlan"][i] == (-1 if p.vlan is None else p.vlan)
    assert seen == set(REASONS), "every drop reason covered by the frames"


@needs_dpdk
def test_batch_rewrites_macs_and_nat_with_valid_checksums():
    Ether, Dot1Q, IP, TCP, UDP, *_ = _scapy()
    frames = good_frames(8)
    frames.append(
        bytes(
            Ether()
            / IP(src="10.0.0.99", dst="10.0.1.1")
            / UDP(sport=5, dport=6, chksum=0)
            / b"nocsum"
        )
    )  # UDP without checksum
    frames.append(mixed_frames()[6])  # ARP: left alone
    res = run_dpdk(
        setup=f"FRAMES = {hexes(frames)!r}\n" + LOOP_SETUP,
        code="""
    macs = bytes.fromhex("0a0000000001" "0a0000000002" "0a0000000003")
    src = bytes.fromhex("0affffffff00")
    ips = np.array([0x0a000a01, 0x0a000a02, 0x0a000a03], np.uint32)
    ports = np.array([9001, 9002, 9003], np.uint16)
    r = loop(frames)
    a = dpdk.ParseArrays(32)
    n = r.parse(a)
    idx = (a.hash[:n] % 3).astype(np.int64)
    idx[1] = -1                                   # -1: leave packet 1 alone
    nm = r.set_macs(idx, macs, src)
    nn = r.nat_dst(idx, ips, ports)
    dst = [r.frame(i).hex() for i in range(n)]
    # source NAT on the same burst (return path): everything gets 10.9.9.9:7777
    zero = np.zeros(n, np.int8)
    ns = r.nat_src(zero, np.array([0x0a090909], np.uint32), np.array([7777], np.uint16))
    srcs = [r.frame(i).hex() for i in range(n)]
    try:
        r.set_macs(np.full(n, 7), macs, src)
        oob = None
    except IndexError as e:
        oob = str(e)
    # set_macs holds the index it had last: the same array again is read afresh
    held = np.full(n, -1, np.int32)
    held_counts = [r.set_macs(held, macs, src)]
    held[0] = 2
    held_counts.append(r.set_macs(held, macs, src))
    mac0 = r.frame(0)[:6].hex()
    r.free()
    out(idx=idx.tolist(), nm=nm, nn=nn, ns=ns, dst=dst, srcs=srcs, oob=oob,
        held_counts=held_counts, mac0=mac0)
    """,
    )
    n = len(frames)
    assert res["nm"] == n - 2 and res["nn"] == n - 2 and res["ns"] == n - 1
    assert res["oob"] and "beyond mac_table" in res["oob"]
    assert res["held_counts"] == [0, 1] and res["mac0"] == "0a0000000003"
    ips = ["10.0.10.1", "10.0.10.2", "10.0.10.3"]

    def checksums_ok(pkt):
        """scapy recomputes both checksums from scratch: they must equal the incremental ones."""
        re = Ether(bytes(pkt))
        del re[IP].chksum
        l4 = re[TCP] if TCP in re else re[UDP]
        if not (UDP in re and l4.chksum == 0):
            del l4.chksum
        fresh = Ether(bytes(re))
        f4, p4 = (fresh[TCP], pkt[TCP]) if TCP in pkt else (fresh[UDP], pkt[UDP])
        return fresh[IP].chksum == pkt[IP].chksum and f4.chksum == p4.chksum

    for i, (orig, h) in enumerate(zip(frames, res["dst"])):
        got = Ether(bytes.fromhex(h))
        if i == n - 1:
            assert bytes.fromhex(h) == orig  # ARP untouched
            continue
        k = res["idx"][i]
        o = Ether(orig)
        if k < 0:
            assert bytes.fromhex(h) == orig
            continue
        assert got.dst == f"0a:00:00:00:00:0{k + 1}" and got.src == "0a:ff:ff:ff:ff:00"
        assert got[IP].dst == ips[k] and got[IP].src == o[IP].src
        l4 = got[TCP] if TCP in got else got[UDP]
        assert l4.dport == 9001 + k
        assert bytes(l4.payload) == bytes((o[TCP] if TCP in o else o[UDP]).payload)
        assert checksums_ok(got), i
        if UDP in o and o[UDP].chksum == 0:
            assert got[UDP].chksum == 0
    for i, h in enumerate(res["srcs"][:-1]):
        got = Ether(bytes.fromhex(h))
        assert got[IP].src == "10.9.9.9"
        assert (got[TCP] if TCP in got else got[UDP]).sport == 7777
        assert checksums_ok(got), i


@needs_dpdk
def test_fused_send_decides_like_the_separate_steps():
    """FusedForward (parse + flow cache + MAC rewrite + tx in one C call: send, and the whole
    poll loop in C: poll) against the lab's steps (parse, backends_for_batch, set_macs) on the
    same bursts: same backends, same counters, drops freed; a backend marked failed is left at
    the next refresh()."""
    frames = good_frames(24) + mixed_frames()[5:]
    res = run_dpdk(
        setup=f"FRAMES = {hexes(frames)!r}\n" + LOOP_SETUP,
        code="""
    from vnf.backends import Backend
    from vnf.lb import LBConfig, LoadBalancer
    backs = [Backend(f"b{i}", f"10.0.2.{i}", f"0a:00:00:00:00:0{i}", 8080) for i in (1, 2, 3)]
    cfg = LBConfig(vip="10.0.1.1", port=8080, backends=backs, subnet=None)
    ref, fus, pol = LoadBalancer(cfg), LoadBalancer(cfg), LoadBalancer(cfg)
    macs = b"".join(b.mac_bytes for b in sorted(backs, key=ref.pool.index_of))
    src = bytes.fromhex("0affffffff00")
    a = dpdk.ParseArrays(64)
    ff = dpdk.FusedForward(fus, dpdk.ParseArrays(64), macs, src, port.id)
    send = ff.refresh().send
    fp = dpdk.FusedForward(pol, dpdk.ParseArrays(64), macs, src, port.id)
    poll = fp.refresh().poll
    rounds = []
    for rnd in range(4):
        if rnd == 3:                              # b2 fails: its flows must move
            ref.pool.set_health("b2", False)
            fus.pool.set_health("b2", False)
            send = ff.refresh().send
            pol.pool.set_health("b2", False)
            poll = fp.refresh().poll
        r = loop(frames)
        n = r.parse(a)
        choice = ref.backends_for_batch(a, n, 1.0 + rnd).tolist()
        r.free()
        expect = [macs[6 * c:6 * c + 6].hex() + src.hex() for c in choice if c >= 0]
        r = loop(frames)
        sent = send(r, 0)                         # onto net_ring0: it loops back
        hashes = (ff.arrays.hash[:n].tolist(), a.hash[:n].tolist())  # kernel vs parse()
        reasons = (ff.arrays.reason[:n].tolist(), a.reason[:n].tolist())
        back = port.rx(n=64)
        got = [back.frame(i)[:12].hex() for i in range(len(back))]
        back.free()
        assert port.tx(_dpdk.burst_from_frames(pool, frames)) == len(frames)
        polled = poll(dpdk.Burst(64), (0,), 1)    # one round of the C loop: rx, NF, tx
        back = port.rx(n=64)
        got_poll = [back.frame(i)[:12].hex() for i in range(len(back))]
        back.free()
        rounds.append({"expect": expect, "got": got, "sent": sent, "left": len(r),
                       "got_poll": got_poll, "polled": polled, "hashes": hashes,
                       "reasons": reasons})
    ff.fold_counters()
    fp.fold_counters()
    keys = ("packets", "forwarded", "new_flows", "reassigned", "dropped", "assigned")
    out(rounds=rounds, ref={k: ref.stats()[k] for k in keys},
        fus={k: fus.stats()[k] for k in keys}, pol={k: pol.stats()[k] for k in keys},
        in_use=pool.in_use())
    """,
    )
    for r in res["rounds"]:
        assert r["got"] == r["expect"] and r["sent"] == len(r["expect"]) and r["left"] == 0, r
        assert r["got_poll"] == r["expect"] and r["polled"] == [len(r["expect"]), 1], r
        # the kernel's own parse and hash: the same flow hash (zlib.crc32 of the packed
        # 5-tuple, checked for parse() above) and 0 for the drops, the same reasons
        assert r["hashes"][0] == r["hashes"][1] and r["reasons"][0] == r["reasons"][1], r
    assert len(res["rounds"][0]["expect"]) == 12  # the 12 UDP frames to VIP:8080
    assert "0a0000000002" not in "".join(res["rounds"][3]["got"])
    assert res["fus"] == res["ref"] and res["pol"] == res["ref"]
    assert res["fus"]["dropped"]["not-for-vip"] > 0 and res["fus"]["dropped"]["arp"] > 0
    assert res["in_use"] == 0  # drops freed, nothing leaked


@needs_dpdk
def test_keep_split_and_no_mbuf_leaks():
    frames = good_frames(6) + [mixed_frames()[6], mixed_frames()[13]]  # + ARP + fragment
    res = run_dpdk(
        setup=f"FRAMES = {hexes(frames)!r}\n" + LOOP_SETUP,
        code="""
    a = dpdk.ParseArrays(32)
    r = loop(frames)
    r.parse(a)
    kept = r.keep()                                   # drops the ARP and the fragment
    after_keep = pool.in_use()
    mask = np.array([1, 0, 1, 0, 0, 0], np.uint8)
    other = r.split(mask)
    sizes = (len(r), len(other))
    firsts = (r.frame(0).hex(), other.frame(0).hex())
    kept2 = r.keep(np.array([True, False, True, False]))
    sent = port.tx(other) + port.tx(r)
    back = port.rx()
    nback = len(back)
    back.free()
    out(kept=kept, after_keep=after_keep, sizes=sizes, firsts=firsts, kept2=kept2,
        sent=sent, nback=nback, in_use=pool.in_use())
    """,
    )
    assert res["kept"] == 6 and res["after_keep"] == 6
    assert res["sizes"] == [4, 2]
    assert bytes.fromhex(res["firsts"][0]) == frames[1]
    assert bytes.fromhex(res["firsts"][1]) == frames[0]
    assert res["kept2"] == 2 and res["sent"] == 4 and res["nback"] == 4
    assert res["in_use"] == 0


@needs_dpdk
def test_stats_busy_cycles_and_io_forward_on_null():
    res = run_dpdk("""
    dpdk.init(mem_mb=96, reserve_hugepages=True)
    pool = dpdk.pool(n=4095)
    p0 = dpdk.Port.open("net_null0", pool)
    p1 = dpdk.Port.open("net_null1", pool, nrxq=2, ntxq=2)
    link = p0.link()
    buf = dpdk.Burst(32)
    a = dpdk.ParseArrays(32)
    pkts = 0
    for _ in range(2000):                  # python loop: rx on p0, parse, tx on p1 queue 1
        b = dpdk.rx_burst(p0.id, 0, 32, buf)
        b.parse(a)
        pkts += len(b)
        p1.tx(b, 1)
    bs = dpdk.busy_stats()
    s0, s1 = p0.stats(), p1.stats()
    p1.reset_stats()
    s1r = p1.stats()
    fw = dpdk.io_forward(p0, p1, burst=32, seconds=0.5, bidirectional=True)
    out(link=link, pkts=pkts, bs={k: v for k, v in bs.items() if k != "per_queue"},
        perq=[list(k) + list(v) for k, v in bs["per_queue"].items()],
        s0=s0, s1=s1, s1r=s1r, fw=fw, in_use=pool.in_use())
    """)
    assert res["link"]["up"]
    assert res["pkts"] == 2000 * 32
    bs = res["bs"]
    assert bs["busy_packets"] == res["pkts"] and bs["bursts"] == 2000
    assert bs["busy_cycles"] > 0
    ns = bs["busy_cycles"] / bs["busy_packets"] / bs["tsc_hz"] * 1e9
    assert ns == pytest.approx(bs["ns_per_packet"])
    assert 1 < ns < 50_000, ns  # a Python loop over C batches: ~10-1000 ns
    assert res["perq"] == [[0, 0, bs["busy_cycles"], bs["busy_packets"], 2000]]
    assert res["s0"]["ipackets"] == res["pkts"] and res["s0"]["q_ipackets"] == [res["pkts"]]
    assert res["s1"]["opackets"] == res["pkts"]
    assert res["s1"]["q_opackets"] == [0, res["pkts"]]
    assert res["s1r"]["opackets"] == 0
    fw = res["fw"]
    assert fw["rx"] > 100_000 and fw["tx"] == fw["rx"] and fw["ns_per_packet"] < 2000
    assert res["in_use"] == 0


@needs_dpdk
def test_ring_between_worker_threads():
    res = run_dpdk("""
    dpdk.init(cores=[0], mem_mb=64, reserve_hugepages=True)
    pool = dpdk.pool(n=2047)
    ring = dpdk.ring(256)
    frame = bytes(64)
    N = 200
    def producer():
        done = 0
        while done < N * 10:
            b = _dpdk.burst_from_frames(pool, [frame] * 10)
            while len(b):                     # retry until the consumer made room
                k = ring.free_count()
                if k >= len(b):
                    done += ring.enqueue(b)
                else:
                    time.sleep(0)
        return done
    def consumer():
        got, buf, deadline = 0, dpdk.Burst(32), time.time() + 20
        while got < N * 10 and time.time() < deadline:
            b = ring.dequeue(32, buf)
            got += len(b)
            b.free()
        return got, _dpdk.lcore_id()
    sent, (got, lcore) = dpdk.run_workers([producer, consumer], cores=[0, 1])
    bs = dpdk.busy_stats()
    out(sent=sent, got=got, lcore=lcore, ring_count=ring.count(), in_use=pool.in_use(),
        ring_acct=bs["per_queue"].get("ring"))
    """)
    assert res["sent"] == res["got"] == 2000
    assert res["lcore"] is not None, "worker thread registered with EAL"
    assert res["ring_count"] == 0 and res["in_use"] == 0
    assert res["ring_acct"][1] == 2000


@needs_dpdk
def test_two_eal_processes_side_by_side_and_hugetlbfs_mode():
    code = PRELUDE + textwrap.dedent("""
    mode = sys.argv[1]
    e = dpdk.init(mem_mb=64, in_memory=(mode == "mem"), reserve_hugepages=True)
    pool = dpdk.pool(n=2047)
    a = dpdk.Port.open("net_null0", pool)
    b = dpdk.Port.open("net_null1", pool)
    files = sorted(os.listdir("/dev/shm/huge"))
    fw = dpdk.io_forward(a, b, seconds=1.0)
    out(prefix=e.file_prefix, files=files, rx=fw["rx"], args=e.args)
    """)
    st = hugepages.status()  # both start at once: reserve for both before either looks
    hugepages.reserve(st["total"] - st["free"] + 2 * 32 + 64)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    procs = [
        sandbox.popen(
            [sys.executable, "-c", code, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for mode in ("mem", "files")
    ]
    outs = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=90)
            assert p.returncode == 0, se[-3000:]
            outs.append(
                json.loads([ln for ln in so.splitlines() if ln.startswith("RESULT ")][-1][7:])
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert outs[0]["prefix"] != outs[1]["prefix"]
    assert all(o["rx"] > 0 for o in outs)
    assert outs[0]["files"] == []  # --in-memory: memfd, no files
    assert outs[1]["files"], "hugetlbfs mode keeps its page files in the sandbox"
    assert "--huge-dir" in outs[1]["args"]
    assert sandbox.leftovers() == []


@needs_dpdk
def test_killed_process_leaves_nothing():
    code = PRELUDE + textwrap.dedent("""
    dpdk.init(mem_mb=64, in_memory=False, reserve_hugepages=True)
    pool = dpdk.pool(n=2047)
    print("READY", os.listdir("/dev/shm/huge"), flush=True)
    time.sleep(60)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    token = f"vnfl-kill-test-{os.getpid()}-{time.monotonic_ns()}"
    p = sandbox.popen(
        [sys.executable, "-c", code, token],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = p.stdout.readline()
        assert line.startswith("READY") and "[]" not in line, (line, p.stderr.read())
    finally:
        p.send_signal(signal.SIGKILL)  # unshare --kill-child takes the rest
        p.wait(timeout=30)
    deadline = time.time() + 10
    while subprocess.run(["pgrep", "-f", token], capture_output=True).returncode == 0:
        assert time.time() < deadline, "DPDK process survived its sandbox"
        time.sleep(0.1)
    assert sandbox.leftovers() == []


VHOST_PAIR = (
    PRELUDE
    + """
role, sock = sys.argv[1], sys.argv[2]
dpdk.init(mem_mb=64, reserve_hugepages=True)
pool = dpdk.pool(n=4095)
if role == "vhost":
    v = dpdk.Port.open(f"net_vhost0,iface={sock},queues=1", pool)
    n = dpdk.Port.open("net_null0", pool)
    deadline = time.time() + 20
    while not v.link()["up"] and time.time() < deadline:
        time.sleep(0.05)
    fw = dpdk.io_forward(n, v, seconds=1.5)
    out(up=v.link()["up"], sent=fw["tx"], opackets=v.stats()["opackets"])
else:
    u = dpdk.Port.open(f"net_virtio_user0,path={sock},queues=1", pool)
    got, buf, end = 0, dpdk.Burst(32), time.time() + 3
    while time.time() < end:
        b = u.rx(0, 32, buf)
        got += len(b)
        b.free()
    out(got=got, ipackets=u.stats()["ipackets"])
"""
)


@needs_dpdk
def test_virtio_user_to_vhost_between_two_sandboxes(tmp_path):
    st = hugepages.status()
    hugepages.reserve(st["total"] - st["free"] + 2 * 32 + 64)
    sock = str(tmp_path / "vh.sock")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    procs = []
    try:
        for role in ("vhost", "virtio"):
            procs.append(
                sandbox.popen(
                    [sys.executable, "-c", VHOST_PAIR, role, sock],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
            if role == "vhost":
                deadline = time.time() + 20
                while not os.path.exists(sock):
                    assert time.time() < deadline and procs[0].poll() is None, "no vhost socket"
                    time.sleep(0.05)
        outs = []
        for p in procs:
            so, se = p.communicate(timeout=90)
            assert p.returncode == 0, se[-3000:]
            outs.append(
                json.loads([ln for ln in so.splitlines() if ln.startswith("RESULT ")][-1][7:])
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    vh, vu = outs
    assert vh["up"] and vh["sent"] > 1000
    assert vu["got"] == vh["sent"] == vh["opackets"] == vu["ipackets"]
    assert sandbox.leftovers() == []


def test_zz_nothing_left_behind():
    """Runs last in this file: no huge-page files, no DPDK runtime dirs outside sandboxes."""
    assert sandbox.leftovers() == []
