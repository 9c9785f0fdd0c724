"""vnflab lab shell through a real terminal, the flow-table sample of the LB program contract,
the captures, and the split flow's frames a grading ships next to its report."""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import time

import pytest

from grader.labconfig import REPO
from testbed.capture import frames_of_flows, read_pcap, write_pcapng
from topologies.servers import MAGIC, REQUEST
from vnf.backends import Backend
from vnf.flowtable import FlowTable
from vnf.lb import LBConfig
from vnf.packet import FiveTuple
from vnf.ways.common import LBProgram

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "grader_fixtures"))
import make as fixtures

VIP = "10.0.0.100"
BACKENDS = [Backend(f"b{i}", f"10.0.0.10{i}", f"02:00:00:00:02:0{i}", 8080) for i in (1, 2, 3)]


# --- the flow-table sample (no network) ---------------------------------------------------------


def test_flowtable_recent_lists_the_newest_flows_without_touching_them():
    table = FlowTable(capacity=8, idle_timeout=30)
    for i in range(5):
        table.insert(("flow", i), f"b{i}", now=float(i))
    table.lookup(("flow", 1), now=10.0)  # flow 1 is the newest now
    counters = table.stats()
    assert table.recent(3, now=12.0) == [
        (("flow", 1), "b1", 2.0),
        (("flow", 4), "b4", 8.0),
        (("flow", 3), "b3", 9.0),
    ]
    assert table.stats() == counters and table.items()[-1][0] == ("flow", 1)
    assert table.recent(0, now=12.0) == [] and len(table.recent(99, now=12.0)) == 5


def test_lb_program_stats_hold_a_flows_sample_of_the_table_and_of_the_batch_cache():
    import numpy as np

    program = LBProgram(LBConfig(backends=list(BACKENDS)), {})
    program.flows_sample_size = 3
    lb = program.lb
    for port in range(40000, 40005):
        lb.backend_for(FiveTuple(0x0A00000B, lb.vip, port, 8080, 17), time.monotonic())
    sample = program.stats()["flows_sample"]
    assert [r["flow"] for r in sample] == [
        f"udp 10.0.0.11:{p} -> {VIP}:8080" for p in (40004, 40003, 40002)
    ]
    assert all(r["backend"] in {"b1", "b2", "b3"} and r["idle_s"] >= 0 for r in sample)

    class Burst:  # the columns of a parsed burst
        hash = np.array([0x1234, 0x5678], np.uint32)
        reason = np.zeros(2, np.uint8)
        dst_ip = np.full(2, lb.vip, np.uint32)
        dst_port = np.full(2, 8080, np.uint16)
        proto = np.full(2, 17, np.uint8)

    lb.flows = FlowTable()  # only the batch cache holds flows now
    choice = lb.backends_for_batch(Burst, 2, time.monotonic())
    rows = program.flows_sample(5)
    assert {r["hash"] for r in rows} == {"0x00001234", "0x00005678"}
    names = [b.name for b in lb.pool.by_number()]
    assert {r["backend"] for r in rows} == {names[c] for c in choice}


# --- captures: reading, picking a flow's frames, pcapng (no network) -------------------------


def test_frames_of_a_flow_are_found_by_its_id_at_every_interface(tmp_path):
    from scapy.all import IP, TCP, UDP, Ether, Raw, rdpcap, wrpcap

    def udp(fid, src, dst, sport):
        return (
            Ether()
            / IP(src=src, dst=dst)
            / UDP(sport=sport, dport=8080)
            / Raw(REQUEST.pack(MAGIC, fid, 0, 1))
        )

    request = Raw(b"GET / HTTP/1.1\r\nHost: x\r\nX-Flow-Id: 1500007\r\n\r\n")
    lb_frames = [
        udp(1000001, "10.0.0.11", VIP, 40000),
        udp(1000002, "10.0.0.11", VIP, 40001),
        Ether() / IP(src="10.0.0.12", dst=VIP) / TCP(sport=50000, dport=8080, flags="S"),
        Ether() / IP(src="10.0.0.12", dst=VIP) / TCP(sport=50000, dport=8080) / request,
        Ether() / IP(src=VIP, dst="10.0.0.12") / TCP(sport=8080, dport=50000, flags="A"),
    ]
    wrpcap(str(tmp_path / "lb.pcap"), lb_frames)
    wrpcap(
        str(tmp_path / "b1.pcap"),
        [
            udp(1000001, "10.0.0.1", "10.0.0.101", 33333),
            udp(1000002, "10.0.0.1", "10.0.0.101", 33334),
        ],
    )
    assert read_pcap(str(tmp_path / "lb.pcap"))[0] == 1
    names, frames = frames_of_flows(
        {"lb-eth0": str(tmp_path / "lb.pcap"), "b1-eth0": str(tmp_path / "b1.pcap")},
        [("udp", 1000001), ("tcp", 1500007)],
    )
    write_pcapng(str(tmp_path / "x.pcapng"), names, frames)
    packets = rdpcap(str(tmp_path / "x.pcapng"))
    seen = sorted((p.sniffed_on, p.summary().split(" / ")[2]) for p in packets)
    assert len(packets) == 5  # flow 1000002 left out; the SYN and ACK kept
    assert ("b1-eth0", "UDP 10.0.0.1:33333 > 10.0.0.101:8080") in seen
    assert sum(1 for iface, _ in seen if iface == "lb-eth0") == 4


def test_the_shipped_split_flows_are_named_in_the_report(tmp_path):
    """The report's detail that names split-flows.pcapng is a (title, text) pair like every
    other detail: report_md unpacks them (a list of bare lines once crashed it)."""
    from grader.labconfig import load
    from grader.pcaps import SPLIT_PCAP, ship_split_flows
    from grader.report import report_md

    workdir, out = tmp_path / "work", tmp_path / "out"
    workdir.mkdir()
    out.mkdir()
    write_pcapng(str(workdir / SPLIT_PCAP), ["lb-eth0"], [])
    held = {"frames": 0, "interfaces": ["lb-eth0"]}
    held["flows"] = [{"proto": "udp", "flow_id": 7, "backends": ["b1", "b2"]}]
    facts = {"affinity": {"split_pcap": held}}
    assert ship_split_flows({}, str(workdir), str(out)) == []
    details = ship_split_flows(facts, str(workdir), str(out))
    assert os.path.exists(out / SPLIT_PCAP)
    results = {"score": 0, "max_score": 20, "tests": []}
    md = report_md(load(1), results, details, "rr", quick=True)
    assert f"`{SPLIT_PCAP}`" in md and "udp flow 7 reached b1, b2" in md


# --- the lab shell through a pty (network) -----------------------------------------------------


def _released_lab1_with_the_reference(tmp_path) -> str:
    from grader.release import release

    release(str(tmp_path / "release"), [1], log=lambda *_: None)
    lab = tmp_path / "release" / "lab1"
    for student, ref in fixtures.LAB_FILES[1].items():
        shutil.copyfile(os.path.join(REPO, ref), lab / student)
    return str(lab)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.network
def test_lab_shell_drives_the_students_lb_from_a_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    from scapy.all import IP, rdpcap

    lab = _released_lab1_with_the_reference(tmp_path)
    pcaps = str(tmp_path / "pcaps")
    env = {**os.environ, "PYTHONPATH": REPO}
    term = pexpect.spawn(
        sys.executable,
        ["-m", "vnflab.cli", "lab", "shell", "1", "--submission", lab, "--pcap", pcaps],
        cwd=REPO,
        env=env,
        encoding="utf-8",
        timeout=180,
        dimensions=(50, 200),
    )
    log = []

    def run(command: str, timeout: float = 180) -> str:
        term.sendline(command)
        term.expect_exact("vnflab> ", timeout=timeout)
        out = term.before.replace("\r", "")
        log.append(out)
        return out

    try:
        term.expect_exact("vnflab> ", timeout=240)
        assert "lab 1, your socket LB" in term.before
        assert re.search(r"^b\d \(10\.0\.0\.10\d\)$", run(f"c1 curl -s {VIP}:8080/"), re.MULTILINE)

        out = run("traffic 200 20")
        assert "vnflab affinity check: OK" in out and re.search(r"split flows\s+0\n", out), out
        assert re.search(r"udp flows / http conns\s+200 / 20", out), out

        out = run("stats")
        forwarded = int(re.search(r"forwarded (\d+)", out).group(1))
        assert forwarded >= 600 and "'b1': 'up'" in out, out

        out = run("flows 5")
        rows = re.findall(
            r"^  (udp|tcp) 10\.0\.0\.1[12]:\d+ -> 10\.0\.0\.100:8080 +-> b[123], "
            r"last packet [\d.]+ s ago$",
            out,
            re.MULTILINE,
        )
        assert len(rows) == 5, out

        pcap_started = time.monotonic()
        out = run("pcap lb 2")
        path = re.search(r"-> (\S+lb-eth0\.pcap)", out).group(1)
        assert path.startswith(pcaps)
        run(f"c1 curl -s {VIP}:8080/")  # frames to the VIP while it captures

        out = run("drain b2")
        assert "'b2': 'draining'" in out, out
        out = run("traffic")
        assert "vnflab affinity check: OK" in out, out
        per_backend = dict(re.findall(r"^  (b[1-4]) +(\d+) ", out, re.MULTILINE))
        assert int(per_backend["b2"]) <= 5 < int(per_backend["b1"]), out  # no new flows to b2
        control = re.search(r"control file (\S+)/control\.json", log[-2]).group(1)

        time.sleep(max(0.0, pcap_started + 2.5 - time.monotonic()))  # its 2 s are up
        out = run("pcap")
        assert "(done)" in out and path in out, out
        assert "LB restarted" in run("restart")
        assert re.search(r"^b[13] \(", run(f"c1 curl -s {VIP}:8080/"), re.MULTILINE)  # b2 drained
        term.sendline("exit")
        term.expect(pexpect.EOF, timeout=60)
    finally:
        term.close(force=True)
    assert term.exitstatus == 0, "\n".join(log)
    assert "the topology is gone" in term.before

    to_vip = [p for p in rdpcap(path) if IP in p and p[IP].dst == VIP]
    assert to_vip, "the capture at lb-eth0 holds no frame to the VIP"
    assert not os.path.exists(control), "the shell's work directory was left behind"
    time.sleep(0.5)
    assert not _processes_mentioning(control) and not _processes_mentioning(pcaps)


# --- a graded split flow ships its frames (network) --------------------------------------------


@pytest.mark.network
@pytest.mark.slow
def test_a_split_flow_ships_its_frames_next_to_the_report(tmp_path):
    from scapy.all import IP, UDP, rdpcap

    from grader.grade import grade

    sub = fixtures.build("rr", str(tmp_path / "rr"))
    out = str(tmp_path / "out")
    res = grade(sub, 1, out, quick=True, include_hidden=False, tests=["starts", "affinity"])
    affinity = next(t for t in res["tests"] if t["name"].startswith("affinity"))
    assert affinity["score"] < affinity["max_score"]
    pcap = os.path.join(out, "split-flows.pcapng")
    assert os.path.exists(pcap), os.listdir(out)
    with open(os.path.join(out, "report.md")) as f:
        assert "`split-flows.pcapng`" in f.read()

    # the first split flow: its requests, LB -> backend (the socket way is a proxy), reach
    # two backends or more, and the capture points say so too
    backends = {b.ip: b.name for b in BACKENDS}
    by_flow: dict[int, set] = {}
    seen_at: dict[int, set] = {}
    for p in rdpcap(pcap):
        payload = bytes(p[UDP].payload) if UDP in p else b""
        if payload[:4] == MAGIC and p[IP].dst in backends:
            fid = REQUEST.unpack_from(payload)[1]
            by_flow.setdefault(fid, set()).add(backends[p[IP].dst])
            seen_at.setdefault(fid, set()).add(p.sniffed_on)
    first = min(by_flow)
    assert len(by_flow[first]) >= 2, by_flow
    assert len({i for i in seen_at[first] if i.startswith("b")}) >= 2, seen_at
    # (a grading's own leftovers are test_grader.py's test_nothing_is_left_behind: other
    # gradings may be running on this machine now, so their work dirs say nothing of this one)
