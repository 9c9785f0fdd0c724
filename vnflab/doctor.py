"""``vnflab doctor``: can this machine run the labs? For each missing piece: what breaks, and the
exact command that fixes it.

Every check is a small function of an :class:`Env` (where /proc is, which programs are on PATH,
how to run a command, the user id, the CPUs we may use), so tests can show the doctor a machine
it is not running on, e.g. one whose ``/proc/meminfo`` has no huge pages, without touching the
real one.

Labs (what a failed check can block):

=========  ==========================================================================
socket     lab 1: the kernel-socket LB in Mininet (``vnflab demo --way socket``)
afpacket   lab 2: the AF_PACKET ring LB (``vnflab demo --way afpacket``)
dpdk       lab 3: the DPDK LB behind OVS-DPDK (``vnflab demo --way dpdk``)
bench      ``vnflab bench`` (per-packet cost; trafgen generator, 2 pinned cores)
notebooks  the notebooks in notebooks/ (Jupyter kernel, matplotlib)
=========  ==========================================================================

Exit status: 0 when every lab can run (warnings allowed), 1 when at least one lab cannot
(with ``--lab``, only the labs named count).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from testbed.procfs import meminfo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABS = {
    "socket": "lab 1 (kernel sockets)",
    "afpacket": "lab 2 (AF_PACKET rings)",
    "dpdk": "lab 3 (DPDK behind OVS-DPDK)",
    "bench": "vnflab bench (per-packet cost)",
    "notebooks": "the notebooks",
}
ALL_LABS = tuple(LABS)
MININET_LABS = ("socket", "afpacket", "dpdk", "bench", "notebooks")

HUGEPAGES_FIX = 256  # pages of 2 MiB: DPDK LB + OVS-DPDK + a generator, with room
HUGEPAGES_MIN_FREE = 128  # 256 MiB free: one DPDK process and OVS-DPDK's socket-mem
OVS_DPDK_BIN = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
# vdev PMDs, the role each plays, and the labs that need it
PMDS = {
    "net_virtio": ("virtio-user: how the DPDK LB plugs into OVS-DPDK's vhost-user port", ("dpdk",)),
    "net_vhost": ("vhost-user ports on the DPDK side (a DPDK generator facing the LB)", ("dpdk",)),
    "net_null": ("null ports: the binding's tests and io-forward benchmark", ()),
    "net_ring": ("ring ports: the binding's loopback tests", ()),
    "net_af_packet": ("af_packet vdev: DPDK on a veth (the slow comparison)", ()),
    "net_af_xdp": ("af_xdp vdev: DPDK on a veth through AF_XDP", ()),
    "net_tap": ("tap vdev: DPDK behind a kernel tap interface", ()),
}


@dataclass
class Env:
    """What the checks look at. The defaults are this machine; tests replace pieces."""

    proc: str = "/proc"
    euid: int = field(default_factory=os.geteuid)
    which: Callable[[str], str | None] = shutil.which
    run: Callable[..., subprocess.CompletedProcess] | None = None
    cpus: Callable[[], int] = lambda: len(os.sched_getaffinity(0))
    exists: Callable[[str], bool] = os.path.exists
    python: str = sys.executable

    def sh(self, argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess:
        if self.run is not None:
            return self.run(argv, timeout=timeout)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess(argv, 127, "", str(exc))


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" (degraded, nothing blocked), "fail"
    detail: str  # what was found
    blocks: tuple[str, ...] = ()  # labs that cannot run while this fails
    breaks: str = ""  # in words: what goes wrong without it
    fix: str = ""  # the exact command (or step) that fixes it

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _ok(name, detail):
    return Check(name, "ok", detail)


# ------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------


def check_root(env: Env) -> Check:
    if env.euid == 0:
        return _ok("root", "running as root")
    return Check(
        "root",
        "fail",
        f"running as uid {env.euid}",
        ALL_LABS,
        "network namespaces, Mininet hosts, huge pages and DPDK all need root",
        "sudo vnflab doctor   (and run the labs with sudo)",
    )


def check_netns(env: Env) -> Check:
    if not env.which("unshare"):
        return Check(
            "network namespaces",
            "fail",
            "unshare not found",
            MININET_LABS,
            "every run happens in a private network namespace (testbed.sandbox)",
            "apt-get install -y util-linux",
        )
    if env.euid != 0:
        return Check("network namespaces", "warn", "not checked (needs root)")
    r = env.sh(["unshare", "--net", "--mount", "--pid", "--fork", "true"])
    if r.returncode == 0:
        return _ok("network namespaces", "unshare --net --mount --pid works")
    return Check(
        "network namespaces",
        "fail",
        f"unshare --net failed: {_first(r.stderr)}",
        MININET_LABS,
        "no sandbox and no Mininet hosts: no lab can run",
        "use a VM, not an unprivileged container (see vm/README.md); the kernel needs "
        "CONFIG_NET_NS and CONFIG_PID_NS",
    )


def check_veth(env: Env) -> Check:
    if not env.which("ip"):
        return Check(
            "veth",
            "fail",
            "ip (iproute2) not found",
            MININET_LABS,
            "Mininet links are veth pairs made with ip(8)",
            "apt-get install -y iproute2",
        )
    if env.euid != 0:
        return Check("veth", "warn", "not checked (needs root)")
    r = env.sh(
        ["unshare", "--net", "ip", "link", "add", "vnfd0", "type", "veth", "peer", "name", "vnfd1"]
    )
    if r.returncode == 0:
        return _ok("veth", "a veth pair can be created (in a throw-away namespace)")
    return Check(
        "veth",
        "fail",
        f"ip link add type veth failed: {_first(r.stderr)}",
        MININET_LABS,
        "Mininet links are veth pairs: no topology can be built",
        "modprobe veth   (or a kernel with CONFIG_VETH=y; the lab VM has it)",
    )


def check_af_packet(env: Env) -> Check:
    if env.euid != 0:
        return Check("AF_PACKET", "warn", "not checked (needs root)")
    err = _try_socket(env, "AF_PACKET")
    if err is None:
        return _ok("AF_PACKET", "socket(AF_PACKET, SOCK_RAW) works")
    return Check(
        "AF_PACKET",
        "fail",
        f"socket(AF_PACKET) failed: {err}",
        ("afpacket", "bench"),
        "way 2 reads TPACKET_V3 rings from an AF_PACKET socket; trafgen (the bench "
        "generator) sends through one",
        "modprobe af_packet   (or CONFIG_PACKET=y)",
    )


def check_af_xdp(env: Env) -> Check:
    if env.euid != 0:
        return Check("AF_XDP", "warn", "not checked (needs root)")
    err = _try_socket(env, "AF_XDP")
    if err is None:
        return _ok("AF_XDP", "socket(AF_XDP, SOCK_RAW) works")
    return Check(
        "AF_XDP",
        "warn",
        f"socket(AF_XDP) failed: {err}",
        (),
        "DPDK's net_af_xdp vdev (an optional comparison) cannot attach to a veth; "
        "the labs themselves do not need it",
        "a kernel with CONFIG_XDP_SOCKETS=y (Debian 12 and Ubuntu 24.04 kernels have it)",
    )


def _try_socket(env: Env, family: str) -> str | None:
    """None when socket(family, SOCK_RAW) can be created, else the error (tests inject run)."""
    if env.run is not None:
        r = env.sh([env.python, "-c", f"import socket; socket.socket({_FAMILIES[family]}, 3)"])
        return None if r.returncode == 0 else _first(r.stderr) or f"exit {r.returncode}"
    try:
        socket.socket(_FAMILIES[family], socket.SOCK_RAW).close()
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


_FAMILIES = {"AF_PACKET": 17, "AF_XDP": 44}


def check_mininet(env: Env) -> Check:
    missing = [p for p in ("mnexec", "mn") if not env.which(p)]
    if missing:
        return Check(
            "Mininet",
            "fail",
            f"not found: {', '.join(missing)}",
            MININET_LABS,
            "the labs' topologies are Mininet hosts started by mnexec",
            "apt-get install -y mininet && sudo scripts/install.sh",
        )
    r = env.sh([env.python, "-c", "import mininet.net"])
    if r.returncode != 0:
        return Check(
            "Mininet",
            "fail",
            f"mnexec found, but {env.python} cannot import mininet",
            MININET_LABS,
            "vnflab drives Mininet from Python",
            f"sudo {REPO}/scripts/install.sh   (links apt's mininet package into the venv)",
        )
    return _ok("Mininet", f"mnexec at {env.which('mnexec')}; mininet importable")


def check_brctl(env: Env) -> Check:
    if env.which("brctl"):
        return _ok("bridge-utils", f"brctl at {env.which('brctl')}")
    return Check(
        "bridge-utils",
        "fail",
        "brctl not found",
        ("socket", "afpacket", "bench", "notebooks"),
        "the default topology's switch is a Linux bridge (Mininet LinuxBridge uses brctl)",
        "apt-get install -y bridge-utils",
    )


def check_ovs(env: Env) -> Check:
    missing = [
        p for p in ("ovs-vswitchd", "ovs-vsctl", "ovsdb-server", "ovsdb-tool") if not env.which(p)
    ]
    if missing:
        return Check(
            "Open vSwitch",
            "fail",
            f"not found: {', '.join(missing)}",
            ("dpdk",),
            "lab 3's switch is a private OVS instance (and mn's default switch is OVS)",
            "apt-get install -y openvswitch-switch",
        )
    return _ok("Open vSwitch", "ovs-vswitchd, ovs-vsctl, ovsdb-server, ovsdb-tool found")


def check_ovs_dpdk(env: Env) -> Check:
    if env.exists(OVS_DPDK_BIN):
        return _ok("OVS-DPDK", OVS_DPDK_BIN)
    return Check(
        "OVS-DPDK",
        "fail",
        f"{OVS_DPDK_BIN} missing",
        ("dpdk",),
        "lab 3 plugs the DPDK LB into OVS-DPDK's vhost-user port",
        "apt-get install -y openvswitch-switch-dpdk",
    )


def _dpdk_version(env: Env) -> str | None:
    if not env.which("pkg-config"):
        return None
    r = env.sh(["pkg-config", "--modversion", "libdpdk"])
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def check_dpdk_libs(env: Env) -> Check:
    if not env.which("pkg-config"):
        return Check(
            "DPDK libraries",
            "fail",
            "pkg-config not found",
            ("dpdk",),
            "the DPDK binding is compiled against pkg-config libdpdk",
            "apt-get install -y pkg-config libdpdk-dev dpdk-dev",
        )
    version = _dpdk_version(env)
    if version is None:
        return Check(
            "DPDK libraries",
            "fail",
            "pkg-config libdpdk: not found",
            ("dpdk",),
            "no DPDK: the binding cannot be built, lab 3 cannot run",
            "apt-get install -y libdpdk-dev dpdk-dev dpdk",
        )
    if not version.startswith("22.11"):
        return Check(
            "DPDK libraries",
            "warn",
            f"libdpdk {version} (vnflab is tested with 22.11)",
            (),
            "the binding may not compile or behave the same",
            "",
        )
    return _ok("DPDK libraries", f"libdpdk {version}")


def pmd_dirs(env: Env) -> list[str]:
    libdir = None
    if env.which("pkg-config"):
        r = env.sh(["pkg-config", "--variable=libdir", "libdpdk"])
        if r.returncode == 0 and r.stdout.strip():
            libdir = r.stdout.strip()
    bases = [libdir] if libdir else []
    bases += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib"]
    out = []
    for base in bases:
        out += sorted(glob.glob(os.path.join(base, "dpdk", "pmds-*")))
    return list(dict.fromkeys(out))


def check_pmds(env: Env, dirs: list[str] | None = None) -> Check:
    dirs = pmd_dirs(env) if dirs is None else dirs
    if not dirs:
        return Check(
            "DPDK vdev drivers",
            "fail",
            "no DPDK PMD directory (…/dpdk/pmds-*)",
            ("dpdk",),
            "DPDK finds its drivers there; without net_virtio lab 3 has no port",
            "apt-get install -y dpdk libdpdk-dev",
        )
    pmddir = dirs[0]
    abi = re.sub(r"\.0$", "", os.path.basename(pmddir).split("-", 1)[1])
    have, missing = [], []
    for name in PMDS:
        if glob.glob(os.path.join(pmddir, f"librte_{name}.so*")):
            have.append(name)
        else:
            missing.append(name)
    if not missing:
        return _ok("DPDK vdev drivers", f"{pmddir}: {', '.join(have)}")
    blocks = tuple(sorted({lab for m in missing for lab in PMDS[m][1]}))
    pkgs = " ".join(f"librte-{m.replace('_', '-')}{abi}" for m in missing)
    return Check(
        "DPDK vdev drivers",
        "fail" if blocks else "warn",
        f"{pmddir}: missing {', '.join(missing)}",
        blocks,
        "; ".join(f"{m}: {PMDS[m][0]}" for m in missing),
        f"apt-get install -y {pkgs}",
    )


def check_binding(env: Env) -> Check:
    code = (
        "import vnf.dpdk as d, sys; sys.exit(0 if d.available() else "
        "(print(d.IMPORT_ERROR, file=sys.stderr) or 3))"
    )
    r = env.sh([env.python, "-c", code], timeout=30)
    if r.returncode == 0:
        return _ok("vnflab DPDK binding", "vnf.dpdk._dpdk imports")
    why = _first(r.stderr) or f"exit {r.returncode}"
    fix = (
        f"cd {REPO} && {env.python} setup.py build_ext --inplace"
        if _dpdk_version(env)
        else "apt-get install -y libdpdk-dev && sudo scripts/install.sh"
    )
    return Check(
        "vnflab DPDK binding",
        "fail",
        f"vnf.dpdk binding not importable: {why}",
        ("dpdk",),
        "way 3 talks to DPDK through vnf.dpdk._dpdk (compiled against libdpdk)",
        fix,
    )


def check_hugepages(env: Env) -> Check:
    mi = meminfo(env.proc)
    if "HugePages_Total" not in mi:
        return Check(
            "huge pages",
            "fail",
            f"no HugePages_* in {env.proc}/meminfo",
            ("dpdk",),
            "DPDK takes packet memory from huge pages",
            "a kernel with CONFIG_HUGETLBFS=y",
        )
    total, free, size = (
        mi["HugePages_Total"],
        mi.get("HugePages_Free", 0),
        mi.get("Hugepagesize", 2048),
    )
    detail = f"{total} reserved, {free} free, {size} kB each"
    persist = (
        f"echo vm.nr_hugepages={HUGEPAGES_FIX} > /etc/sysctl.d/80-vnflab-hugepages.conf "
        f"(keeps it across reboots)"
    )
    if total == 0:
        return Check(
            "huge pages",
            "fail",
            "none reserved (" + detail + ")",
            ("dpdk",),
            "DPDK (the LB, OVS-DPDK, testpmd) cannot allocate packet memory: EAL fails "
            "with 'Cannot get hugepage information' or 'not enough memory'",
            f"echo {HUGEPAGES_FIX} > /proc/sys/vm/nr_hugepages   ; then " + persist,
        )
    if free < HUGEPAGES_MIN_FREE:
        want = total - free + HUGEPAGES_FIX
        return Check(
            "huge pages",
            "fail",
            f"only {free} free ({detail}); lab 3 needs {HUGEPAGES_MIN_FREE} free",
            ("dpdk",),
            "OVS-DPDK and the DPDK LB together need about "
            f"{HUGEPAGES_MIN_FREE * size // 1024} MiB; other processes hold the rest",
            f"echo {want} > /proc/sys/vm/nr_hugepages   (or stop the DPDK process holding them)",
        )
    return _ok("huge pages", detail)


def check_memory(env: Env) -> Check:
    mi = meminfo(env.proc)
    avail = mi.get("MemAvailable")
    if avail is None:
        return Check("free memory", "warn", f"MemAvailable not in {env.proc}/meminfo")
    mib = avail // 1024
    if mib < 512:
        return Check(
            "free memory",
            "fail",
            f"{mib} MiB available",
            MININET_LABS,
            "a topology with its servers, the LB and the traffic driver needs ~500 MiB",
            "give the VM 4 GiB of RAM (vm/README.md), or stop other programs",
        )
    if mib < 1536:
        return Check(
            "free memory",
            "warn",
            f"{mib} MiB available (2 GiB or more recommended)",
            (),
            "the demo may swap or be killed by the OOM killer with all ways at once",
            "give the VM 4 GiB of RAM (vm/README.md)",
        )
    return _ok("free memory", f"{mib} MiB available")


def check_cores(env: Env) -> Check:
    n = env.cpus()
    if n >= 2:
        return _ok("cores", f"{n} usable")
    return Check(
        "cores",
        "fail",
        f"{n} usable core",
        ("bench", "notebooks"),
        "vnflab bench pins the generator to CPU 0 and the LB to CPU 1; with one core "
        "the cost numbers would measure the generator too",
        "give the VM 2 or more cores",
    )


def check_trafgen(env: Env) -> Check:
    if env.which("trafgen"):
        return _ok("trafgen", env.which("trafgen"))
    return Check(
        "trafgen",
        "fail",
        "trafgen not found",
        ("bench", "notebooks"),
        "vnflab bench's packet generator is trafgen (netsniff-ng)",
        "apt-get install -y netsniff-ng",
    )


def check_jupyter(env: Env) -> Check:
    code = "import matplotlib, nbclient, nbformat, ipykernel"
    r = env.sh([env.python, "-c", code], timeout=30)
    if r.returncode == 0:
        return _ok("Jupyter", "matplotlib, nbclient, nbformat, ipykernel importable")
    return Check(
        "Jupyter",
        "fail",
        f"{_first(r.stderr)}",
        ("notebooks",),
        "the notebooks need a Jupyter kernel and matplotlib",
        f"{env.python} -m pip install -e '{REPO}[test]' jupyterlab   (or sudo scripts/install.sh)",
    )


CHECKS = (
    check_root,
    check_netns,
    check_veth,
    check_af_packet,
    check_af_xdp,
    check_mininet,
    check_brctl,
    check_ovs,
    check_ovs_dpdk,
    check_dpdk_libs,
    check_pmds,
    check_binding,
    check_hugepages,
    check_memory,
    check_cores,
    check_trafgen,
    check_jupyter,
)


def _first(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


# ------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------


def diagnose(env: Env | None = None, checks=CHECKS) -> dict:
    env = env or Env()
    results = []
    for fn in checks:
        try:
            results.append(fn(env))
        except Exception as exc:  # a broken check must not hide the others
            results.append(
                Check(
                    fn.__name__.removeprefix("check_"),
                    "warn",
                    f"the check itself failed: {type(exc).__name__}: {exc}",
                )
            )
    labs = {}
    for lab, title in LABS.items():
        blockers = [c.name for c in results if c.status == "fail" and lab in c.blocks]
        labs[lab] = {"title": title, "ok": not blockers, "blocked_by": blockers}
    return {
        "ok": all(v["ok"] for v in labs.values()),
        "labs": labs,
        "checks": [dict(asdict(c), blocks=list(c.blocks)) for c in results],
    }


def render(report: dict) -> str:
    mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    width = max(len(c["name"]) for c in report["checks"])
    lines = ["vnflab doctor", ""]
    for c in report["checks"]:
        lines.append(f"  [{mark[c['status']]}] {c['name'].ljust(width)}  {c['detail']}")
    problems = [c for c in report["checks"] if c["status"] != "ok" and (c["fix"] or c["breaks"])]
    if problems:
        lines += ["", "What to do:"]
        for c in problems:
            lines.append(f"  * {c['name']}: {c['detail']}")
            if c["breaks"]:
                blocked = ", ".join(LABS[lab] for lab in c["blocks"])
                lines.append(
                    f"      breaks: {c['breaks']}" + (f" [blocks {blocked}]" if blocked else "")
                )
            if c["fix"]:
                lines.append(f"      fix:    {c['fix']}")
    lines += ["", "Labs:"]
    for lab, v in report["labs"].items():
        state = "can run" if v["ok"] else "CANNOT run (" + ", ".join(v["blocked_by"]) + ")"
        lines.append(f"  {lab.ljust(10)} {v['title']}: {state}")
    return "\n".join(lines)


def exit_code(report: dict, labs: list[str] | None = None) -> int:
    wanted = labs or list(report["labs"])
    return 0 if all(report["labs"][lab]["ok"] for lab in wanted) else 1


def cmd_doctor(args) -> int:
    env = Env(proc=args.proc_root) if args.proc_root else Env()
    report = diagnose(env)
    labs = [lab.strip() for lab in args.lab.split(",")] if args.lab else None
    for lab in labs or []:
        if lab not in LABS:
            print(f"vnflab doctor: unknown lab {lab!r} (one of {', '.join(LABS)})", file=sys.stderr)
            return 2
    if args.json:
        if args.json == "-":
            json.dump(report, sys.stdout, indent=1)
            print()
        else:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    if args.json != "-":
        print(render(report))
    return exit_code(report, labs)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check this machine for every lab: what is missing, "
        "what breaks, the command that fixes it",
    )
    p.add_argument("--json", metavar="PATH", help="write the report as JSON ('-' for stdout only)")
    p.add_argument(
        "--lab",
        metavar="LAB[,LAB]",
        help=f"only these labs decide the exit code ({', '.join(LABS)})",
    )
    p.add_argument("--proc-root", help=argparse.SUPPRESS)  # tests: read meminfo from elsewhere
    p.set_defaults(func=cmd_doctor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vnflab")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["doctor", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
