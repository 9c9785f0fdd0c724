"""Buggy submissions for the grader's self-test, made from the reference files by small patches.

Each fixture is the reference solution (the instructor files) with one realistic bug, so the
fixtures stay in step with the reference. ``build(name, dest)`` writes the submission directory
(the lab's student files, as a student hands them in); ``FIXTURES`` says which lab each is for
and which tests it must lose.
"""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

LAB_FILES = {
    1: {"flowtable.py": "vnf/flowtable.py", "socket_lb.py": "vnf/ways/socket_lb.py"},
    2: {"packet.py": "vnf/packet.py", "afpacket_lb.py": "vnf/ways/afpacket_lb.py"},
    3: {"dpdk_lb.py": "vnf/ways/dpdk_lb.py"},
}


def _hostile(body: str) -> list[tuple[str, str]]:
    """Patches that run ``body`` (a function body) first thing in the socket LB's setup()."""
    return [
        (
            "    def setup(self) -> None:\n        cfg = self.config\n",
            "    def setup(self) -> None:\n        hostile()\n        cfg = self.config\n",
        ),
        (
            "class SocketLB(LBProgram):",
            f"def hostile():\n    import os, time\n    REPO = {REPO!r}\n{body}\n\n"
            "class SocketLB(LBProgram):",
        ),
    ]


# name -> (lab, {file: [(old, new), ...]})
FIXTURES = {
    # Round-robin on every datagram: no flow table at all.
    "rr": (
        1,
        {
            "socket_lb.py": [
                (
                    "backend = self.lb.backend_for(flow, now)  # THE decision, shared by all ways",
                    "backend = self.config.backends[self.count['udp_from_clients'] % len(self.config.backends)]",
                )
            ]
        },
    ),
    # The key drops the protocol: a TCP flow finds the UDP flow from the same port.
    "protokey": (
        1,
        {
            "flowtable.py": [
                (
                    "        entry = self._entries.get(key)\n",
                    "        key = tuple(key)[:4]             # BUG: (src, dst, sport, dport): no protocol\n"
                    "        entry = self._entries.get(key)\n",
                ),
                (
                    "        entries = self._entries\n        if key in entries:",
                    "        key = tuple(key)[:4]             # BUG: no protocol\n"
                    "        entries = self._entries\n        if key in entries:",
                ),
            ]
        },
    ),
    # Never evicts: the table grows with every flow, past its capacity.
    "noevict": (
        1,
        {
            "flowtable.py": [
                (
                    "        if len(entries) >= self.capacity:",
                    "        if False:                        # BUG: never evicts",
                ),
            ]
        },
    ),
    # Spins forever on the first datagram (and ignores SIGTERM's flag).
    "hang": (
        1,
        {
            "socket_lb.py": [
                (
                    '            self.count["udp_from_clients"] += 1\n',
                    '            self.count["udp_from_clients"] += 1\n'
                    "            while True:                   # BUG: an endless loop\n"
                    "                pass\n",
                ),
            ]
        },
    ),
    # --- hostile submissions (issue 12): the reference, plus one attack at the LB's start ---
    # A double-forked daemon that outlives the LB and signals every process it can reach.
    "daemon": (
        1,
        {
            "socket_lb.py": _hostile("""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            import ctypes, signal
            ctypes.CDLL(None).prctl(15, b"vnfdaemon86399")     # PR_SET_NAME: findable
            while True:
                for pid in os.listdir("/proc"):
                    if pid.isdigit() and int(pid) != os.getpid():
                        for sig in (signal.SIGSTOP, signal.SIGKILL):
                            try:
                                os.kill(int(pid), sig)
                            except OSError:
                                pass
                time.sleep(0.05)
        os._exit(0)
    os.wait()
""")
        },
    ),
    # 6 GB in twelve processes holding memfds (and /dev/shm, /tmp): past any per-process limit.
    "memhog": (
        1,
        {
            "socket_lb.py": _hostile("""
    for i in range(12):
        if os.fork() == 0:
            chunk = b"x" * (1 << 20)
            fds = [os.memfd_create(f"hog{i}-{k}") for k in range(8)]
            for fd in fds:
                for _ in range(60):
                    os.write(fd, chunk)
            for d in ("/dev/shm", "/tmp"):
                try:
                    with open(f"{d}/hog{i}", "wb") as f:
                        for _ in range(60):
                            f.write(chunk)
                except OSError:
                    pass
            time.sleep(3600)
""")
        },
    ),
    # A noisy neighbour, correct otherwise: four processes that spin and stream 32 MiB each
    # (past the L2 cache) for as long as the LB runs. Not in the CI corpus (its effect is a
    # measurement, not a verdict): docs/grading.md, "Gradings side by side", grades it beside
    # a reference copy with grade-all --jobs 2 and compares the reference's cost ratio.
    "cpuhog": (
        1,
        {
            "socket_lb.py": _hostile("""
    for i in range(4):
        if os.fork() == 0:
            block = bytearray(32 << 20)
            while True:
                for k in range(0, len(block), 64):
                    block[k] = (block[k] + 1) & 0xFF
""")
        },
    ),
    # A fork bomb (each process forks until it cannot, then tries again).
    "forkbomb": (
        1,
        {
            "socket_lb.py": _hostile("""
    if os.fork() == 0:
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
""")
        },
    ),
    # Looks for what it must not see; prints a marker only when a read succeeds.
    "snoop": (
        1,
        {
            "socket_lb.py": _hostile("""
    import sys
    def leak(path):
        # What it may read: the venv (its python links to /usr), its own overlay and run dir
        # (/vnflab in its jail).
        mine = (sys.prefix + "/", "/vnflab/", "/usr/")
        if path.startswith(mine) or os.path.realpath(path).startswith(mine):
            return
        try:
            with open(path, "rb") as f:
                f.read(64)
            print("VNFLAB" + "-LEAK", path, flush=True)
        except OSError:
            pass
    print("VNFLAB-SNOOP-RAN", flush=True)
    for p in (REPO + "/labs/hidden", REPO + "/grader", REPO + "/labs/lab1/hidden",
              "/var/lib/vnflab", "/root", "/home", "/work", os.getcwd() + "/../ref",
              os.getcwd() + "/../../ref", os.getcwd() + "/../.."):
        for root, dirs, files in os.walk(p):
            for name in files:
                leak(os.path.join(root, name))
    for root, dirs, files in os.walk("/"):
        if root.startswith(("/proc", "/sys", "/usr", "/dev")):
            dirs[:] = []
            continue
        for name in files:
            if name in ("plan.json", "facts.json", "grading.lock") or "hidden" in root \
                    or "/ref/" in root + "/" or name.endswith(".toml"):
                leak(os.path.join(root, name))
""")
        },
    ),
    # Lab 2: a parser that reads the IPv4 header without checking it is there (struct.error on
    # any frame shorter than Ethernet + 20 bytes, e.g. a 20-byte frame), called from a plain-Python
    # loop over the ring's frames: the LB dies on the first such frame.
    "crash20": (
        2,
        {
            "packet.py": [
                (
                    "    if n - l3 < IPV4_MIN_HEADER_LEN:\n        return _DROPPED[DropReason.TRUNCATED_IP]\n",
                    "",
                )
            ],
            "afpacket_lb.py": [
                (
                    "from vnf.afpacket.ring import DROP\n",
                    "from vnf.afpacket.ring import DROP\nfrom vnf.packet import parse_frame\n",
                ),
                (
                    "for i, flow in enumerate(batch.flows()):",
                    "for i, flow in enumerate(parse_frame(f).flow for f in batch.frames()):",
                ),
            ],
        },
    ),
    # Lab 3: per-packet round robin in forward_vector: whatever the flow cache decided, each
    # packet of the burst goes to the next backend (flows split across backends).
    "rrvec": (
        3,
        {
            "dpdk_lb.py": [
                (
                    "\n        burst.set_macs(choice, self.mac_table, self.src_mac)",
                    "\n        import numpy as np\n"
                    "        nb = len(self.mac_table) // 6   # BUG: per-packet round robin\n"
                    "        rr = (np.arange(len(choice), dtype=np.int32) + self.bursts[txq]) % nb\n"
                    "        choice = np.where(choice >= 0, rr, -1).astype(np.int32)\n"
                    "        burst.set_macs(choice, self.mac_table, self.src_mac)",
                )
            ]
        },
    ),
    # Lab 3: the reference, but its stats claim a TSC four times faster than the machine's:
    # its busy cycles would read as a quarter of the time (issue 12: self-reported counters).
    "busyhz": (
        3,
        {
            "dpdk_lb.py": [
                (
                    "    # --- the hot loop ---",
                    "    def extra_stats(self) -> dict:\n"
                    "        out = super().extra_stats()\n"
                    '        if out.get("busy"):                # FORGED: a 4x faster clock\n'
                    '            out["busy"]["tsc_hz"] *= 4\n'
                    "        return out\n\n"
                    "    # --- the hot loop ---",
                )
            ]
        },
    ),
    # Lab 3: the reference in the slow style (Python per packet, about 7x the vector style's
    # cost), whose stats report a tenth of its busy cycles: honest clock, too few cycles. Only
    # behaviour can catch it: it holds the generator back, so it must be busy all the time.
    "busylow": (
        3,
        {
            "dpdk_lb.py": [
                (
                    'forward = self.forward_vector if self.style == "vector" else '
                    "self.forward_perpacket",
                    "forward = self.forward_perpacket  # SLOW: Python for every packet",
                ),
                (
                    "    # --- the hot loop ---",
                    "    def extra_stats(self) -> dict:\n"
                    "        out = super().extra_stats()\n"
                    '        if out.get("busy"):                # FORGED: a tenth of the cycles\n'
                    '            out["busy"]["cycles"] //= 10\n'
                    "        return out\n\n"
                    "    # --- the hot loop ---",
                ),
            ]
        },
    ),
}


def build(name: str, dest: str) -> str:
    lab, patches = FIXTURES[name]
    os.makedirs(dest, exist_ok=True)
    for student, ref in LAB_FILES[lab].items():
        with open(os.path.join(REPO, ref)) as f:
            text = f.read()
        for old, new in patches.get(student, []):
            if text.count(old) != 1:
                raise AssertionError(
                    f"fixture {name}: {old!r} occurs {text.count(old)} times in {ref}"
                )
            text = text.replace(old, new)
        with open(os.path.join(dest, student), "w") as f:
            f.write(text)
    return dest
