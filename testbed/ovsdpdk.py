"""A private Open vSwitch with DPDK, usable as a Mininet switch.

The DPDK way plugs the load balancer into the network the way a VNF in a VM is
plugged into OVS-DPDK: the LB's ``net_virtio_user`` port talks to a vhost-user
port of an ``ovs-vswitchd`` built with DPDK, and Mininet hosts hang off the same
userspace (``netdev``) bridge through their veths.

``PrivateOVSDPDK`` starts its own ``ovsdb-server`` and ``ovs-vswitchd-dpdk`` with
their own database, sockets, pid files and logs in ``workdir``; it never talks
to the system Open vSwitch.  With ``dpdk=False`` it runs the plain
``ovs-vswitchd`` instead (userspace bridges with no DPDK ports, e.g. the ``sdn``
scenario: no ``dpdk-init``, no wait for the EAL, no huge pages).  Run it inside a
sandbox (new net + pid + mount namespaces with a private hugetlbfs and private
run dirs: ``testbed.sandbox``) so
that bridges, taps, huge-page files and DPDK runtime dirs disappear with the
namespace, however the run ends.  See docs/ovs-dpdk.md.

    with PrivateOVSDPDK("/var/run/openvswitch/vnflab") as ovs:
        ovs.add_bridge("br0")
        ovs.add_port("br0", "s1-eth1")                       # a veth end
        ovs.add_vhost_client_port("br0", "vhu0", "/var/run/openvswitch/vnflab/vhu0.sock")
        ovs.ofctl("add-flow", "br0", "in_port=s1-eth1,actions=output:vhu0")

    net = Mininet(topo, switch=partial(OVSDPDKSwitch, ovs=ovs), controller=None)

``python -m testbed.ovs_selftest selftest`` runs the end-to-end check (veth ping
over the netdev bridge, frames reflected by ``dpdk-testpmd`` behind a vhost-user
port, a Mininet network on the bridge) inside a sandbox and prints the measurements.
"""

import itertools
import os
import re
import shlex
import subprocess
import time

from mininet.node import Switch

from testbed.procfs import process_cpu_seconds, thread_ids

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OVS_VSWITCHD_DPDK = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
OVS_VSWITCHD_PLAIN = "/usr/lib/openvswitch-switch/ovs-vswitchd"  # the build without DPDK

_instance_counter = itertools.count()


class OVSError(RuntimeError):
    """An OVS command failed, or the daemons did not come up."""


def _run(argv, env=None, timeout=30, check=True):
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise OVSError(
            f"{shlex.join(argv)}: exit {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


class PrivateOVSDPDK:
    """A private ovsdb-server + ovs-vswitchd-dpdk pair living in ``workdir``.

    dpdk=False: the plain ovs-vswitchd; the DPDK settings below are then unused, and start()
    does not wait for DPDK to initialise (the plain build never does).
    log_dir: where the daemons' logs go (default ``workdir``).
    socket_mem: MiB of huge pages for OVS (``dpdk-socket-mem``).
    pmd_cpu_mask: cores of the poll-mode threads.  pmd_maxsleep (µs) lets an idle PMD
    thread sleep (OVS >= 3.1), so it costs ~1 % of a core instead of a whole core.
    lcore_mask: ``dpdk-lcore-mask`` (non-PMD DPDK threads), or None to leave unset.
    file_prefix: DPDK ``--file-prefix`` (unique per process using huge pages).
    """

    def __init__(
        self,
        workdir,
        socket_mem=128,
        pmd_cpu_mask="0x2",
        lcore_mask=None,
        file_prefix=None,
        pmd_maxsleep=1000,
        single_file_segments=False,
        huge_dir=None,
        extra_eal=(),
        vswitchd=None,
        start_timeout=30,
        dpdk=True,
        log_dir=None,
    ):
        self.workdir = os.path.abspath(workdir)
        self.dpdk = bool(dpdk)
        self.log_dir = os.path.abspath(log_dir or workdir)
        self.socket_mem = int(socket_mem)
        self.pmd_cpu_mask = pmd_cpu_mask
        self.lcore_mask = lcore_mask
        self.file_prefix = file_prefix or f"vnfovs{os.getpid()}_{next(_instance_counter)}"
        self.pmd_maxsleep = pmd_maxsleep
        self.single_file_segments = single_file_segments
        self.huge_dir = huge_dir
        self.extra_eal = list(extra_eal)
        if vswitchd is None:
            vswitchd = (
                OVS_VSWITCHD_DPDK
                if self.dpdk
                else (OVS_VSWITCHD_PLAIN if os.path.exists(OVS_VSWITCHD_PLAIN) else "ovs-vswitchd")
            )
        self.vswitchd_bin = vswitchd
        self.start_timeout = start_timeout
        self.db_path = os.path.join(self.workdir, "conf.db")
        self.db_sock = os.path.join(self.workdir, "db.sock")
        self.db = "unix:" + self.db_sock
        self.env = dict(
            os.environ,
            OVS_RUNDIR=self.workdir,
            OVS_DBDIR=self.workdir,
            OVS_LOGDIR=self.workdir,
            OVS_SYSCONFDIR=self.workdir,
            OVS_PKGDATADIR=os.path.dirname(OVS_SCHEMA),
        )
        self.ovsdb = None
        self.vswitchd = None
        self.startup_seconds = None
        self.exit_codes = {}
        if len(os.path.join(self.workdir, "ovs-vswitchd.ctl")) > 100:
            raise ValueError(f"workdir path too long for unix sockets: {self.workdir}")

    # -- life cycle ---------------------------------------------------------------
    def dpdk_extra(self):
        args = ["--no-pci", "--file-prefix=" + self.file_prefix]
        if self.single_file_segments:
            args.append("--single-file-segments")
        if self.huge_dir:
            args.append("--huge-dir=" + self.huge_dir)
        return " ".join(args + self.extra_eal)

    def other_config(self):
        """The Open_vSwitch other_config this instance starts with."""
        if not self.dpdk:
            return {}
        cfg = {
            "dpdk-init": "true",
            "dpdk-extra": self.dpdk_extra(),
            "dpdk-socket-mem": str(self.socket_mem),
            "pmd-cpu-mask": self.pmd_cpu_mask,
        }
        if self.pmd_maxsleep is not None:
            cfg["pmd-maxsleep"] = str(self.pmd_maxsleep)
        if self.lcore_mask:
            cfg["dpdk-lcore-mask"] = self.lcore_mask
        return cfg

    def start(self):
        if self.vswitchd is not None:
            return self
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        t0 = time.monotonic()
        try:
            if os.path.exists(self.db_path):
                os.unlink(self.db_path)
            _run(["ovsdb-tool", "create", self.db_path, OVS_SCHEMA], env=self.env)
            self.ovsdb = self._spawn(
                "ovsdb-server",
                [
                    "ovsdb-server",
                    self.db_path,
                    "--remote=punix:" + self.db_sock,
                    "--pidfile=" + self._p("ovsdb-server.pid"),
                    "--unixctl=" + self._p("ovsdb-server.ctl"),
                ],
            )
            self._wait_for(lambda: os.path.exists(self.db_sock), self.ovsdb, "ovsdb-server socket")
            sets = ['other_config:{}="{}"'.format(*kv) for kv in self.other_config().items()]
            self.vsctl(
                "--no-wait", "init", *(["--", "set", "Open_vSwitch", ".", *sets] if sets else [])
            )
            self.vswitchd = self._spawn(
                "ovs-vswitchd",
                [
                    self.vswitchd_bin,
                    self.db,
                    "--pidfile=" + self._p("ovs-vswitchd.pid"),
                    "--unixctl=" + self._p("ovs-vswitchd.ctl"),
                ],
            )
            # dpdk_initialized turns true once the EAL is up; a plain vsctl (no --no-wait)
            # then returns only after vswitchd has applied the configuration.
            if self.dpdk:
                self._wait_for(
                    lambda: (
                        self.vsctl(
                            "--no-wait", "get", "Open_vSwitch", ".", "dpdk_initialized"
                        ).strip()
                        == "true"
                    ),
                    self.vswitchd,
                    "DPDK initialisation",
                    self.start_timeout,
                )
            self.vsctl(
                f"--timeout={self.start_timeout}",
                "set",
                "Open_vSwitch",
                ".",
                f"external_ids:vnflab={self.file_prefix}",
                timeout=self.start_timeout + 5,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        self._raise_priority()
        return self

    SWITCH_NICE = -10

    def _raise_priority(self):
        """The switch is the network: on 2 cores its PMD thread shares a core with the Mininet
        clients, servers and traffic drivers, and at equal priority those Python processes
        starve it (frames dropped at its ports before any LB sees them: seen as whole flows
        missing in gradings). Renice every ovs-vswitchd thread; PMD threads created later
        inherit the nice value of the thread that creates them."""
        try:
            tids = thread_ids(self.vswitchd.pid)
        except OSError:
            return
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, self.SWITCH_NICE)
            except OSError:
                pass

    def _p(self, name):
        return os.path.join(self.workdir, name)

    def _spawn(self, name, argv):
        log = os.path.join(self.log_dir, name + ".log")
        argv = argv + ["--log-file=" + log, "-vconsole:off", "-vfile:info"]
        return subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_for(self, ready, proc, what, timeout=10):
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise OVSError(f"{proc.args[0]} exited ({proc.returncode}) before {what} was ready")
            if time.monotonic() > deadline:
                raise OVSError("timed out waiting for " + what)
            time.sleep(0.05)

    def stop(self):
        """Ask both daemons to exit, kill them if they do not; safe to call twice.
        ``exit_codes`` then holds their exit statuses (0: graceful, -9: killed)."""
        for name, proc, args in (
            ("ovs-vswitchd", self.vswitchd, ["exit", "--cleanup"]),
            ("ovsdb-server", self.ovsdb, ["exit"]),
        ):
            if proc is None:
                continue
            if proc.poll() is None:
                try:
                    _run(
                        ["ovs-appctl", "-t", self._p(name + ".ctl"), "--timeout=5"] + args,
                        env=self.env,
                        timeout=8,
                        check=False,
                    )
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.exit_codes[name] = proc.returncode
        self.vswitchd = self.ovsdb = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self):
        return self.vswitchd is not None and self.vswitchd.poll() is None

    # -- commands -----------------------------------------------------------------
    def vsctl(self, *args, timeout=30):
        """Run ``ovs-vsctl --db=unix:WORKDIR/db.sock ARGS`` and return its stdout."""
        return _run(["ovs-vsctl", "--db=" + self.db] + list(args), env=self.env, timeout=timeout)

    def ofctl(self, *args, timeout=30):
        """Run ``ovs-ofctl ARGS``; a bridge name resolves to WORKDIR/BRIDGE.mgmt."""
        return _run(["ovs-ofctl"] + list(args), env=self.env, timeout=timeout)

    def appctl(self, *args, timeout=30):
        """Run ``ovs-appctl -t WORKDIR/ovs-vswitchd.ctl ARGS``."""
        return _run(
            ["ovs-appctl", "-t", self._p("ovs-vswitchd.ctl")] + list(args),
            env=self.env,
            timeout=timeout,
        )

    def add_bridge(self, name, dpid=None, fail_mode=None):
        """A userspace (``datapath_type=netdev``) bridge."""
        args = ["--may-exist", "add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev"]
        if dpid:
            args.append(f"other_config:datapath-id={dpid}")
        if fail_mode:
            args.append(f"fail_mode={fail_mode}")
        self.vsctl(*args)

    def del_bridge(self, name):
        self.vsctl("--if-exists", "del-br", name)

    def add_port(self, bridge, ifname, ofport=None):
        """A kernel interface (e.g. a veth end); the netdev datapath reads it through
        AF_PACKET.  Remember ``ethtool -K <peer> tx off`` on the sending side."""
        self._add(bridge, ifname, [], ofport)

    def add_vhost_client_port(self, bridge, name, socket_path, ofport=None):
        """A ``dpdkvhostuserclient`` port: OVS connects (and reconnects) as the vhost-user
        client to ``socket_path``, where the VNF's virtio-user listens (``server=1``)."""
        self._add(
            bridge,
            name,
            ["type=dpdkvhostuserclient", f"options:vhost-server-path={socket_path}"],
            ofport,
        )

    def _add(self, bridge, name, settings, ofport):
        if ofport is not None:
            settings = settings + [f"ofport_request={ofport}"]
        args = ["--may-exist", "add-port", bridge, name]
        if settings:
            args += ["--", "set", "Interface", name] + settings
        self.vsctl(*args)
        err = self.vsctl("--if-exists", "get", "Interface", name, "error").strip()
        if err and err != "[]":
            raise OVSError(f"port {name}: {err}")

    def del_port(self, bridge, name):
        self.vsctl("--if-exists", "del-port", bridge, name)

    def ofport(self, name):
        return int(self.vsctl("get", "Interface", name, "ofport"))

    def port_stats(self, bridge, name):
        """Live OpenFlow port counters: {"rx_pkts": .., "tx_pkts": .., "rx_drop": ..}."""
        out = self.ofctl("dump-ports", bridge, name)
        stats = {}
        for direction, rest in re.findall(r"\b(rx|tx) (pkts=[^\n]*)", out):
            for key, val in re.findall(r"(\w+)=(\d+)", rest):
                stats[f"{direction}_{key}"] = int(val)
        return stats

    def cpu_seconds(self):
        """CPU time ovs-vswitchd has used so far (all its threads)."""
        return process_cpu_seconds(self.vswitchd.pid)

    def processing_cycles(self) -> int:
        """TSC cycles OVS's datapath threads (PMDs and the main thread) have spent on packets so
        far: the ``processing cycles`` of ``dpif-netdev/pmd-stats-show``. A PMD polls, so its
        CPU time says little of its load; these cycles, per TSC Hz and wall second, do."""
        out = self.appctl("dpif-netdev/pmd-stats-show")
        return sum(int(n) for n in re.findall(r"processing cycles: (\d+)", out))

    def log(self, name="ovs-vswitchd"):
        try:
            with open(os.path.join(self.log_dir, name + ".log")) as f:
                return f.read()
        except OSError:
            return ""


class OVSDPDKSwitch(Switch):
    """A Mininet switch that is a bridge of a running ``PrivateOVSDPDK``.

        net = Mininet(topo, switch=partial(OVSDPDKSwitch, ovs=ovs), controller=None)

    With no controller the bridge is a learning switch (fail_mode standalone); with
    controllers it is ``secure`` unless fail_mode says otherwise.  The switch's veth
    ends join the bridge with OpenFlow port numbers as Mininet numbered them, and
    TX checksum offload is turned off on the hosts' ends (the netdev datapath
    forwards frames as they are, so a partial checksum would arrive as a bad one).
    """

    def __init__(self, name, ovs=None, fail_mode=None, **params):
        if ovs is None:
            raise ValueError("OVSDPDKSwitch needs ovs=PrivateOVSDPDK(...)")
        Switch.__init__(self, name, **params)
        self.ovs = ovs
        self.fail_mode = fail_mode

    def start(self, controllers):
        mode = self.fail_mode or ("secure" if controllers else "standalone")
        self.ovs.del_bridge(self.name)
        self.ovs.add_bridge(self.name, dpid=self.dpid, fail_mode=mode)
        for intf in self.intfList():
            port = self.ports.get(intf)
            if not port or intf.name == "lo":
                continue
            self.ovs.add_port(self.name, intf.name, ofport=port)
            link = intf.link
            if link is not None:
                peer = link.intf2 if link.intf1 is intf else link.intf1
                peer.node.cmd(f"ethtool -K {peer.name} tx off")
        if controllers:
            targets = [f"{c.protocol}:{c.IP()}:{c.port}" for c in controllers]
            self.ovs.vsctl("set-controller", self.name, *targets)

    def connected(self):
        return self.ovs.running

    def add_vhost_client_port(self, name, socket_path, ofport=None):
        """Plug a DPDK VNF (virtio-user, server=1 on ``socket_path``) into this switch."""
        self.ovs.add_vhost_client_port(self.name, name, socket_path, ofport=ofport)

    def stop(self, deleteIntfs=True):
        if self.ovs.running:
            self.ovs.del_bridge(self.name)
        Switch.stop(self, deleteIntfs)
