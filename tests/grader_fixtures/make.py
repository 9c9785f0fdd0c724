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

LAB_FILES = {1: {"flowtable.py": "vnf/flowtable.py", "socket_lb.py": "vnf/ways/socket_lb.py"},
             2: {"packet.py": "vnf/packet.py", "afpacket_lb.py": "vnf/ways/afpacket_lb.py"},
             3: {"dpdk_lb.py": "vnf/ways/dpdk_lb.py"}}

# name -> (lab, {file: [(old, new), ...]})
FIXTURES = {
    # Round-robin on every datagram: no flow table at all.
    "rr": (1, {"socket_lb.py": [(
        "backend = self.lb.backend_for(flow, now)            # THE decision, shared by all ways",
        "backend = self.config.backends[self.count['udp_from_clients'] % len(self.config.backends)]"
    )]}),
    # The key drops the protocol: a TCP flow finds the UDP flow from the same port.
    "protokey": (1, {"flowtable.py": [
        ("        entry = self._entries.get(key)\n",
         "        key = tuple(key)[:4]             # BUG: (src, dst, sport, dport): no protocol\n"
         "        entry = self._entries.get(key)\n"),
        ("        entries = self._entries\n        if key in entries:",
         "        key = tuple(key)[:4]             # BUG: no protocol\n"
         "        entries = self._entries\n        if key in entries:"),
    ]}),
    # Never evicts: the table grows with every flow, past its capacity.
    "noevict": (1, {"flowtable.py": [
        ("        if len(entries) >= self.capacity:", "        if False:                        # BUG: never evicts"),
    ]}),
    # Spins forever on the first datagram (and ignores SIGTERM's flag).
    "hang": (1, {"socket_lb.py": [
        ('            self.count["udp_from_clients"] += 1\n',
         '            self.count["udp_from_clients"] += 1\n'
         '            while True:                   # BUG: an endless loop\n'
         '                pass\n'),
    ]}),
    # The reference, plus an attempt to write a perfect results.json wherever it can.
    "tamper": (1, {"socket_lb.py": [
        ("    def setup(self) -> None:\n        cfg = self.config\n",
         "    def setup(self) -> None:\n        tamper()\n        cfg = self.config\n"),
        ("class SocketLB(LBProgram):",
         "def tamper():\n"
         "    import json, os\n"
         "    fake = json.dumps({'score': 1000, 'tests': [], 'output': 'TAMPERED'})\n"
         "    places = ['/autograder/results', os.getcwd(), '/tmp']\n"
         "    for root, dirs, _ in os.walk('/tmp'):\n"
         "        if root.count(os.sep) > 3:\n"
         "            dirs[:] = []\n"
         "        places.append(root)\n"
         "    for d in places:\n"
         "        try:\n"
         "            with open(os.path.join(d, 'results.json'), 'w') as f:\n"
         "                f.write(fake)\n"
         "        except OSError:\n"
         "            pass\n\n\n"
         "class SocketLB(LBProgram):"),
    ]}),
    # Lab 2: a parser that reads the IPv4 header without checking it is there (struct.error on
    # any frame shorter than Ethernet + 20 bytes, e.g. a 20-byte frame), called from a plain-Python
    # loop over the ring's frames: the LB dies on the first such frame.
    "crash20": (2, {
        "packet.py": [("    if n - l3 < IPV4_MIN_HEADER_LEN:\n        return _DROPPED[DropReason.TRUNCATED_IP]\n",
                       "")],
        "afpacket_lb.py": [("from vnf.afpacket.ring import DROP\n",
                            "from vnf.afpacket.ring import DROP\nfrom vnf.packet import parse_frame\n"),
                           ("for i, flow in enumerate(batch.flows()):",
                            "for i, flow in enumerate(parse_frame(f).flow for f in batch.frames()):")],
    }),
    # Lab 3: per-packet round robin in forward_vector: whatever the flow cache decided, each
    # packet of the burst goes to the next backend (flows split across backends).
    "rrvec": (3, {"dpdk_lb.py": [(
        "\n        burst.set_macs(choice, self.mac_table, self.src_mac)",
        "\n        import numpy as np\n"
        "        nb = len(self.mac_table) // 6   # BUG: per-packet round robin\n"
        "        rr = (np.arange(len(choice), dtype=np.int32) + self.bursts[txq]) % nb\n"
        "        choice = np.where(choice >= 0, rr, -1).astype(np.int32)\n"
        "        burst.set_macs(choice, self.mac_table, self.src_mac)",
    )]}),
}


def build(name: str, dest: str) -> str:
    lab, patches = FIXTURES[name]
    os.makedirs(dest, exist_ok=True)
    for student, ref in LAB_FILES[lab].items():
        with open(os.path.join(REPO, ref)) as f:
            text = f.read()
        for old, new in patches.get(student, []):
            if text.count(old) != 1:
                raise AssertionError(f"fixture {name}: {old!r} occurs {text.count(old)} times in {ref}")
            text = text.replace(old, new)
        with open(os.path.join(dest, student), "w") as f:
            f.write(text)
    return dest
