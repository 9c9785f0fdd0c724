"""The LB topology: addressing plan, config errors that name the field, and a real pingall."""

import pytest

from topologies.lb import LBTopoConfig, TopologyError


def test_addressing_plan_is_deterministic():
    cfg = LBTopoConfig(clients=2, backends=3).validate()
    assert cfg.host_names() == ["lb", "c1", "c2", "b1", "b2", "b3"]
    assert cfg.host_ip("lb") == "10.0.0.1"
    assert cfg.host_ip("c2") == "10.0.0.12"
    assert cfg.host_ip("b3") == "10.0.0.103"
    assert cfg.host_mac("b3") == "02:00:00:00:02:03"
    assert len({cfg.host_mac(n) for n in cfg.host_names()}) == 6


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"backends": 0}, "backends"),
        ({"backends": 1000}, "backends"),
        ({"backends": "3"}, "backends"),
        ({"clients": -1}, "clients"),
        ({"vip": "10.9.9.9"}, "vip"),
        ({"vip": "10.0.0.101"}, "vip"),
        ({"vip": "not-an-ip"}, "vip"),
        ({"subnet": "10.0.0.0/28"}, "subnet"),
        ({"switch": "ovsk"}, "switch"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(TopologyError) as err:
        LBTopoConfig(**kwargs).validate()
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert "\n" not in str(err.value)


def test_vip_outside_subnet_message():
    with pytest.raises(TopologyError, match=r"^vip: 10.9.9.9 is outside subnet 10.0.0.0/24$"):
        LBTopoConfig(vip="10.9.9.9").validate()


@pytest.mark.network
def test_mn_custom_pingall_in_a_sandbox():
    """The exact command from the README, inside a private namespace (never touches the host)."""
    from testbed import sandbox

    r = sandbox.run(
        [
            "mn",
            "--custom",
            "topologies/lb.py",
            "--topo",
            "lb,clients=2,backends=3",
            "--test",
            "pingall",
        ],
        timeout=120,
        capture_output=True,
        text=True,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Results: 0% dropped (30/30 received)" in out, out
