"""Scoring a grading: the facts the sandbox gathered (``grader.inside``) become tests and points.

Runs outside the sandbox, after it has exited: nothing here is reachable from the submission's
process. One method per test (``s_affinity``, ``s_cost``, ...); each says in its output what was
measured and, when points are lost, why, in words a student can act on.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from grader.eviction_phase import score_eviction
from grader.labconfig import Lab
from grader.pool_phase import score_pool_changes
from grader.untrusted import finite_positive
from testbed.frames import describe, hexdump
from topologies.lb import LBTopoConfig
from vnf.addresses import SERVICE_PORT
from vnf.checksum import ones_complement_sum

TEST_TITLES = {
    "starts": "LB starts and forwards (import, ready file, a first flow)",
    "unit": "unit checks",
    "affinity": "affinity: split flows = 0",
    "balance": "balance",
    "key": "5-tuple key: TCP and UDP flows from the same client port",
    "correctness": "correctness: rewritten headers and checksums (frames captured at the "
    "backends), mixed bursts intact, replies from the VIP",
    "robustness": "robustness: malformed-frame corpus, then a normal flow mix",
    "paths": "every path you write, run: the other style, fanout workers, NAT mode (lab.toml)",
    "cost": "per-packet cost vs the reference (same run)",
    "pool_changes": "affinity across pool changes (add, drain, fail + recover)",
}
UNIT_TITLES = {
    "flowtable": "unit checks of the flow table (flowtable.py)",
    "parser": "unit checks of the parser (packet.py parse_frame)",
}


def _ended(stop: dict | None, alive_after=None) -> str:
    """How an LB process ended, in words, with its last output when that helps."""
    if not stop:
        return ""
    tail = (stop.get("log_tail") or "").strip()
    code = stop.get("exit_code")
    if stop.get("hung"):
        msg = "it did not exit within the stop timeout after SIGTERM and was killed (a hang?)"
    elif alive_after is False or stop.get("alive_at_stop") is False:
        if code is not None and code < 0:
            sig = -code
            why = {
                9: "SIGKILL (a resource limit or the grader)",
                24: "SIGXCPU: CPU-time limit",
                25: "SIGXFSZ: file-size limit",
                11: "SIGSEGV",
            }.get(sig, f"signal {sig}")
            msg = f"it was killed by {why}"
        else:
            msg = f"it crashed (exit code {code})"
    else:
        return ""
    if tail:  # the report quotes it in a block the text cannot close
        msg += "; its last output:\n\n" + tail[-1500:]
    return msg


def _count(value) -> int:
    """A counter from the LB's stats (written by the student's process: any JSON at all), or
    -1 when it is not a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return -1
    return int(value) if math.isfinite(value) and 0 <= value < 2**63 else -1


def _stats_note(stop: dict) -> str:
    """What the LB's own stats say of its flow table, quoted for the student and never
    graded (the submission writes them: ``grader.eviction_phase`` judges by behaviour)."""
    ft = _table_stats(stop.get("stats") or {})
    if ft is None:
        why = stop.get("stats_problem") or "none written"
        return f"its own stats, not graded: no flow-table counters ({why})"
    return (
        f"its own stats, not graded: flow table size {ft['size']}, {ft['evictions']} "
        f"evictions, {ft['expirations']} expirations"
    )


def _table_stats(st) -> dict | None:
    """size / evictions / expirations of the LB's flow table, from its stats (-1: not a
    count); None without."""
    if not isinstance(st, dict):
        return None
    ft = (st.get("lb") or {}).get("flow_table") if isinstance(st.get("lb"), dict) else None
    ft = ft if isinstance(ft, dict) else {}
    caches = (
        [x for x in st.get("flow_cache") or [] if isinstance(x, dict)]
        if isinstance(st.get("flow_cache"), list)
        else []
    )
    if caches and not ft.get("size") and not ft.get("misses"):
        # the DPDK way's vector path keeps its flows in the batch flow cache (one per lcore),
        # not the FlowTable: its size and evictions are what is bounded
        return {
            k: sum(max(0, _count(x.get(k, 0))) for x in caches)
            for k in ("size", "evictions", "expirations")
        }
    if not ft:
        return None
    return {k: _count(ft.get(k, 0)) for k in ("size", "evictions", "expirations")}


def _traffic_ok(check: dict | None, min_fraction: float = 0.99) -> tuple[bool, list[str]]:
    if not check:
        return False, ["no traffic result"]
    problems = []
    if check["split_flows"]:
        problems.append(f"{check['split_flows']} split flow(s)")
    fl = check["flows"]
    udp = fl["udp"]
    if udp and fl["never_arrived"] > max(1, (1 - min_fraction) * udp):
        problems.append(f"{fl['never_arrived']} of {udp} UDP flows never reached a backend")
    if check["http"]["failures"]:
        problems.append(
            f"{check['http']['failures']} of {check['http']['conns']} HTTP connections failed"
        )
    return not problems, problems


def _split_details(check: dict) -> str:
    lines = []
    for s in check.get("split", [])[:5]:
        where = ", ".join(f"{b}: {n} packet(s)" for b, n in s["backends"].items()) or "-"
        ans = ", ".join(s.get("answered_by", {})) or "-"
        lines.append(f"- {s['proto']} flow id {s['flow_id']}: reached {where}; answered by {ans}")
    for e in check.get("http", {}).get("errors", [])[:3]:
        lines.append(f"- HTTP flow id {e['flow_id']}: {e['error']}")
    return "\n".join(lines)


def check_frame(frame: bytes, backend: str, topo, way: str) -> list[str]:
    """What is wrong with one frame captured at ``backend`` (empty list: nothing); ``way``:
    "socket", "nat" or anything else for direct server return."""
    problems = []
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return ["not an IPv4 frame"]
    dst_mac, src_mac = frame[0:6].hex(":"), frame[6:12].hex(":")
    if dst_mac != topo.host_mac(backend):
        problems.append(f"destination MAC {dst_mac}, expected {backend}'s {topo.host_mac(backend)}")
    if src_mac != topo.host_mac("lb"):
        problems.append(f"source MAC {src_mac}, expected the LB's {topo.host_mac('lb')}")
    ihl = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    ip = frame[14 : 14 + ihl]
    src, dst = ".".join(map(str, frame[26:30])), ".".join(map(str, frame[30:34]))
    if ones_complement_sum(ip) != 0xFFFF:
        problems.append(f"bad IPv4 header checksum 0x{ip[10:12].hex()}")
    clients = {topo.host_ip(c) for c in topo.client_names()}
    if way == "socket":
        if src != topo.host_ip("lb") or dst != topo.host_ip(backend):
            problems.append(
                f"IP {src} -> {dst}, expected the LB's {topo.host_ip('lb')} -> "
                f"{topo.host_ip(backend)} (the proxy's own connection)"
            )
    elif way == "nat":
        if dst != topo.host_ip(backend) or src not in clients:
            problems.append(
                f"IP {src} -> {dst}, expected a client -> {backend}'s "
                f"{topo.host_ip(backend)} (NAT rewrites the destination)"
            )
    else:
        if dst != topo.vip or src not in clients:
            problems.append(
                f"IP {src} -> {dst}, expected a client -> the VIP {topo.vip} "
                f"(direct server return keeps the IP header)"
            )
    proto = frame[23]
    seg = frame[14 + ihl : 14 + total]
    pseudo = frame[26:34] + bytes([0, proto]) + len(seg).to_bytes(2, "big")
    if proto == 17 and len(seg) >= 8:
        if seg[6:8] != b"\0\0" and ones_complement_sum(pseudo + seg) != 0xFFFF:
            problems.append(f"bad UDP checksum 0x{seg[6:8].hex()}")
        if seg[8:12] != b"VNFL":
            problems.append("UDP payload changed (no VNFL header)")
    elif proto == 6 and len(seg) >= 20:
        if ones_complement_sum(pseudo + seg) != 0xFFFF:
            problems.append(f"bad TCP checksum 0x{seg[16:18].hex()}")
    return problems


def _udp_payload(frame: bytes) -> bytes | None:
    """The UDP payload of an untagged IPv4/UDP frame (None if it is not one)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    return frame[14 + ihl + 8 : 14 + total]


def compare_mixed(mixed: dict, marked: dict, topo, way: str) -> dict:
    """The valid frames of the mixed bursts (``testbed.probe mixed``) against what the backends
    captured: each must arrive once, at one backend, intact. Intact: for direct server return
    the frame is the one sent but for its MACs (the backend's, then the LB's); for the socket
    way (a proxy: new headers) its UDP payload is the one sent and ``check_frame`` passes."""
    sent = {}
    for v in mixed.get("valid_sent") or []:
        sent[(v["flow_id"], v["seq"])] = bytes.fromhex(v["frame"])
    seen: dict = {}
    damaged = []
    for backend, frames in (marked or {}).items():
        for hx in frames:
            got = bytes.fromhex(hx)
            payload = _udp_payload(got)
            if payload is None or len(payload) < 10:
                damaged.append((backend, got, ["not an IPv4/UDP frame any more"]))
                continue
            key = (int.from_bytes(payload[4:8], "big"), int.from_bytes(payload[8:12], "big"))
            want = sent.get(key)
            if want is None:
                damaged.append((backend, got, ["its flow id / sequence number was changed"]))
                continue
            seen.setdefault(key, []).append(backend)
            probs = []
            if way in ("socket", "nat"):
                if payload != _udp_payload(want):
                    probs.append("UDP payload changed")
                probs += check_frame(got, backend, topo, way)
            else:
                if got[12:] != want[12:]:
                    probs.append("headers or payload changed (only the MACs may change)")
                if got[0:6] != bytes.fromhex(topo.host_mac(backend).replace(":", "")):
                    probs.append(f"destination MAC {got[0:6].hex(':')} is not {backend}'s")
                if got[6:12] != bytes.fromhex(topo.host_mac("lb").replace(":", "")):
                    probs.append(f"source MAC {got[6:12].hex(':')} is not the LB's")
            if probs:
                damaged.append((backend, got, probs))
    dups = sum(len(v) - 1 for v in seen.values())
    return {
        "sent": len(sent),
        "arrived": len(seen),
        "missing": len(sent) - len(seen),
        "duplicates": dups,
        "damaged": len(damaged),
        "first_damaged": damaged[:1],
        "junk": mixed.get("junk_sent", 0),
        "bursts": mixed.get("bursts", 0),
    }


def wrong_reply_sources(check: dict, topo) -> dict[str, int]:
    """Where UDP replies came from, other than VIP:port (the address the clients talked to)."""
    want = f"{topo.vip}:{SERVICE_PORT}"
    return {src: n for src, n in (check.get("reply_from") or {}).items() if src != want}


MIXED_LOSS_TOLERATED = 0.15  # of the mixed bursts' valid frames (see _mixed_problems)


class Scorer:
    """The tests of one grading, scored from its plan and facts (``score()``)."""

    def __init__(
        self,
        lab: Lab,
        plan: dict,
        facts: dict,
        missing: list[str],
        quick: bool,
        refused: dict[str, str] | None = None,
    ):
        self.lab, self.plan, self.f, self.missing, self.quick = lab, plan, facts, missing, quick
        self.refused = refused or {}
        # Faults of the grading itself (not of the submission): reported, never scored as full
        self.grader_errors: list[str] = []
        self.points = lab.points()
        self.topo = LBTopoConfig(**plan["topology"])
        self.tests: list[dict] = []
        self.details: list[tuple[str, str]] = []  # (test name, why), for report.md

    def add(
        self,
        key: str,
        name: str,
        score: float,
        max_score: float,
        output: str,
        visibility: str = "visible",
        seconds: float | None = None,
        detail: str = "",
    ) -> None:
        t: dict[str, Any] = {
            "name": name,
            "score": round(max(0.0, min(score, max_score)), 2),
            "max_score": max_score,
            "output": output.strip(),
            "visibility": visibility,
            "number": key,
        }
        if seconds is not None:
            t["execution_time"] = round(seconds, 1)
        self.tests.append(t)
        if detail and t["score"] < max_score:
            self.details.append((name, detail.strip()))

    def add_zero(self, key: str, pts: float, msg: str) -> None:
        """Test ``key`` failed: no points, ``msg`` as its output and in "what failed"."""
        self.add(key, TEST_TITLES[key], 0, pts, msg, seconds=self.seconds(key), detail=msg)

    def seconds(self, phase: str) -> float | None:
        return (self.f.get("timings") or {}).get(phase)

    def not_run(self, why: str) -> str:
        return f"Not run: {why}"

    def score(self) -> list[dict]:
        f, P = self.f, self.points
        tests = self.plan["tests"]
        smoke = f.get("smoke")
        stopped_early = (
            "the grading sandbox stopped before this test "
            f"({f.get('stopped') or f.get('grader_error') or 'time limit'})"
        )
        # unit checks
        if "unit" in tests and "unit" in P:
            u = f.get("unit")
            title = UNIT_TITLES.get(self.lab.raw["lab"].get("unit"), TEST_TITLES["unit"])
            if not u:
                self.add("unit", title, 0, P["unit"], self.not_run(stopped_early))
            elif "error" in u:
                self.add("unit", title, 0, P["unit"], u["error"], detail=u.get("stderr", ""))
            else:
                res = u["results"]
                ok = sum(r["ok"] for r in res)
                lines = [
                    f"{'PASS' if r['ok'] else 'FAIL'} {r['name']}"
                    + ("" if r["ok"] else f": {r['message']}")
                    for r in res
                ]
                self.add(
                    "unit",
                    title,
                    P["unit"] * ok / max(1, len(res)),
                    P["unit"],
                    f"{ok}/{len(res)} checks pass\n" + "\n".join(lines),
                    seconds=self.seconds("unit"),
                )
        # starts
        if not smoke:
            starts_msg = self.not_run(stopped_early)
            self.add("starts", TEST_TITLES["starts"], 0, P.get("starts", 0), starts_msg)
            skip: str | None = starts_msg
        else:
            if not smoke["ready"]:
                msg = f"The LB did not start: {smoke['error']}."
                end = _ended(smoke.get("stop"), False)
                if end:
                    msg += " " + end
            elif not smoke["forwards"]:
                msg = (
                    "The LB became ready but forwarded none of the first flows "
                    "(4 UDP flows, 2 HTTP connections)."
                )
                end = _ended(smoke.get("stop"), smoke.get("alive_after"))
                msg += (" After that, " + end) if end else ""
            else:
                msg = "The LB started (ready file) and forwarded the first flows."
            if smoke.get("retried"):
                msg += (
                    " (The first try passed no UDP datagram; the first flows were driven "
                    "a second time.)"
                )
            if self.missing:
                msg += (
                    "\n\nMissing from the submission (the starter was used instead): "
                    + ", ".join(self.missing)
                )
            if self.refused:
                msg += (
                    "\n\nNot taken from the submission (the starter was used instead): "
                    + "; ".join(self.refused.values())
                )
            self.add(
                "starts",
                TEST_TITLES["starts"],
                P.get("starts", 0) if smoke["forwards"] else 0,
                P.get("starts", 0),
                msg,
                seconds=self.seconds("smoke"),
            )
            skip = (
                None
                if smoke["forwards"]
                else "skipped: the LB did not forward a first flow (see the first test)"
            )
        for key, fn in (
            ("affinity", self.s_affinity),
            ("balance", self.s_balance),
            ("correctness", self.s_correctness),
            ("paths", self.s_paths),
            ("pool_changes", self.s_pool_changes),
            ("key", self.s_key),
            ("robustness", self.s_robustness),
            ("cost", self.s_cost),
        ):
            if key not in tests or key not in P:
                continue
            phase = "affinity" if key in ("balance", "correctness") else key
            if skip:
                self.add(key, TEST_TITLES[key], 0, P[key], skip)
            elif phase not in f:
                self.add(key, TEST_TITLES[key], 0, P[key], self.not_run(stopped_early))
            else:
                fn(P[key])
        for s in self.plan.get("hidden", []):
            name = s.get("name", s["id"])
            pts = float(s.get("points", 0))
            h = (f.get("hidden") or {}).get(s["id"])
            if skip:
                self.add(f"hidden:{s['id']}", name, 0, pts, skip, "after_published")
            elif h is None:
                self.add(
                    f"hidden:{s['id']}",
                    name,
                    0,
                    pts,
                    self.not_run(stopped_early),
                    "after_published",
                )
            else:
                self.s_hidden(s, h, pts)
        return self.tests

    # --- one function per test ---------------------------------------------------------------
    def _lb_problem(self, phase: dict) -> str | None:
        if not phase.get("ready"):
            return f"The LB did not start: {phase.get('error')}. " + _ended(
                phase.get("stop"), False
            )
        end = _ended(phase.get("stop"), phase.get("alive_after"))
        return end or None

    def s_affinity(self, pts: float) -> None:
        a = self.f["affinity"]
        t = a.get("traffic", {})
        what = (
            f"{t.get('udp_flows')} UDP flows x {t.get('packets_per_flow')} packets and "
            f"{t.get('http_conns')} HTTP connections"
        )
        problem = self._lb_problem(a)
        ok, problems = _traffic_ok(a.get("check"))
        if problem and not a.get("check"):
            self.add(
                "affinity",
                TEST_TITLES["affinity"],
                0,
                pts,
                problem,
                seconds=self.seconds("affinity"),
            )
            return
        if ok and not problem:
            c = a["check"]
            self.add(
                "affinity",
                TEST_TITLES["affinity"],
                pts,
                pts,
                f"{what}: {c['flows']['seen']} flows, every one stayed on one backend.",
                seconds=self.seconds("affinity"),
            )
            return
        c = a["check"]
        details = _split_details(c)
        msg = f"{what}: " + "; ".join(problems or ["the LB failed during the run"])
        if details:
            msg += "\n" + details
        if problem:
            msg += "\n" + problem
        hint = (
            "A flow is split when its packets reach more than one backend: the choice must be "
            "remembered per 5-tuple (flow table) and looked up for every packet."
        )
        self.add(
            "affinity",
            TEST_TITLES["affinity"],
            0,
            pts,
            msg,
            seconds=self.seconds("affinity"),
            detail=msg + "\n\n" + hint,
        )

    def s_balance(self, pts: float) -> None:
        a = self.f["affinity"]
        tol = self.lab.balance_tolerance(self.quick)
        c = a.get("check")
        stat = self.lab.raw.get("balance", {}).get("statistic", "max/mean flows per backend")
        if not c or not c["flows"]["seen"]:
            self.add("balance", TEST_TITLES["balance"], 0, pts, "No flows reached the backends.")
            return
        mm = c["balance"]["max_mean"]
        shares = ", ".join(f"{b}: {v['flows']}" for b, v in c["per_backend"].items())
        ok = mm is not None and mm <= tol and len(c["per_backend"]) == self.topo.backends
        msg = (
            f"{stat} = {mm} (tolerance {tol} for policy "
            f"{self.plan['traffic'].get('policy', 'maglev')}); flows per backend: {shares}"
        )
        self.add(
            "balance", TEST_TITLES["balance"], pts if ok else 0, pts, msg, detail="" if ok else msg
        )

    def frame_mode(self, io: dict | None = None) -> str:
        """How the frames at the backends must look: "socket" (a proxy's own connection),
        "dsr" (only the MACs rewritten) or "nat" (the destination IP and port too)."""
        if self.lab.way == "socket":
            return "socket"
        return "nat" if (io or {}).get("mode") == "nat" else "dsr"

    def frame_problems(self, a: dict, mode: str) -> list[str]:
        """What is wrong with a traffic run's frames (captured at the backends, the mixed
        bursts), HTTP bodies, reply sources and (socket way) the return path."""
        caps = a.get("captures") or {}
        checked = bad = 0
        first_bad = None
        for backend, frames in caps.items():
            for hx in frames:
                frame = bytes.fromhex(hx)
                probs = check_frame(frame, backend, self.topo, mode)
                checked += 1
                if probs:
                    bad += 1
                    if first_bad is None:
                        first_bad = (backend, frame, probs)
        c = a.get("check") or {}
        problems = []
        if checked == 0:
            problems.append("no frame of the service reached a backend")
        if bad:
            assert first_bad is not None, "set with the first bad frame"
            backend, frame, probs = first_bad
            problems.append(
                f"{bad} of {checked} captured frames are wrong; the first, at {backend}: "
                + "; ".join(probs)
                + f"\n  {describe(frame)}\n  {hexdump(frame)}"
            )
        if c.get("malformed"):
            problems.append(
                f"{c['malformed']} datagram(s)/request(s) arrived corrupted at the backends"
            )
        if c.get("http", {}).get("failures"):
            problems.append(
                f"{c['http']['failures']} HTTP exchanges failed or had a body not intact"
            )
        problems += self._mixed_problems(a, mode)
        wrong = wrong_reply_sources(c, self.topo)
        if wrong:
            where = ", ".join(f"{src} ({n} flows)" for src, n in list(wrong.items())[:4])
            problems.append(
                f"UDP replies came from {where}: a client sent to "
                f"{self.topo.vip}:{SERVICE_PORT} and must get its replies from there "
                "(it may drop anything else)"
            )
        if mode in ("socket", "nat") and c.get("lost", {}).get("return"):
            lost = c["lost"]
            if lost["return"] > 0.01 * max(1, lost["replies_sent"]):
                problems.append(
                    f"{lost['return']} of {lost['replies_sent']} UDP replies were not "
                    "relayed back to the clients"
                )
        return problems

    def s_correctness(self, pts: float) -> None:
        a = self.f["affinity"]
        problems = self.frame_problems(a, self.frame_mode())
        if problems:
            msg = "\n".join(problems)
            self.add("correctness", TEST_TITLES["correctness"], 0, pts, msg, detail=msg)
        else:
            checked = sum(len(v) for v in (a.get("captures") or {}).values())
            self.add(
                "correctness",
                TEST_TITLES["correctness"],
                pts,
                pts,
                f"{checked} frames captured at the backends: addresses, MACs and checksums "
                "right; payloads and HTTP bodies intact; the valid frames of bursts mixed "
                "with malformed ones arrived intact; UDP replies came from "
                f"{self.topo.vip}:{SERVICE_PORT}.",
            )

    def s_paths(self, pts: float) -> None:
        """Each graded path (``[[paths]]``): a share of the points when its run keeps affinity
        and its frames are right (the affinity and correctness checks, on that path)."""
        runs = self.f.get("paths") or {}
        paths = self.plan.get("paths") or []
        share = pts / max(1, len(paths))
        score, lines, details = 0.0, [], []
        for p in paths:
            name = p.get("name", p["id"])
            r = runs.get(p["id"])
            if r is None:
                lines.append(f"FAIL {name}: not run (the grading stopped before it)")
                continue
            problems = []
            problem = self._lb_problem(r)
            if not r.get("ready"):
                problems.append(problem or "the LB did not start")
            else:
                ok, probs = _traffic_ok(r.get("check"))
                problems += probs
                problems += self.frame_problems(r, self.frame_mode(p.get("io")))
                if problem:
                    problems.append(problem)
            if problems:
                lines.append(f"FAIL {name} (io {p.get('io')}): " + problems[0].split("\n")[0])
                details.append(f"**{name}** (io {p.get('io')}):\n" + "\n".join(problems))
            else:
                score += share
                lines.append(f"PASS {name} (io {p.get('io')}): affinity kept, frames right")
        self.add(
            "paths",
            TEST_TITLES["paths"],
            score,
            pts,
            "\n".join(lines),
            seconds=sum(
                v for k, v in (self.f.get("timings") or {}).items() if k.startswith("path:")
            ),
            detail="\n\n".join(details),
        )

    def _mixed_problems(self, a: dict, mode: str) -> list[str]:
        """What went wrong with the valid frames of the mixed bursts (see ``compare_mixed``)."""
        mixed = a.get("mixed")
        if not mixed or not mixed.get("valid_sent"):
            return ["the mixed-burst probe did not run (a grader problem: please report it)"]
        m = compare_mixed(mixed, a.get("mixed_captures") or {}, self.topo, mode)
        a["mixed_result"] = {k: v for k, v in m.items() if k != "first_damaged"}
        what = (
            f"valid frames sent in {m['bursts']} bursts, each interleaved with malformed "
            f"frames ({m['junk']} in all)"
        )
        problems = []
        if m["damaged"]:
            backend, frame, probs = m["first_damaged"][0]
            problems.append(
                f"{m['damaged']} of {m['sent']} {what} arrived damaged; the first, at "
                f"{backend}: " + "; ".join(probs) + f"\n  {describe(frame)}\n  {hexdump(frame)}"
            )
        # Loss, not damage: a loaded shared machine once lost 20 of 192 in a row outside the
        # LB (the reference, DPDK way); a bug that costs the valid frames of a mixed block
        # loses most of them.
        if m["missing"] > max(4, MIXED_LOSS_TOLERATED * m["sent"]):
            problems.append(
                f"{m['missing']} of {m['sent']} {what} never arrived: a malformed "
                "frame must cost only itself, not the valid frames of its block"
            )
        if m["duplicates"]:
            problems.append(f"{m['duplicates']} of the {what} arrived more than once")
        return problems

    def s_key(self, pts: float) -> None:
        k = self.f["key"]
        problem = self._lb_problem(k)
        rows = k.get("rows") or []
        # A flow that never arrived says nothing about the key (loss is what the affinity and
        # correctness tests grade; on a loaded machine a probe datagram can be lost outside the
        # LB): judge the flows that arrived, as long as most did.
        lost = [r for r in rows if not r["got"]]
        arrived = [r for r in rows if r["got"]]
        wrong = [r for r in arrived if r["got"] != [r["expected"]]]
        if not rows:
            self.add(
                "key",
                TEST_TITLES["key"],
                0,
                pts,
                problem or "the probe did not run",
                seconds=self.seconds("key"),
            )
            return
        if not wrong and not problem and len(arrived) * 2 >= len(rows):
            note = f" ({len(lost)} of {len(rows)} never arrived: not judged here)" if lost else ""
            self.add(
                "key",
                TEST_TITLES["key"],
                pts,
                pts,
                f"{len(arrived)} flows (UDP and TCP pairs from the same client ports): each "
                f"went to the backend the pool chooses for its own 5-tuple{note}.",
                seconds=self.seconds("key"),
            )
            return
        if not wrong:
            wrong = lost  # most were lost: that is the finding
        lines = []
        for r in wrong[:6]:
            got = ", ".join(r["got"]) or "no backend (never arrived)"
            lines.append(
                f"- {r['flow']}: went to {got}; the pool (Maglev) chooses "
                f"{r['expected']} for this 5-tuple"
            )
        msg = (
            f"{len(wrong)} of {len(rows)} flows did not go where their own 5-tuple sends them.\n"
            + "\n".join(lines)
        )
        if any(r["got"] and r["proto"] == "tcp" for r in wrong):
            msg += (
                "\nA TCP flow that lands where the UDP flow from the same port went usually "
                "means the flow key ignores the protocol."
            )
        if problem:
            msg += "\n" + problem
        self.add("key", TEST_TITLES["key"], 0, pts, msg, seconds=self.seconds("key"), detail=msg)

    def s_robustness(self, pts: float) -> None:
        r = self.f["robustness"]
        if not r.get("ready"):
            self.add("robustness", TEST_TITLES["robustness"], 0, pts, self._lb_problem(r) or "")
            return
        probe = r.get("probe") or {}
        if probe.get("crashed_after") or not r.get("alive_after_corpus"):
            hx = probe.get("crash_frame_hex")
            msg = "The LB died during the malformed-frame corpus"
            if probe.get("crashed_after"):
                msg += f", right after: {probe['crashed_after']}"
            if hx:
                frame = bytes.fromhex(hx)
                msg += f"\n  {len(frame)} bytes: {describe(frame)}\n  {hexdump(frame)}"
            end = _ended(r.get("stop"), False)
            msg += ("\n" + end) if end else ""
            msg += (
                "\nAn NF must count and drop a frame it cannot parse, never crash: check every "
                "length before reading a header field."
            )
            return self.add_zero("robustness", pts, msg)
        sent = probe.get("sent", 0)
        if not sent:
            return self.add_zero(
                "robustness",
                pts,
                "The malformed-frame probe sent nothing (a grader problem, not yours: please "
                "report it); the corpus was not tested.",
            )
        ok, problems = _traffic_ok(r.get("check"), 1.0)
        end = _ended(r.get("stop"), r.get("alive_after"))
        if ok and not end:
            self.add(
                "robustness",
                TEST_TITLES["robustness"],
                pts,
                pts,
                f"Survived {sent} malformed/fuzzed frames and the socket oddities; then "
                "forwarded 20 UDP flows and 4 HTTP connections with affinity.",
                seconds=self.seconds("robustness"),
            )
        else:
            msg = (
                f"Survived {sent} malformed frames, but the normal flows afterwards: "
                + "; ".join(problems or ["failed"])
                + (("\n" + end) if end else "")
            )
            self.add(
                "robustness",
                TEST_TITLES["robustness"],
                0,
                pts,
                msg,
                seconds=self.seconds("robustness"),
                detail=msg,
            )

    def s_pool_changes(self, pts: float) -> None:
        score, msg = score_pool_changes(self.f["pool_changes"], pts)
        self.add(
            "pool_changes",
            TEST_TITLES["pool_changes"],
            score,
            pts,
            msg,
            seconds=self.seconds("pool_changes"),
            detail=msg if score < pts else "",
        )

    def s_cost(self, pts: float) -> None:
        c = self.f["cost"]
        cfg = self.plan["cost"]
        # A cost is a CPU time divided by a packet count: it is finite and above zero. Anything
        # else is a failed measurement: of the grader when it is the reference's (never full
        # points for it), of the submission when it is its own (a reaped child or a detached
        # worker can make a CPU delta zero or negative).
        ref_w = [w for w in c["windows"] if w["who"] == "reference"]
        sub_w = [w for w in c["windows"] if w["who"] == "submission"]
        ref = [w["ns_per_packet"] for w in ref_w if finite_positive(w.get("ns_per_packet"))]
        sub = [w["ns_per_packet"] for w in sub_w if finite_positive(w.get("ns_per_packet"))]
        bad_sub = [
            w.get("ns_per_packet")
            for w in sub_w
            if w.get("ns_per_packet") is not None and not finite_positive(w.get("ns_per_packet"))
        ]
        agg_word = "the best window of each" if cfg.get("statistic") == "min" else "medians"
        if self.lab.way == "dpdk":
            method = (
                "Method: the LB's port faces a DPDK generator (full bursts, saturation) for "
                f"{c['seconds']} s per window after a warm-up; its busy TSC cycles (from a "
                "non-empty rx_burst to its tx_burst, as the provided binding counts them) "
                "per packet received, times its share of its core (a poll-mode LB spins "
                "at 100 % CPU whatever the load, so CPU time alone says nothing), read from "
                "its stats and checked (packets received at most what the generator sent, busy "
                "time at most the window's, the TSC frequency the reference's; and when the LB "
                "held the generator back, busy nearly all the window, else that window is "
                "scored on its CPU time per packet the generator got back); windows "
                f"alternating reference/submission in the same run; {agg_word} compared."
            )
        else:
            method = (
                f"Method: at saturation, as `vnflab bench` measures it: trafgen sends UDP "
                f"flat out over {c.get('flows')} flows; the LB's CPU time (every thread "
                "and worker) per frame it transmitted (its interface's counter), for "
                f"{c['seconds']} s per window after a warm-up; windows alternating "
                f"reference/submission in the same run; {agg_word} compared."
            )
        # A reference window that could not be measured (None) is left out: the statistic is
        # the best window, and a measured one is a true figure. One that measured a number that
        # cannot be (zero, negative, NaN), or no measured window at all, is a grader error.
        ref_bad = [
            w.get("ns_per_packet")
            for w in ref_w
            if w.get("ns_per_packet") is not None and not finite_positive(w.get("ns_per_packet"))
        ]
        ref_missing = [w for w in ref_w if w.get("ns_per_packet") is None]
        if not ref or ref_bad:
            why = next(
                (
                    w.get("busy_error") or w.get("error")
                    for w in ref_w
                    if w.get("busy_error") or w.get("error")
                ),
                "",
            )
            figures = ", ".join(repr(w.get("ns_per_packet")) for w in ref_w)
            note = (
                f"the reference's cost could not be measured (ns/packet per window: "
                f"{figures or 'no window'})" + (f": {why}" if why else "")
            )
            self.grader_errors.append(f"cost: {note}")
            self.add(
                "cost",
                TEST_TITLES["cost"],
                0,
                pts,
                f"Grader error, not yours: {note}. This test must be run again; its "
                "points are withheld until then.\n" + method,
            )
            return
        if bad_sub:
            msg = (
                f"The submission's cost measurement failed: ns/packet {bad_sub} in its "
                "windows (a cost must be above zero; CPU time spent outside the measured "
                "processes, or taken back by a reaped child, does not count)."
            )
            self.add(
                "cost",
                TEST_TITLES["cost"],
                0,
                pts,
                msg + "\n" + method,
                seconds=self.seconds("cost"),
                detail=msg,
            )
            return
        if not sub:
            bad: dict = next((w for w in c["windows"] if w["who"] == "submission"), {})
            busy_err = next(
                (
                    w["busy_error"]
                    for w in c["windows"]
                    if w["who"] == "submission" and w.get("busy_error")
                ),
                None,
            )
            if busy_err:
                msg = f"The submission's cost could not be measured: {busy_err}."
            else:
                msg = "The submission forwarded nothing in the cost windows. " + (
                    _ended(bad.get("stop"), False) if bad else ""
                )
            self.add(
                "cost",
                TEST_TITLES["cost"],
                0,
                pts,
                msg + "\n" + method,
                seconds=self.seconds("cost"),
            )
            return
        agg = min if cfg.get("statistic") == "min" else statistics.median
        r_ns, s_ns = agg(ref), agg(sub)
        ratio = s_ns / r_ns
        full, zero = float(cfg.get("full_ratio", 1.5)), float(cfg.get("zero_ratio", 3.0))
        frac = 1.0 if ratio <= full else 0.0 if ratio >= zero else (zero - ratio) / (zero - full)
        msg = (
            f"submission {s_ns:.0f} ns/packet, reference {r_ns:.0f} ns/packet: ratio {ratio:.2f} "
            f"(full points up to {full}, none from {zero})\n{method}"
        )
        for who, ws in (("submission", sub_w), ("reference", ref_w)):
            low = [w for w in ws if w.get("busy_under_reported")]
            if low:  # said, not hidden: the figures that are not the LB's busy counters
                msg += (
                    f"\n({len(low)} of {len(ws)} {who} windows were scored on CPU time per "
                    f"packet, not on its busy counters: {low[0]['busy_under_reported']})"
                )
        if ref_missing:  # said, not hidden: the grader's own windows that measured nothing
            why = ref_missing[0].get("busy_error") or ref_missing[0].get("error") or "no figure"
            msg += (
                f"\n({len(ref_missing)} of {len(ref_w)} reference windows could not be "
                f"measured and were left out: {why})"
            )
        self.add(
            "cost",
            TEST_TITLES["cost"],
            pts * frac,
            pts,
            msg,
            seconds=self.seconds("cost"),
            detail=msg,
        )

    def s_hidden(self, s: dict, h: dict, pts: float) -> None:
        name = s.get("name", s["id"])
        problems = []
        if not h.get("ready"):
            problems.append(f"the LB did not start: {h.get('error')}")
        c = h.get("check")
        checks = s.get("checks", ["affinity"])
        if c:
            if "affinity" in checks:
                ok, probs = _traffic_ok(c)
                problems += probs
            if "balance" in checks:
                names = s.get("backends") or self.topo.backend_names()
                flows = [c["per_backend"].get(n, {}).get("flows", 0) for n in names]
                mean = sum(flows) / len(flows) if flows else 0
                mm = round(max(flows) / mean, 4) if mean else None
                if mm is None or mm > float(s.get("max_mean", 1.3)):
                    problems.append(f"balance max/mean {mm} above {s.get('max_mean', 1.3)}")
            if "all_backends" in checks:
                want = set(s.get("backends") or self.topo.backend_names())
                got = {b for b, v in c["per_backend"].items() if v["flows"]}
                if got != want:
                    problems.append(f"flows reached {sorted(got)}, expected exactly {sorted(want)}")
        notes = []
        if "table_bounded" in checks and h.get("ready") and h.get("alive_after") is not False:
            # judged by behaviour (grader.eviction_phase); the LB's own stats are only quoted
            bound_problems, summary = score_eviction(h.get("eviction"), s)
            if any(p.startswith("grader problem") for p in bound_problems):
                self.grader_errors.append(f"hidden {s['id']}: " + "; ".join(bound_problems))
            problems += bound_problems
            notes += [] if bound_problems else [summary]  # a problem says what was seen
            notes.append(_stats_note(h.get("stop") or {}))
        end = _ended(h.get("stop"), h.get("alive_after"))
        if end:
            problems.append(end)
        note = "".join(f"\n({n})" for n in notes if n)
        if problems:
            msg = "; ".join(problems) + note
            self.add(f"hidden:{s['id']}", name, 0, pts, msg, "after_published", detail=msg)
        else:
            self.add(f"hidden:{s['id']}", name, pts, pts, "passed" + note, "after_published")
