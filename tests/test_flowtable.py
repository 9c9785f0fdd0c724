"""FlowTable: hits, idle expiry, LRU eviction (expired entries first), counters."""

import pytest

from vnf.flowtable import FlowTable
from vnf.packet import FiveTuple


def flow(i):
    return FiveTuple(0x0A000001, 0x0A000064, 1024 + i, 5000, 17)


def test_miss_then_hit():
    table = FlowTable()
    assert table.lookup(flow(1), now=0.0) is None
    table.insert(flow(1), "b1", now=0.0)
    assert table.lookup(flow(1), now=1.0) == "b1"
    assert len(table) == 1 and flow(1) in table
    assert (table.hits, table.misses) == (1, 1)


def test_idle_timeout_counts_from_last_hit():
    table = FlowTable(idle_timeout=10.0)
    table.insert(flow(1), "b1", now=0.0)
    assert table.lookup(flow(1), now=10.0) == "b1"  # exactly the timeout: still alive
    assert table.lookup(flow(1), now=19.0) == "b1"  # 9 s after the last hit
    assert table.lookup(flow(1), now=29.5) is None  # 10.5 s idle: expired
    assert len(table) == 0
    assert (table.hits, table.misses, table.expirations) == (2, 1, 1)


def test_full_table_evicts_least_recently_used():
    table = FlowTable(capacity=3, idle_timeout=100.0)
    for i in range(3):
        table.insert(flow(i), i, now=float(i))
    table.lookup(flow(0), now=3.0)  # flow 0 is now the most recent
    table.insert(flow(3), 3, now=4.0)  # full: flow 1 is the LRU one
    assert flow(1) not in table
    assert all(flow(i) in table for i in (0, 2, 3))
    assert (table.evictions, table.expirations) == (1, 0)


def test_full_table_drops_expired_entries_before_live_ones():
    table = FlowTable(capacity=2, idle_timeout=5.0)
    table.insert(flow(0), 0, now=0.0)
    table.insert(flow(1), 1, now=4.0)
    table.insert(flow(2), 2, now=6.0)  # flow 0 is idle 6 s: expired
    assert flow(0) not in table and flow(1) in table
    assert (table.evictions, table.expirations) == (0, 1)


def test_insert_existing_key_replaces_and_refreshes():
    table = FlowTable(capacity=2, idle_timeout=100.0)
    table.insert(flow(0), "a", now=0.0)
    table.insert(flow(1), "b", now=1.0)
    table.insert(flow(0), "c", now=2.0)  # update: flow 0 most recent again
    table.insert(flow(2), "d", now=3.0)
    assert table.lookup(flow(0), now=4.0) == "c"
    assert flow(1) not in table
    assert len(table) == 2


def test_expire_and_remove():
    table = FlowTable(idle_timeout=5.0)
    for i in range(10):
        table.insert(flow(i), i, now=float(i))
    assert table.expire(now=12.0) == 7  # last seen at 0..6: idle > 5 s
    assert len(table) == 3
    assert table.remove(flow(9)) is True
    assert table.remove(flow(9)) is False
    assert table.stats() == {
        "size": 2,
        "capacity": 65536,
        "hits": 0,
        "misses": 0,
        "evictions": 0,
        "expirations": 7,
    }


def test_items_in_lru_order():
    table = FlowTable()
    for i in range(3):
        table.insert(flow(i), i, now=0.0)
    table.lookup(flow(0), now=1.0)
    assert [value for _, value in table.items()] == [1, 2, 0]


def test_churn_keeps_the_bound():
    table = FlowTable(capacity=100, idle_timeout=1e9)
    for i in range(10_000):
        table.insert(flow(i), i, now=float(i))
    assert len(table) == 100 and table.evictions == 9_900


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"idle_timeout": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FlowTable(**kwargs)
