"""The vectorised decision's C kernel (vnf._fastpath.cache_lookup: nf_for_vip + nf_cache_lookup
in vnf/csrc/nf.h) against a straightforward Python reference, on random inputs, with plain and
strided (record-array) columns, pinned or plain arrays, called with its arguments or bound once
(CacheLookup); then LoadBalancer.backends_for_batch
over both column kinds (DPDK ParseArrays, AF_PACKET ring records) against handle_frame."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnf.backends import Backend
from vnf.batch import SET_ALIGN, SLOT, slot_table
from vnf.hashing import flow_hash
from vnf.lb import LBConfig, LoadBalancer
from vnf.packet import REASONS, FiveTuple

fastpath = pytest.importorskip("vnf._fastpath", reason="build it: setup.py build_ext --inplace")

VIP, PORT = 0x0A000064, 8080
TCP, UDP = 6, 17
COLUMNS = ("hash", "reason", "dst_ip", "dst_port", "proto")
# the AF_PACKET ring's record layout, in miniature: the columns are strided views
RECORD = np.dtype(
    {
        "names": ["pad", "hash", "reason", "dst_ip", "dst_port", "proto"],
        "formats": ["<u4", "<u4", "u1", "<u4", "<u2", "u1"],
        "offsets": [0, 4, 9, 12, 18, 21],
        "itemsize": 24,
    }
)


def reference(packets, vip, cache, now):
    """cache_lookup, written out: (choice list, (parsed, valid, hits)); updates cache['seen']."""
    ip, port, proto_mask = vip
    bits = (len(cache["hash"]) - 1).bit_length()
    choice, parsed, valid, hits = [], 0, 0, 0
    for h, reason, dst_ip, dst_port, proto in packets:
        parsed += reason == 0
        if not (
            reason == 0
            and dst_ip == ip
            and dst_port == port
            and proto < 64
            and proto_mask >> proto & 1
        ):
            choice.append(-1)
            continue
        valid += 1
        first = ((h * 2654435769) & 0xFFFFFFFF) >> (32 - bits) if bits else 0  # Fibonacci hashing
        for slot in (first, first ^ 1) if bits else (first,):  # two ways
            b = int(cache["backend"][slot])
            if int(cache["hash"][slot]) == h and b >= 0:
                if b < len(cache["alive"]) and cache["alive"][b]:
                    cache["seen"][slot] = now
                    choice.append(b)
                    hits += 1
                else:
                    choice.append(-2)
                break
        else:
            choice.append(-2)
    return choice, (parsed, valid, hits)


hashes = st.integers(0, 2**32 - 1)
packet = st.tuples(
    hashes,
    st.sampled_from([0, 0, 0, 1, 9, 13]),
    st.sampled_from([VIP, VIP, VIP, VIP + 1, 0]),
    st.sampled_from([PORT, PORT, PORT, 80, 0]),
    st.sampled_from([TCP, UDP, UDP, 1, 200]),
)


@settings(max_examples=300, deadline=None)
@given(
    packets=st.lists(packet, max_size=80),
    slots_log2=st.integers(0, 6),
    entries=st.lists(st.tuples(hashes, st.integers(-1, 5)), max_size=40),
    alive=st.lists(st.booleans(), max_size=6),
    protos=st.sampled_from([{TCP}, {UDP}, {TCP, UDP}]),
    reuse_hashes=st.booleans(),
    strided=st.booleans(),
    pinned=st.booleans(),
    bound=st.booleans(),
    extra=st.integers(0, 3),
)
def test_kernel_equals_the_python_reference(
    packets, slots_log2, entries, alive, protos, reuse_hashes, strided, pinned, bound, extra
):
    slots = 1 << slots_log2
    table = slot_table(slots)  # the kernel reads the records; the reference, the field views
    cache = {name: table[name] for name in ("hash", "backend", "seen")}
    cache["alive"] = np.array(alive, bool)
    for h, b in entries:  # some slots filled, some collide
        cache["hash"][h % slots], cache["backend"][h % slots] = h, b
    if reuse_hashes and entries:  # make hits likely: packets of cached flows
        packets = [(entries[i % len(entries)][0], *p[1:]) for i, p in enumerate(packets)]
    n = len(packets)
    vip = (VIP, PORT, sum(1 << p for p in protos))
    if strided:
        cols = np.zeros(n + extra, RECORD)  # longer than n: only n are read
        for name, values in zip(COLUMNS, zip(*packets) if packets else [()] * 5):
            cols[name][:n] = values
        columns = tuple(cols[name] for name in COLUMNS)
        assert len(columns[0]) < 2 or columns[0].strides == (RECORD.itemsize,)
    else:
        dtypes = (np.uint32, np.uint8, np.uint32, np.uint16, np.uint8)
        columns = tuple(
            np.array([p[k] for p in packets] + [0] * extra, dt) for k, dt in enumerate(dtypes)
        )
    ref_cache = {k: v.copy() for k, v in cache.items()}
    expected, counts = reference(packets, vip, ref_cache, 7.5)
    choice = np.full(n + extra, 99, np.int32)
    state = (table.view(np.uint8), cache["alive"])
    if pinned:
        columns = tuple(fastpath.pin(c) for c in columns)
        state = tuple(fastpath.pin(a) for a in state)
    out = fastpath.pin(choice) if pinned else choice
    if bound:  # the arguments checked and held once, then one burst through them
        got = fastpath.CacheLookup(columns, vip, state, out).lookup(n, 7.5)
    else:
        got = fastpath.cache_lookup(n, 7.5, columns, vip, state, out)
    assert got == counts
    assert choice[:n].tolist() == expected
    assert (choice[n:] == 99).all()  # nothing written past n
    for k in cache:
        assert np.array_equal(cache[k], ref_cache[k]), k


def test_python_slot_layout_is_the_c_struct():
    """vnf.batch.SLOT and SET_ALIGN against what the C compiler made of struct nf_flow_slot and
    NF_CACHE_ALIGN: the kernel reads the records Python writes, field by field."""
    assert SLOT.itemsize == fastpath.CACHE_SLOT_SIZE
    offsets = {name: SLOT.fields[name][1] for name in SLOT.names}
    assert offsets == {
        "hash": fastpath.CACHE_SLOT_HASH,
        "backend": fastpath.CACHE_SLOT_BACKEND,
        "seen": fastpath.CACHE_SLOT_SEEN,
    }
    assert SET_ALIGN == fastpath.CACHE_ALIGN == 2 * SLOT.itemsize  # a set: two slots
    table = slot_table(5)
    assert table.ctypes.data % SET_ALIGN == 0 and (table["backend"] == -1).all()


def test_kernel_refuses_bad_arrays():
    col = np.zeros(4, np.uint32)
    ok_cols = (col, np.zeros(4, np.uint8), col, np.zeros(4, np.uint16), np.zeros(4, np.uint8))
    table = (slot_table(8).view(np.uint8), np.zeros(2, bool))
    six_slots = (slot_table(6).view(np.uint8),) + table[1:]
    off_set = (slot_table(9).view(np.uint8)[SET_ALIGN // 2 : SET_ALIGN // 2 + 128],) + table[1:]
    vip = (VIP, PORT, 1 << UDP)
    choice = np.zeros(4, np.int32)
    assert fastpath.cache_lookup(4, 0.0, ok_cols, vip, table, choice) == (4, 0, 0)
    with pytest.raises(ValueError, match="need at least 5"):
        fastpath.cache_lookup(5, 0.0, ok_cols, vip, table, choice)
    with pytest.raises(TypeError, match="hash"):  # wrong item size
        fastpath.cache_lookup(4, 0.0, (np.zeros(4, np.uint16),) + ok_cols[1:], vip, table, choice)
    with pytest.raises(TypeError, match="dst_ip"):  # big-endian
        fastpath.cache_lookup(
            4, 0.0, ok_cols[:2] + (col.astype(">u4"),) + ok_cols[3:], vip, table, choice
        )
    with pytest.raises(ValueError, match="power-of-two"):
        fastpath.cache_lookup(4, 0.0, ok_cols, vip, six_slots, choice)
    with pytest.raises(ValueError, match="multiple of 32"):  # a set would straddle two lines
        fastpath.cache_lookup(4, 0.0, ok_cols, vip, off_set, choice)
    with pytest.raises(TypeError, match="slots"):  # the records, not a field of them
        fastpath.cache_lookup(4, 0.0, ok_cols, vip, (slot_table(8)["hash"],) + table[1:], choice)
    with pytest.raises(TypeError, match="read-only"):
        ro = np.zeros(4, np.int32)
        ro.flags.writeable = False
        fastpath.cache_lookup(4, 0.0, ok_cols, vip, table, fastpath.pin(ro))
    with pytest.raises(TypeError, match="tuples"):
        fastpath.cache_lookup(4, 0.0, list(ok_cols), vip, table, choice)
    bound = fastpath.CacheLookup(ok_cols, vip, table, choice)  # the same checks, once
    assert bound.lookup(4, 0.0) == (4, 0, 0)
    with pytest.raises(ValueError, match="0..4"):  # more packets than the columns hold
        bound.lookup(5, 0.0)
    with pytest.raises(TypeError, match="dst_ip"):
        fastpath.CacheLookup(ok_cols[:2] + (col.astype(">u4"),) + ok_cols[3:], vip, table, choice)
    with pytest.raises(ValueError, match="power-of-two"):
        fastpath.CacheLookup(ok_cols, vip, six_slots, choice)


# --- LoadBalancer.backends_for_batch over both column kinds ----------------------------------

BACKENDS = [
    Backend(f"b{i}", f"10.0.0.{100 + i}", f"02:00:00:00:02:{i:02x}", PORT) for i in (1, 2, 3)
]


class Columns:
    """ParseArrays' shape: one fixed array per column, reused for every burst."""

    def __init__(self, n):
        self.hash, self.dst_ip = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
        self.reason, self.proto = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
        self.dst_port = np.zeros(n, np.uint16)


def _fill(target, packets):
    for i, (flow, reason) in enumerate(packets):
        fields = (
            (flow_hash(flow), reason, flow.dst_ip, flow.dst_port, flow.proto)
            if not reason
            else (0, reason, 0, 0, 0)
        )
        for name, value in zip(COLUMNS, fields):
            column = target[name] if isinstance(target, np.ndarray) else getattr(target, name)
            column[i] = value


@pytest.mark.parametrize("kind", ["arrays", "records"])
def test_backends_for_batch_equals_handle_frame(kind):
    cfg = LBConfig(vip="10.0.0.100", port=PORT, protos=("udp",), backends=BACKENDS)
    ref, vec = LoadBalancer(cfg), LoadBalancer(cfg)
    rng = np.random.default_rng(5)
    flows = [
        FiveTuple(
            int(rng.integers(1, 2**32)),
            VIP if i % 7 else VIP + 1,
            int(rng.integers(1024, 65536)),
            PORT if i % 11 else 80,
            UDP if i % 13 else TCP,
        )
        for i in range(300)
    ]
    slots = {}
    flows = [f for f in flows if slots.setdefault(flow_hash(f) & 65535, f) == f]  # no collisions
    packets = [
        (flows[i], 0) if i % 17 else (flows[i], 5)  # some unparsed: truncated-ip
        for i in rng.integers(0, len(flows), 3000)
    ]
    burst = 32 if kind == "arrays" else 200
    cols = Columns(burst) if kind == "arrays" else None
    got = []
    for start in range(0, len(packets), burst):
        chunk = packets[start : start + burst]
        if kind == "records":
            cols = np.zeros(len(chunk) + 3, RECORD)[: len(chunk)]  # a fresh view per block
        _fill(cols, chunk)
        got += vec.backends_for_batch(cols, len(chunk), 1.0).tolist()
    expected = []
    for flow, reason in packets:
        if reason:
            ref.count_drop(REASONS[reason])
            expected.append(-1)
        elif flow.dst_ip != ref.vip or flow.dst_port != ref.port or flow.proto not in ref.protos:
            ref.count_drop("not-for-vip")
            expected.append(-1)
        else:
            expected.append(ref.pool.index_of(ref.backend_for(flow, 1.0)))
    assert got == expected
    s, r = vec.stats(), ref.stats()
    for key in ("packets", "forwarded", "new_flows", "dropped", "assigned"):
        assert s[key] == r[key], key
    assert s["packets"] == s["forwarded"] + sum(s["dropped"].values())
    assert vec.batch_cache.stats()["hits"] == s["forwarded"] - s["new_flows"]


# --- way 2 end to end with style "vector" (way 3's vector style: tests/test_dpdk_way.py) -------


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_afpacket_vector_style_keeps_affinity(workers):
    from testbed.experiment import ExperimentSpec, run_sandboxed

    spec = ExperimentSpec(
        way="afpacket",
        clients=2,
        backends=3,
        udp_flows=600,
        packets_per_flow=3,
        rate_pps=3000,
        http_conns=40,
        lb_extra={"workers": workers, "style": "vector"},
        cost_rate_pps=0,
        saturation_seconds=0,
        timeout_s=150,
    )
    result = run_sandboxed(spec)
    assert "error" not in result, result
    assert result["lb_alive_after_traffic"], result.get("lb_log_tail")
    assert result["lb_stats"]["style"] == "vector"
    assert result["split_flows"] == 0, result["report_table"]
    assert result["flows"]["seen"] == 640
    assert result["http"]["failures"] == 0, result["http"]
    assert result["lost"]["return"] == 0, result["lost"]
    # Loss here was once seen while other sandboxes flooded the same CPU: the kernel's per-CPU
    # receive backlog (net.core.netdev_max_backlog) is shared by every network namespace, so a
    # concurrent benchmark can drop our frames after the LB sent them. Run alone it is 0.
    assert result["lost"]["forward"] == 0, result["lost"]


@pytest.mark.network
@pytest.mark.slow
def test_afpacket_vector_style_survives_fuzzed_frames_then_still_forwards():
    from testbed.experiment import ExperimentSpec, run_sandboxed

    spec = ExperimentSpec(
        way="afpacket",
        clients=2,
        backends=3,
        udp_flows=100,
        packets_per_flow=2,
        rate_pps=2000,
        http_conns=10,
        fuzz_frames=20_000,
        lb_extra={"style": "vector"},
        cost_rate_pps=0,
        saturation_seconds=0,
        timeout_s=240,
    )
    result = run_sandboxed(spec)
    assert "error" not in result, result
    rob = result["robustness"]
    assert rob["lb_alive_after_fuzz"] and rob["lb_alive_at_end"], rob["lb_log_tail"]
    assert rob["forwards_normal_flow"], rob["after"]
    for reason in ("arp", "ipv6", "truncated-ip", "fragment", "unsupported-proto"):
        assert rob["lb_dropped"].get(reason, 0) > 0, (reason, rob["lb_dropped"])
