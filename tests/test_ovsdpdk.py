"""testbed.ovsdpdk: a private OVS-DPDK as a Mininet switch, with a vhost-user port to testpmd
(the end-to-end check is testbed.ovs_selftest).

The end-to-end run happens once (module fixture) in its own sandbox; the tests read its report.
"""

import glob
import json
import os
import shutil
import sys
import uuid

import pytest

from testbed import ovs_selftest, ovsdpdk, sandbox

NEEDED = (
    ovsdpdk.OVS_VSWITCHD_DPDK,
    ovs_selftest.TESTPMD,
    "ovsdb-server",
    "ovsdb-tool",
    "ovs-vsctl",
    "ovs-ofctl",
    "ovs-appctl",
    "ethtool",
)


def _missing():
    return [c for c in NEEDED if not (shutil.which(c) or os.access(c, os.X_OK))]


def _processes_mentioning(text):
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                if text.encode() in f.read():
                    found.append(path.split("/")[2])
        except OSError:
            pass
    return found


def _run_in_sandbox(cmd, *args):
    reason = sandbox.can_sandbox()
    if reason or _missing():
        pytest.skip(reason or "missing: " + ", ".join(_missing()))
    tag = f"vnfl{uuid.uuid4().hex[:8]}"
    proc = sandbox.run(
        [
            sys.executable,
            "-m",
            "testbed.ovs_selftest",
            cmd,
            *args,
            "--tag",
            tag,
            "--workdir",
            "/var/run/openvswitch/" + tag,
        ],
        timeout=55,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["tag"] = tag
    return res


@pytest.fixture(scope="module")
def report():
    return _run_in_sandbox("selftest", "--idle-seconds", "1")


@pytest.mark.network
@pytest.mark.dpdk
def test_ping_over_netdev_bridge(report):
    assert report["ping_netdev_bridge"] is True


@pytest.mark.network
@pytest.mark.dpdk
def test_frames_reach_testpmd_through_vhost_user_and_come_back(report):
    n = report["frames_sent"]
    assert report["frames_reflected"] == n  # back at the sender, MACs swapped
    assert report["testpmd_rx"] >= n and report["testpmd_tx"] >= n
    assert report["vhu0_stats"]["tx_pkts"] >= n  # OVS -> testpmd
    assert report["vhu0_stats"]["rx_pkts"] >= n  # testpmd -> OVS
    assert "actions=output:3" in report["flows"]


@pytest.mark.network
@pytest.mark.dpdk
def test_mininet_hosts_on_the_private_bridge(report):
    assert report["mininet_ping_loss"] == 0
    assert report["mininet_udp_received"] == 5  # checksums right: TX offload turned off


@pytest.mark.network
@pytest.mark.dpdk
def test_start_is_fast_and_idle_pmd_sleeps(report):
    assert report["startup_seconds"] < 10
    # pmd-maxsleep=1000: the PMD polling an idle vhost port costs ~1 % of a core, not 50-100 %
    assert report["idle_cpu_vhost_maxsleep1000"] < 0.15


@pytest.mark.network
@pytest.mark.dpdk
def test_stop_is_graceful_and_nothing_is_left(report):
    assert report["exit_codes"] == {"ovs-vswitchd": 0, "ovsdb-server": 0}
    assert report["failed_start_cleaned_up"] is True
    assert report["vswitchd_left"] == "0"
    tag = report["tag"]
    assert not _processes_mentioning(tag)
    assert not glob.glob(f"/dev/hugepages/{tag}*")
    assert not glob.glob(f"/var/run/dpdk/{tag}*")
    assert not os.path.exists("/var/run/openvswitch/" + tag)


@pytest.mark.network
@pytest.mark.dpdk
def test_fallbacks_without_ovs_dpdk():
    """vhost<->af_packet bridge testpmd, and af_packet / af_xdp vdevs on the LB's veth."""
    res = _run_in_sandbox("fallback")
    assert res["vhost_afpacket_bridge"] == 20
    assert res["af_packet_direct"] == 20
    assert res["af_xdp_direct"] == 20
    assert not _processes_mentioning(res["tag"])


def test_other_config():
    ovs = ovsdpdk.PrivateOVSDPDK(
        "/tmp/x",
        socket_mem=256,
        pmd_cpu_mask="0x2",
        lcore_mask="0x1",
        file_prefix="p1",
        single_file_segments=True,
    )
    cfg = ovs.other_config()
    assert cfg["dpdk-init"] == "true"
    assert cfg["dpdk-extra"] == "--no-pci --file-prefix=p1 --single-file-segments"
    assert cfg["dpdk-socket-mem"] == "256"
    assert cfg["pmd-cpu-mask"] == "0x2" and cfg["dpdk-lcore-mask"] == "0x1"
    assert cfg["pmd-maxsleep"] == "1000"
    assert ovs.db == "unix:/tmp/x/db.sock"
    assert ovs.env["OVS_RUNDIR"] == "/tmp/x"
    assert (
        ovsdpdk.PrivateOVSDPDK("/tmp/a").file_prefix != ovsdpdk.PrivateOVSDPDK("/tmp/a").file_prefix
    )


def test_stop_before_start_is_harmless():
    ovs = ovsdpdk.PrivateOVSDPDK("/tmp/never-started")
    ovs.stop()
    ovs.stop()
    assert not ovs.running and ovs.exit_codes == {}


def test_port_stats_parsing(monkeypatch):
    ovs = ovsdpdk.PrivateOVSDPDK("/tmp/x")
    out = (
        "OFPST_PORT reply (xid=0x4): 1 ports\n"
        "  port  vhu0: rx pkts=22, bytes=1340, drop=0, errs=0, frame=?, over=?, crc=?\n"
        "           tx pkts=21, bytes=1300, drop=1, errs=0, coll=?\n"
    )
    monkeypatch.setattr(ovs, "ofctl", lambda *a: out)
    assert ovs.port_stats("br0", "vhu0") == {
        "rx_pkts": 22,
        "rx_bytes": 1340,
        "rx_drop": 0,
        "rx_errs": 0,
        "tx_pkts": 21,
        "tx_bytes": 1300,
        "tx_drop": 1,
        "tx_errs": 0,
    }


def test_testpmd_totals():
    text = (
        "  RX-packets: 3   RX-dropped: 0   RX-total: 3\n  TX-packets: 3   TX-dropped: 0\n"
        "  +++ Accumulated forward statistics for all ports+++\n"
        "  RX-packets: 7   RX-dropped: 0   RX-total: 7\n  TX-packets: 6   TX-dropped: 1\n"
    )
    assert ovs_selftest.testpmd_totals(text) == (7, 6)
