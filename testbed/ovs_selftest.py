"""The private OVS-DPDK's self-test: does ``testbed.ovsdpdk`` work on this machine?

``python -m testbed.ovs_selftest selftest`` (inside a fresh sandbox) starts a private
OVS-DPDK, pings between two veth hosts over a netdev bridge, reflects frames through
``dpdk-testpmd`` (macswap) behind a vhost-user port, runs a Mininet network on the
bridge, and measures what the idle switch costs in CPU. ``... fallback`` checks the
set-ups without OVS-DPDK (docs/ovs-dpdk.md). Both print their measurements as JSON;
tests/test_ovsdpdk.py reads them. ``start_testpmd``/``stop_testpmd`` run
``dpdk-testpmd`` as a stand-in VNF or reflector.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

from testbed import sandbox
from testbed.ovsdpdk import OVSDPDKSwitch, OVSError, PrivateOVSDPDK, _run
from vnf.dpdk import hugepages

TESTPMD = "dpdk-testpmd"
SELFTEST_WORKDIR = "/var/run/openvswitch/vnflab"  # a private tmpfs inside the sandbox
PEER_MAC = "02:00:00:00:00:99"

# Runs inside a host namespace: sends N raw frames (ethertype 0x88B5, IEEE local
# experimental) to PEER_MAC and counts the ones
# that come back with MACs swapped (testpmd macswap) and the same payload.
_REFLECT_PROBE = r"""
import socket, sys, time
ifname, peer, n = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
s.bind((ifname, 0)); s.settimeout(0.2)
me = s.getsockname()[4]
sent = set()
for i in range(n):
    tag = b'vnflab-ovsdpdk-%04d' % i
    s.send(peer + me + b'\x88\xb5' + tag.ljust(46, b'\0')); sent.add(tag)
back = set(); deadline = time.time() + 3
while back != sent and time.time() < deadline:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    if f[0:6] == me and f[6:12] == peer:
        back.add(f[14:33])
print(len(back & sent))
"""


def start_testpmd(
    file_prefix,
    vdevs,
    mode,
    lcores="0,1",
    mem_mb=64,
    mbufs=8192,
    ready_path=None,
    netns=None,
    timeout=15,
):
    """Start ``dpdk-testpmd --no-pci`` non-interactively (stdin kept open: write a newline
    to make it stop and print its totals, see ``stop_testpmd``).  The first lcore is the
    main one, the second forwards.  ``mbufs`` is explicit because of the small ``-m``
    (af_xdp needs more than 2048).  With ``ready_path``, wait for that file (a vhost socket);
    otherwise wait until testpmd says it is forwarding."""
    argv = [
        "stdbuf",
        "-oL",
        TESTPMD,
        "--no-pci",
        "--single-file-segments",
        "--file-prefix=" + file_prefix,
        "-m",
        str(mem_mb),
        "-l",
        lcores,
    ]
    for vdev in vdevs:
        argv += ["--vdev", vdev]
    argv += ["--", "--forward-mode=" + mode, f"--total-num-mbufs={mbufs}", "--nb-cores=1"]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + timeout
    if ready_path:
        while not os.path.exists(ready_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise OVSError(f"testpmd did not create {ready_path}: {proc.communicate()[0]}")
            time.sleep(0.05)
        return proc
    seen = []
    for line in proc.stdout:  # line-buffered thanks to stdbuf
        seen.append(line)
        if "Press enter to exit" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise OVSError("testpmd did not start: " + "".join(seen + [proc.communicate()[0]]))


def stop_testpmd(proc, timeout=15):
    """Stop a ``start_testpmd`` process; returns its accumulated (rx, tx) packets."""
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
        out = proc.communicate(timeout=timeout)[0]
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        out = proc.communicate()[0]
    return testpmd_totals(out)


def _sh(cmd):
    _run(["sh", "-c", cmd])


def _make_host(name, addr, ifname, swname):
    _sh(
        f"ip netns add {name} && ip link add {ifname} type veth peer name {swname} && "
        f"ip link set {ifname} netns {name} && ip link set {swname} up && "
        f"ip netns exec {name} ip link set lo up && ip netns exec {name} ip link set {ifname} up && "
        f"ip netns exec {name} ip addr add {addr}/24 dev {ifname} && "
        f"ip netns exec {name} ethtool -K {ifname} tx off >/dev/null"
    )


def _ping(ns, addr, count=3):
    return (
        subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", addr],
            capture_output=True,
            text=True,
        ).returncode
        == 0
    )


def _idle_cpu(ovs, seconds):
    c0, t0 = ovs.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (ovs.cpu_seconds() - c0) / (time.monotonic() - t0)


def selftest(
    workdir=SELFTEST_WORKDIR, idle_seconds=2.0, mininet=True, maxsleep_off=False, tag="vnfl"
):
    """End-to-end check; call inside a vnflab sandbox.  Returns a dict of results.
    ``tag`` prefixes the DPDK file prefixes (so a caller can look for leftovers)."""
    if not sandbox.in_sandbox():
        raise OVSError(
            "selftest() creates namespaces, bridges and huge-page files: "
            "run it inside a vnflab sandbox (python -m testbed.ovs_selftest selftest)"
        )
    res = {}
    hugepages.ensure_free(128 + 64)
    res["failed_start_cleaned_up"] = _failed_start_cleans_up(workdir + "-fail")
    ovs = PrivateOVSDPDK(
        workdir, socket_mem=128, pmd_cpu_mask="0x2", pmd_maxsleep=1000, file_prefix=tag + "ovs"
    )
    testpmd = None
    try:
        ovs.start()
        res["startup_seconds"] = round(ovs.startup_seconds, 3)
        res["idle_cpu_maxsleep1000"] = round(_idle_cpu(ovs, idle_seconds), 4)
        # 1. two hosts on a netdev bridge, forwarded by the NORMAL action
        _make_host("h1", "10.0.0.1", "h1-eth0", "s-h1")
        _make_host("h2", "10.0.0.2", "h2-eth0", "s-h2")
        ovs.add_bridge("br0")
        ovs.add_port("br0", "s-h1", ofport=1)
        ovs.add_port("br0", "s-h2", ofport=2)
        res["ping_netdev_bridge"] = _ping("h1", "10.0.0.2")
        res["idle_cpu_with_bridge"] = round(_idle_cpu(ovs, idle_seconds), 4)
        # 2. a vhost-user port with dpdk-testpmd (virtio-user, server mode) behind it
        sock = os.path.join(workdir, "vhu0.sock")
        testpmd = start_testpmd(
            tag + "tpmd",
            [f"net_virtio_user0,path={sock},server=1,queues=1"],
            "macswap",
            ready_path=sock,
        )
        ovs.add_vhost_client_port("br0", "vhu0", sock, ofport=3)
        ovs.vsctl("--timeout=10", "wait-until", "Interface", "vhu0", "link_state=up", timeout=15)
        # the PMD thread now polls vhu0: what does it cost while no packet comes?
        res["idle_cpu_vhost_maxsleep1000"] = round(_idle_cpu(ovs, idle_seconds), 4)
        if maxsleep_off:
            ovs.vsctl("set", "Open_vSwitch", ".", "other_config:pmd-maxsleep=0")
            res["idle_cpu_vhost_maxsleep0"] = round(_idle_cpu(ovs, idle_seconds), 4)
            ovs.vsctl("set", "Open_vSwitch", ".", "other_config:pmd-maxsleep=1000")
        ovs.ofctl("add-flow", "br0", "priority=100,in_port=s-h1,actions=output:vhu0")
        ovs.ofctl("add-flow", "br0", "priority=100,in_port=vhu0,actions=output:s-h1")
        res["frames_sent"] = 20
        res["frames_reflected"] = _reflected("h1", "h1-eth0", 20)
        res["vhu0_stats"] = ovs.port_stats("br0", "vhu0")
        res["flows"] = ovs.ofctl("dump-flows", "br0", "--no-stats").split()
        res["testpmd_rx"], res["testpmd_tx"] = stop_testpmd(testpmd)
        testpmd = None
        ovs.del_port("br0", "vhu0")
        ovs.del_bridge("br0")
        # 3. Mininet hosts on a bridge of the same instance
        if mininet:
            res["mininet_ping_loss"], res["mininet_udp_received"] = _mininet_check(ovs)
        res["idle_cpu_end"] = round(_idle_cpu(ovs, idle_seconds), 4)
    except BaseException:
        sys.stderr.write(ovs.log()[-3000:])
        if testpmd is not None:
            testpmd.kill()
            sys.stderr.write("--- testpmd:\n" + testpmd.communicate()[0][-3000:])
            testpmd = None
        raise
    finally:
        if testpmd is not None:
            testpmd.kill()
            testpmd.wait()
        ovs.stop()
        ovs.stop()  # idempotent
    res["exit_codes"] = ovs.exit_codes
    res["vswitchd_left"] = subprocess.run(
        ["pgrep", "-c", "ovs-vswitchd"], capture_output=True, text=True
    ).stdout.strip()
    return res


def selftest_fallback(workdir=SELFTEST_WORKDIR, tag="vnfl"):
    """The set-ups without OVS-DPDK (docs/ovs-dpdk.md), each with a testpmd in macswap mode
    standing in for the DPDK LB; call inside a vnflab sandbox.  Returns frames reflected.

    1. vhost <-> af_packet bridge: a testpmd in io mode joins a net_vhost port (server,
       where the LB's virtio-user connects) to a net_af_packet port on the switch-side veth.
    2. the LB's own veth driven directly by a net_af_packet or net_af_xdp vdev."""
    if not sandbox.in_sandbox():
        raise OVSError("selftest_fallback() must run inside a vnflab sandbox")
    hugepages.ensure_free(2 * 64)
    os.makedirs(workdir, exist_ok=True)
    res = {}
    _make_host("h1", "10.0.0.1", "h1-eth0", "s-h1")
    sock = os.path.join(workdir, "vh0.sock")
    bridge = start_testpmd(
        tag + "br", ["net_af_packet0,iface=s-h1", f"net_vhost0,iface={sock},queues=1"], "io"
    )
    try:
        lb = start_testpmd(tag + "lb", [f"net_virtio_user0,path={sock},queues=1"], "macswap")
        try:
            res["vhost_afpacket_bridge"] = _reflected("h1", "h1-eth0")
        finally:
            res["vhost_afpacket_bridge_lb_rx_tx"] = stop_testpmd(lb)
    finally:
        stop_testpmd(bridge)
    _make_host("h2", "10.0.1.1", "h2-eth0", "lb-eth0")
    _sh(
        "ip netns add lb && ip link set lb-eth0 netns lb && ip netns exec lb ip link set lb-eth0 up"
    )
    for name, vdev in (
        ("af_packet", "net_af_packet0,iface=lb-eth0"),
        ("af_xdp", "net_af_xdp0,iface=lb-eth0,start_queue=0,queue_count=1"),
    ):
        lb = start_testpmd(tag + name, [vdev], "macswap", netns="lb")
        try:
            res[name + "_direct"] = _reflected("h2", "h2-eth0")
        finally:
            res[name + "_direct_lb_rx_tx"] = stop_testpmd(lb)
    return res


def _reflected(netns, ifname, n=20):
    """Frames (of n) that a host sends to PEER_MAC and gets back with the MACs swapped."""
    out = _run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-c",
            _REFLECT_PROBE,
            ifname,
            PEER_MAC,
            str(n),
        ],
        timeout=20,
    )
    return int(out.strip())


def _failed_start_cleans_up(workdir):
    """A vswitchd that dies at once: start() must raise and leave no ovsdb-server."""
    ovs = PrivateOVSDPDK(workdir, vswitchd="/bin/false", start_timeout=5)
    try:
        ovs.start()
    except OVSError:
        return ovs.ovsdb is None and ovs.exit_codes.get("ovsdb-server") == 0
    ovs.stop()
    return False


def testpmd_totals(text):
    """RX/TX packets of testpmd's exit report (the last, accumulated, figures)."""
    rx = re.findall(r"RX-packets:\s+(\d+)", text)
    tx = re.findall(r"TX-packets:\s+(\d+)", text)
    return (int(rx[-1]) if rx else None), (int(tx[-1]) if tx else None)


_UDP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 9999)); s.settimeout(5)
print('ready', flush=True)
n = 0
try:
    while n < int(sys.argv[1]):
        s.recv(2048); n += 1
except socket.timeout:
    pass
print(n)
"""


def _mininet_check(ovs, datagrams=5):
    """pingAll loss (%) and UDP datagrams received between two Mininet hosts on the
    bridge (UDP fails with bad checksums if TX offload were left on)."""
    from functools import partial

    from mininet.net import Mininet
    from mininet.topo import SingleSwitchTopo

    net = Mininet(
        SingleSwitchTopo(k=2),
        switch=partial(OVSDPDKSwitch, ovs=ovs),
        controller=None,
        autoSetMacs=True,
    )
    try:
        net.start()
        loss = net.pingAll(timeout=1)
        h1, h2 = net.get("h1", "h2")
        sink = h2.popen([sys.executable, "-c", _UDP_SINK, str(datagrams)], text=True)
        sink.stdout.readline()
        h1.cmd(
            sys.executable,
            "-c",
            shlex.quote(
                "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for i in range({datagrams}): s.sendto(b'x' * 100, ('{h2.IP()}', 9999))"
            ),
        )
        got = int(sink.communicate(timeout=10)[0].strip())
        return loss, got
    finally:
        net.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m testbed.ovs_selftest")
    ap.add_argument("cmd", choices=["selftest", "fallback"])
    ap.add_argument("--no-mininet", action="store_true")
    ap.add_argument("--idle-seconds", type=float, default=2.0)
    ap.add_argument("--maxsleep-off", action="store_true", help="also measure pmd-maxsleep=0")
    ap.add_argument("--workdir", default=SELFTEST_WORKDIR)
    ap.add_argument("--tag", default="vnfl", help="prefix of the DPDK file prefixes")
    ap.add_argument(
        "--timeout", type=float, default=120, help="seconds before the sandbox is killed"
    )
    args = ap.parse_args(argv)
    if not sandbox.in_sandbox():
        return sandbox.reexec_in_sandbox(timeout=args.timeout)
    sandbox.setup_inside()
    if args.cmd == "fallback":
        res = selftest_fallback(workdir=args.workdir, tag=args.tag)
    else:
        res = selftest(
            workdir=args.workdir,
            idle_seconds=args.idle_seconds,
            mininet=not args.no_mininet,
            maxsleep_off=args.maxsleep_off,
            tag=args.tag,
        )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
