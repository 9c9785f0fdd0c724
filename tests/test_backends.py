"""BackendPool: the three policies, Maglev's balance and minimal disruption, health and drain."""

import time
from collections import Counter

import pytest

from vnf.backends import Backend, BackendPool, is_prime, maglev_table
from vnf.hashing import flow_hash
from vnf.packet import FiveTuple

M = 65537


def backends(n):
    return [
        Backend(f"backend-{i}", f"10.0.0.{10 + i}", f"02:00:00:00:00:{10 + i:02x}", 80)
        for i in range(n)
    ]


def flows(n):
    return [
        FiveTuple(0x0A000001 + i // 1000, 0x0A000064, 1024 + i % 1000, 5000, 17) for i in range(n)
    ]


def slot_owners(names, size=M):
    return [names[i] for i in maglev_table(names, size)]


def test_flow_hash_is_crc32_of_the_packed_tuple():
    import struct
    import zlib

    f = FiveTuple(0x0A000001, 0x0A000064, 1234, 5000, 17)
    assert flow_hash(f) == zlib.crc32(struct.pack("!IIHHB", *f)) == 0x22F57402


def test_backend_helpers():
    b = Backend("b", "10.0.0.11", "aa:bb:cc:dd:ee:0f", 80)
    assert b.mac_bytes == bytes.fromhex("aabbccddee0f")
    assert b.ip_int == 0x0A00000B


@pytest.mark.parametrize("n", [5, 7, 10, 13, 20])
def test_maglev_shares_are_within_1_percent_of_one_nth(n):
    """Paper, section 3.4: with M >> N every backend owns ~M/N slots (here within one slot)."""
    counts = Counter(slot_owners([f"backend-{i}" for i in range(n)]))
    assert len(counts) == n
    for count in counts.values():
        assert abs(count / M - 1 / n) <= 0.01 / n


@pytest.mark.parametrize("n", [5, 10, 20])
def test_maglev_removing_one_backend_moves_about_one_nth(n):
    names = [f"backend-{i}" for i in range(n)]
    gone = names[n // 2]
    before = slot_owners(names)
    after = slot_owners([name for name in names if name != gone])
    moved = sum(a != b for a, b in zip(before, after))
    survivors_moved = sum(a != b and a != gone for a, b in zip(before, after))
    # The removed backend's ~1/N of the slots must move; Maglev moves few others
    # (the paper calls it "minimal disruption", not zero disruption).
    assert 1 / n <= moved / M <= 1 / n * 1.15
    assert survivors_moved / M < 0.01


@pytest.mark.parametrize("n", [5, 10, 20])
def test_hash_mod_n_moves_most_flows_when_n_changes(n):
    """The contrast: with hash % N, about (N-1)/N of all flows change backend."""
    sample = flows(20_000)
    before = BackendPool(backends(n), policy="hash")
    after = BackendPool(backends(n)[:-1], policy="hash")
    moved = sum(before.choose(f) != after.choose(f) for f in sample) / len(sample)
    assert abs(moved - (n - 1) / n) < 0.03


def test_maglev_pool_follows_the_table():
    pool = BackendPool(backends(5), policy="maglev")
    f = FiveTuple(0x0A000001, 0x0A000064, 1234, 5000, 17)
    names = sorted(b.name for b in pool.active)
    assert pool.choose(f).name == names[maglev_table(names, M)[flow_hash(f) % M]]
    assert sum(pool.shares().values()) == pytest.approx(1.0)


def test_maglev_table_builds_fast():
    names = [f"backend-{i}" for i in range(20)]
    start = time.perf_counter()
    table = maglev_table(names, M)
    assert time.perf_counter() - start < 0.5
    assert len(table) == M and min(table) == 0


def test_maglev_pool_does_not_depend_on_config_order():
    """Two LB instances with the same backends listed differently must agree on every flow."""
    a = BackendPool(backends(6), policy="maglev", table_size=251)
    b = BackendPool(backends(6)[::-1], policy="maglev", table_size=251)
    assert a.table == b.table


def test_roundrobin_gives_each_new_flow_the_next_backend():
    pool = BackendPool(backends(3), policy="roundrobin")
    chosen = [pool.choose(f).name for f in flows(6)]
    assert chosen == ["backend-0", "backend-1", "backend-2"] * 2


def test_hash_policy_is_deterministic_across_pools():
    a, b = BackendPool(backends(4), policy="hash"), BackendPool(backends(4), policy="hash")
    assert all(a.choose(f) == b.choose(f) for f in flows(500))


@pytest.mark.parametrize("policy", ["hash", "roundrobin", "maglev"])
def test_unhealthy_and_drained_backends_get_no_new_flows(policy):
    pool = BackendPool(backends(4), policy=policy, table_size=251)
    pool.set_health("backend-1", False)
    pool.drain("backend-2")
    chosen = {pool.choose(f).name for f in flows(2000)}
    assert chosen == {"backend-0", "backend-3"}
    assert not pool.serves(pool.get("backend-1"))  # failed: loses its flows
    assert pool.serves(pool.get("backend-2"))  # draining: keeps its flows
    pool.set_health("backend-1", True)
    pool.drain("backend-2", False)
    assert {pool.choose(f).name for f in flows(2000)} == {b.name for b in backends(4)}


def test_add_and_remove():
    pool = BackendPool(backends(2), policy="maglev", table_size=251)
    extra = Backend("extra", "10.0.0.50", "02:00:00:00:00:50", 80)
    pool.add(extra)
    assert "extra" in pool.shares()
    assert pool.index_of(extra) == 2
    assert pool.remove("backend-0").name == "backend-0"
    assert set(pool.shares()) == {"backend-1", "extra"}
    assert pool.index_of(extra) == 2  # indexes are stable
    assert pool.index_count == 3  # backend-0 keeps its number
    with pytest.raises(KeyError):
        pool.remove("backend-0")
    with pytest.raises(ValueError, match="duplicate"):
        pool.add(extra)


@pytest.mark.parametrize("policy", ["hash", "roundrobin", "maglev"])
def test_choose_by_hash_is_choose_given_the_hash(policy):
    by_flow = BackendPool(backends(3), policy=policy, table_size=251)
    by_hash = BackendPool(backends(3), policy=policy, table_size=251)
    sample = flows(300)
    assert [by_flow.choose(f) for f in sample] == [
        by_hash.choose_by_hash(flow_hash(f)) for f in sample
    ]


def test_no_eligible_backend_gives_none():
    pool = BackendPool(backends(1), policy="maglev", table_size=251)
    pool.set_health("backend-0", False)
    assert pool.choose(flows(1)[0]) is None


@pytest.mark.parametrize(
    "size, n, message",
    [
        (65536, 3, "table_size: 65536 is not prime"),
        (3, 3, "table_size: 3 must be larger than the number of backends"),
        (1, 1, "table_size: 1 is not prime"),
    ],
)
def test_table_size_is_validated(size, n, message):
    with pytest.raises(ValueError, match=message):
        BackendPool(backends(n), policy="maglev", table_size=size)


def test_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        BackendPool(backends(1), policy="random")


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime(65537) and not is_prime(65535)
