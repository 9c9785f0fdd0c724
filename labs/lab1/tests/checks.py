"""Lab 1 unit checks of your flow table (FlowTable in flowtable.py).

Each check is a function taking the flowtable module; it raises AssertionError (or anything) when
the table misbehaves. ``test_public.py`` runs them with pytest; the grader runs the same checks.
"""

from collections import namedtuple

FiveTuple = namedtuple("FiveTuple", "src_ip dst_ip src_port dst_port proto")


def flow(i, proto=17):
    return FiveTuple(0x0A00000B, 0x0A000064, 40000 + i, 8080, proto)


def check_miss_insert_hit(m):
    t = m.FlowTable(capacity=8, idle_timeout=10)
    assert t.lookup(flow(1), 0.0) is None, "lookup of an unknown flow must return None"
    t.insert(flow(1), "b1", 0.0)
    assert t.lookup(flow(1), 1.0) == "b1", "a flow just inserted must be found"
    s = t.stats()
    assert (s["hits"], s["misses"]) == (1, 1), f"hits/misses counted wrong: {s}"
    assert len(t) == 1


def check_update_existing(m):
    t = m.FlowTable(capacity=2, idle_timeout=10)
    t.insert(flow(1), "b1", 0.0)
    t.insert(flow(1), "b2", 1.0)
    assert len(t) == 1 and t.lookup(flow(1), 2.0) == "b2", "re-inserting a key must update it"
    assert t.stats()["evictions"] == 0, "updating a key must not evict anything"


def check_capacity_is_a_bound(m):
    t = m.FlowTable(capacity=10, idle_timeout=100)
    for i in range(1000):
        t.insert(flow(i), "b1", i * 0.001)
    assert len(t) == 10, f"a table of capacity 10 holds {len(t)} entries after 1000 inserts"
    assert t.stats()["size"] <= 10
    assert t.stats()["evictions"] == 990, f"990 evictions expected, got {t.stats()['evictions']}"


def check_lru_eviction(m):
    t = m.FlowTable(capacity=3, idle_timeout=100)
    for i in (1, 2, 3):
        t.insert(flow(i), f"b{i}", float(i))
    assert t.lookup(flow(1), 4.0) == "b1"  # 1 is now the most recently used
    t.insert(flow(4), "b4", 5.0)  # evicts the least recently used: 2
    assert flow(2) not in t, "the least recently used flow (2) should have been evicted"
    assert flow(1) in t and flow(3) in t and flow(4) in t
    assert t.stats()["evictions"] == 1


def check_idle_timeout(m):
    t = m.FlowTable(capacity=8, idle_timeout=5)
    t.insert(flow(1), "b1", 0.0)
    assert t.lookup(flow(1), 4.0) == "b1", "not idle long enough to expire"
    assert t.lookup(flow(1), 8.5) == "b1", "a hit refreshes the entry: idle 4.5 s < 5 s"
    assert t.lookup(flow(1), 20.0) is None, "idle 11.5 s > 5 s: the flow has expired"
    s = t.stats()
    assert s["expirations"] == 1 and flow(1) not in t, f"expired entry not dropped/counted: {s}"


def check_expire_sweep(m):
    t = m.FlowTable(capacity=100, idle_timeout=5)
    for i in range(10):
        t.insert(flow(i), "b1", float(i))
    dropped = t.expire(12.0)  # flows last seen at 0..6 are idle > 5 s
    assert dropped == 7, f"expire(12) should drop the 7 flows seen at t=0..6, dropped {dropped}"
    assert len(t) == 3 and t.stats()["expirations"] == 7


def check_full_table_drops_expired_first(m):
    t = m.FlowTable(capacity=2, idle_timeout=5)
    t.insert(flow(1), "b1", 0.0)
    t.insert(flow(2), "b2", 9.0)
    t.insert(flow(3), "b3", 10.0)  # full: flow 1 is idle 10 s, i.e. expired
    s = t.stats()
    assert flow(1) not in t and (s["expirations"], s["evictions"]) == (1, 0), (
        f"dropping an expired entry to make room counts as an expiration: {s}"
    )


def check_protocol_is_part_of_the_key(m):
    t = m.FlowTable(capacity=8, idle_timeout=10)
    t.insert(flow(1, proto=17), "b1", 0.0)
    assert t.lookup(flow(1, proto=6), 1.0) is None, (
        "a TCP flow must not find the UDP flow with the same addresses and ports"
    )
    t.insert(flow(1, proto=6), "b2", 1.0)
    assert t.lookup(flow(1, proto=17), 2.0) == "b1" and t.lookup(flow(1, proto=6), 2.0) == "b2"


CHECKS = [
    check_miss_insert_hit,
    check_update_existing,
    check_capacity_is_a_bound,
    check_lru_eviction,
    check_idle_timeout,
    check_expire_sweep,
    check_full_table_drops_expired_first,
    check_protocol_is_part_of_the_key,
]
LAB = 1  # which lab (test_public.py, shared by labs 1 and 2, reads it)
MODULE = "flowtable"  # the student file the checks load
