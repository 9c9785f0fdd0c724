"""LoadBalancer (the NF) and LBConfig validation."""

import dataclasses

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from vnf.backends import Backend
from vnf.lb import NO_BACKEND, NOT_FOR_VIP, ConfigError, LBConfig, LoadBalancer
from vnf.packet import DropReason, FiveTuple, ip_to_int

VIP = "10.0.0.100"
BACKENDS = [
    Backend(f"b{i}", f"10.0.0.{11 + i}", f"02:00:00:00:00:{11 + i:02x}", 8080) for i in range(3)
]


def config(**changes):
    return dataclasses.replace(
        LBConfig(vip=VIP, port=5000, backends=list(BACKENDS), table_size=251), **changes
    )


def client_flow(i, proto=17):
    return FiveTuple(ip_to_int("10.0.0.1"), ip_to_int(VIP), 10000 + i, 5000, proto)


def frame(dst=VIP, dport=5000, l4=UDP):
    return bytes(Ether() / IP(src="10.0.0.1", dst=dst) / l4(sport=1234, dport=dport) / b"x")


# ---- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"backends": []}, "backends: need at least 1 backend, got 0"),
        ({"vip": "10.9.9.9"}, "vip: 10.9.9.9 is outside subnet 10.0.0.0/24"),
        ({"vip": "10.0.0.300"}, "vip: '10.0.0.300' is not an IPv4 address"),
        ({"port": 70000}, "port: 70000 is not a port number (1-65535)"),
        ({"port": 0}, "port: 0 is not a port number (1-65535)"),
        ({"protos": ["sctp"]}, "protos: need a non-empty subset of ['tcp', 'udp'], got ['sctp']"),
        (
            {"policy": "random"},
            "policy: unknown policy 'random', expected one of hash, roundrobin, maglev",
        ),
        (
            {"table_size": 65536},
            "table_size: 65536 is not prime (Maglev needs a prime, e.g. 65537)",
        ),
        ({"table_size": 3}, "table_size: 3 must exceed the number of backends (3)"),
        ({"flow_capacity": 0}, "flow_capacity: need at least 1, got 0"),
        ({"idle_timeout": -1}, "idle_timeout: need a positive number of seconds, got -1"),
        (
            {"backends": [BACKENDS[0]._replace(mac="zz")]},
            "backends[0].mac: 'zz' is not a MAC address (aa:bb:cc:dd:ee:ff)",
        ),
        (
            {"backends": [BACKENDS[0]._replace(port=-1)]},
            "backends[0].port: -1 is not a port number (1-65535)",
        ),
        ({"backends": [BACKENDS[0], BACKENDS[0]]}, "backends[1].name: duplicate backend name 'b0'"),
        (
            {"backends": [BACKENDS[0]._replace(ip="192.168.0.1")]},
            "backends[0].ip: 192.168.0.1 is outside subnet 10.0.0.0/24",
        ),
        (
            {"backends": [BACKENDS[0]._replace(ip=VIP)]},
            "backends[0].ip: 10.0.0.100 is the VIP itself",
        ),
    ],
)
def test_config_errors_name_the_field_in_one_line(changes, message):
    with pytest.raises(ConfigError) as info:
        config(**changes).validate()
    assert str(info.value) == message
    assert info.value.field == message.split(":")[0]
    assert "\n" not in str(info.value)


def test_config_from_dict():
    cfg = LBConfig.from_dict(
        {"vip": VIP, "port": 5000, "policy": "hash", "backends": [b._asdict() for b in BACKENDS]}
    )
    assert cfg.validate().backends == BACKENDS


def test_subnet_check_can_be_switched_off():
    config(vip="192.168.1.1", subnet=None).validate()


def test_load_balancer_refuses_bad_config():
    with pytest.raises(ConfigError):
        LoadBalancer(config(backends=[]))


# ---- the NF ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["hash", "roundrobin", "maglev"])
def test_every_packet_of_a_flow_goes_to_the_same_backend(policy):
    lb = LoadBalancer(config(policy=policy))
    first = {i: lb.backend_for(client_flow(i), now=0.0) for i in range(100)}
    for t in range(1, 5):
        assert all(lb.backend_for(client_flow(i), now=float(t)) == first[i] for i in range(100))
    assert {b.name for b in first.values()} == {"b0", "b1", "b2"}
    assert (lb.packets, lb.forwarded, lb.new_flows) == (500, 500, 100)
    assert sum(lb.stats()["assigned"].values()) == 100


def test_affinity_survives_adding_a_backend():
    lb = LoadBalancer(config(policy="hash"))
    first = {i: lb.backend_for(client_flow(i), 0.0) for i in range(200)}
    lb.pool.add(Backend("b3", "10.0.0.20", "02:00:00:00:00:20", 8080))
    assert all(lb.backend_for(client_flow(i), 1.0) == first[i] for i in range(200))
    new = {lb.backend_for(client_flow(1000 + i), 1.0).name for i in range(200)}
    assert "b3" in new


def test_draining_backend_keeps_its_flows_and_failed_one_loses_them():
    lb = LoadBalancer(config())
    first = {i: lb.backend_for(client_flow(i), 0.0) for i in range(300)}
    lb.pool.drain("b0")
    lb.pool.set_health("b1", False)
    for i, backend in first.items():
        now_backend = lb.backend_for(client_flow(i), 1.0)
        if backend.name == "b1":
            assert now_backend.name == "b2"  # the only one taking flows
        else:
            assert now_backend == backend  # b0 (draining) and b2 keep theirs
    assert lb.reassigned == sum(b.name == "b1" for b in first.values())
    assert {lb.backend_for(client_flow(1000 + i), 1.0).name for i in range(100)} == {"b2"}


def test_idle_flow_may_be_rebalanced():
    lb = LoadBalancer(config(policy="roundrobin", idle_timeout=10.0))
    a = lb.backend_for(client_flow(0), 0.0)
    assert lb.backend_for(client_flow(0), 100.0) != a  # expired: a new round-robin pick
    assert lb.new_flows == 2


def test_no_backend_left():
    lb = LoadBalancer(config(backends=[BACKENDS[0]]))
    lb.pool.set_health("b0", False)
    assert lb.backend_for(client_flow(0), 0.0) is None
    assert lb.dropped[NO_BACKEND] == 1


def test_is_for_service_wants_vip_port_and_a_served_protocol():
    lb = LoadBalancer(config(protos=("udp",)))
    assert lb.is_for_service(client_flow(1))
    assert not lb.is_for_service(client_flow(1, proto=6))  # TCP not served
    assert not lb.is_for_service(client_flow(1)._replace(dst_port=22))
    assert not lb.is_for_service(client_flow(1)._replace(dst_ip=ip_to_int("10.0.0.99")))
    assert lb.stats()["packets"] == 0  # a question only


def test_handle_frame_forwards_and_counts_drops():
    lb = LoadBalancer(config(protos=("udp",)))
    backend, parsed = lb.handle_frame(frame(), now=0.0)
    assert backend in BACKENDS and parsed.flow.dst_port == 5000
    assert lb.handle_frame(frame(dst="10.0.0.99"), 0.0)[0] is None  # other IP
    assert lb.handle_frame(frame(dport=22), 0.0)[0] is None  # other port
    assert lb.handle_frame(frame(l4=TCP), 0.0)[0] is None  # proto not served
    assert lb.handle_frame(bytes(Ether() / ARP()), 0.0)[0] is None
    assert lb.handle_frame(bytes(Ether() / IP(dst=VIP) / ICMP()), 0.0)[0] is None
    assert lb.handle_frame(b"\x00" * 10, 0.0)[0] is None
    stats = lb.stats()
    assert stats["dropped"][NOT_FOR_VIP] == 3
    assert stats["dropped"][DropReason.ARP] == 1
    assert stats["dropped"][DropReason.UNSUPPORTED_PROTO] == 1
    assert stats["dropped"][DropReason.TRUNCATED_ETHERNET] == 1
    assert stats["packets"] == stats["forwarded"] + sum(stats["dropped"].values()) == 7
    assert stats["flow_table"]["size"] == 1


def test_flow_table_is_bounded():
    lb = LoadBalancer(config(flow_capacity=10))
    for i in range(50):
        lb.backend_for(client_flow(i), float(i))
    assert lb.stats()["flow_table"]["size"] == 10
    assert lb.stats()["flow_table"]["evictions"] == 40


def test_stats_report_backend_states():
    lb = LoadBalancer(config())
    lb.pool.drain("b0")
    lb.pool.set_health("b2", False)
    assert lb.stats()["backends"] == {"b0": "draining", "b1": "up", "b2": "unhealthy"}


def test_count_drop_for_ways_that_parse_in_c():
    lb = LoadBalancer(config())
    lb.backend_for(client_flow(0), 0.0)
    lb.count_drop(DropReason.ARP, 3)
    lb.count_drop(NOT_FOR_VIP)
    stats = lb.stats()
    assert stats["dropped"][DropReason.ARP] == 3 and stats["dropped"][NOT_FOR_VIP] == 1
    assert stats["packets"] == stats["forwarded"] + sum(stats["dropped"].values()) == 5
