"""``vnflab bench --http``: requests per second through each way, and what bounds them.

The packet bench (``bench.kernel``, ``bench.dpdk``) times the LB's work per packet with a
generator that never waits for an answer. A real client does wait: ``wrk`` keeps ``connections``
HTTP/1.1 keep-alive connections open, and each sends its next request only when the answer to
the last one is back. Its rate is set by whichever part of the round trip runs out of CPU first:
the client, the LB, the backends, or none of them (then the rate is set by latency: every
connection waits on a round trip while the cores idle). So next to the rate this bench measures
every part's CPU time over the same window and says which part it was.

One way = one fresh sandbox (``run_http_bench``, like every vnflab run):

1. the default LB topology (``testbed.experiment.Testbed``), its backends (``topologies.servers``:
   one epoll HTTP server per backend, answering a plain GET with 200 and its name), and the
   way's reference LB, pinned as the packet bench pins it (``lb_argv``, ``lb_io``): LB on
   ``LB_CPU``; for DPDK the private OVS-DPDK's PMD on ``GEN_CPU`` (``Testbed`` does that);
2. one ``curl`` from c1 first: a way that cannot answer one request is not timed;
3. ``wrk -tT -cC -dDs --latency http://VIP:8080/`` on c1, pinned to ``GEN_CPU`` (where the packet
   bench's generator runs); the backends are pinned there too, so the LB's core holds the LB
   alone (and the kernel's work for the frames it sends);
4. over the middle of wrk's run (``window``), the CPU time of the LB (all its threads and
   workers), of each backend and of wrk (``testbed.procfs.cpu_times``: exact schedstat ns), of
   OVS-DPDK for the DPDK way, and each core's busy time (``cpu_idle_s``), each as a share of the
   window: 1.0 = one core's worth. A DPDK LB polls at 100 % of its core whatever the load, so
   its share is its busy share instead (busy TSC cycles / window, from its stats on SIGUSR1);
5. wrk's own report (``parse_wrk``), the backends' count of plain requests answered 200, and the
   verdict (``bound_by``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace

from bench.spec import GEN_CPU, LB_CPU, WAYS
from testbed.experiment import ExperimentSpec, RunningLB, Testbed, log
from testbed.procfs import (
    CoreTimes,
    core_times,
    cpu_times,
    process_state,
    process_tree,
    thread_ids,
)
from vnf.addresses import SERVICE_PORT, VIP

URL = f"http://{VIP}:{SERVICE_PORT}/"
DPDK_STYLE = "fused"  # the DPDK way's reference, as the packet bench's table row

# The verdict's thresholds (shares of one core over the window; see ``bound_by``).
SATURATED = 0.9  # a single-threaded part at or above this has no more to give
WELL_BELOW = 0.6  # "well below" saturation: that part could still take much more
CORE_FULL = 0.95  # a core at or above this is busy all the time (who with: see the shares)
OURS = 0.75  # a full core is "ours" when the parts measured here make this much of its work

LATENCY_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
BINARY = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


@dataclass
class HttpSpec:
    """One way's HTTP bench. It crosses the sandbox boundary as JSON: plain values only."""

    way: str = "socket"
    seconds: int = 5  # wrk -d (whole seconds: wrk takes no fractions)
    threads: int = 2  # wrk -t
    connections: int = 50  # wrk -c
    style: str = "vector"  # AF_PACKET style, as ``vnflab bench --style``
    tx: str = "sendmmsg"  # AF_PACKET transmit, as ``vnflab bench --tx``

    def validate(self) -> HttpSpec:
        if self.way not in WAYS:
            raise ValueError(f"way: must be one of {', '.join(WAYS)}, got {self.way!r}")
        if not isinstance(self.seconds, int) or self.seconds < 1:
            raise ValueError(f"seconds: wrk runs whole seconds, at least 1, got {self.seconds!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads: at least 1, got {self.threads!r}")
        if not isinstance(self.connections, int) or self.connections < self.threads:
            raise ValueError(
                f"connections: at least one per thread ({self.threads}), got {self.connections!r}"
            )
        return self

    def wrk_argv(self) -> list[str]:
        return [
            "wrk",
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{self.seconds}s",
            "--latency",
            URL,
        ]

    def timeout_s(self) -> float:
        """The sandbox's limit: the set-up (OVS-DPDK's takes longest), wrk, the tear-down."""
        return 180.0 + self.seconds


def window(seconds: float) -> tuple[float, float]:
    """(lead, length): CPU time is read from ``lead`` s after wrk starts, for ``length`` s,
    leaving wrk's ramp-up (connecting) and its end (the process must still be there to be
    read) outside the window."""
    lead = min(0.5, 0.2 * seconds)
    trail = min(0.3, 0.2 * seconds)
    return lead, seconds - lead - trail


# ------------------------------------------------------------------------------------------
# wrk's report
# ------------------------------------------------------------------------------------------


def latency_ms(text: str) -> float:
    """wrk's ``514.00us``, ``3.81ms``, ``1.02s`` in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(m.group(1)) * LATENCY_MS[m.group(2)]


def binary_bytes(text: str) -> float:
    """wrk's ``12.63MB`` (powers of 1024) in bytes."""
    m = re.fullmatch(r"([\d.]+)([KMGTP]?)B", text.strip())
    if not m:
        raise ValueError(f"not a wrk size: {text!r}")
    return float(m.group(1)) * BINARY[m.group(2)]


def parse_wrk(text: str) -> dict:
    """wrk's report (run with ``--latency``) as numbers. wrk prints the socket-error and non-2xx
    lines only when they are not zero; a report without the rate is an error."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", text, re.M)
    done = re.search(r"^\s*(\d+) requests in (\S+), (\S+) read\s*$", text, re.M)
    if not rate or not done:
        raise ValueError("wrk printed no report (no Requests/sec line)")
    transfer = re.search(r"^Transfer/sec:\s+(\S+)\s*$", text, re.M)
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.M))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(done.group(1)),
        "seconds": latency_ms(done.group(2)) / 1e3,
        "bytes_read": binary_bytes(done.group(3)),
        "requests_per_s": float(rate.group(1)),
        "transfer_bytes_per_s": binary_bytes(transfer.group(1)) if transfer else None,
        **{
            f"latency_p{p}_ms": latency_ms(pct[p]) if p in pct else None
            for p in ("50", "75", "90", "99")
        },
        "socket_errors": dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(x) for x in errors.groups()) if errors else (0, 0, 0, 0),
            )
        ),
        # wrk counts statuses above 399 here; the backends answer 200 or 4xx, never 3xx
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
    }


# ------------------------------------------------------------------------------------------
# the shares and the verdict
# ------------------------------------------------------------------------------------------

BOUND_BY_RULES = (
    f"'the LB' when the LB's share is >= {SATURATED} (', backends close behind' added when a "
    f"backend's is >= {WELL_BELOW}; '; CPU {GEN_CPU} full too' when that core is); else 'the "
    f"backends' when a backend's share is >= {SATURATED} (each is one thread); else 'the "
    f"client' when wrk's is >= {SATURATED} (its threads share CPU {GEN_CPU}); else, when "
    f"CPU {GEN_CPU} is full (its busy share, less a polling switch's idle polls, >= "
    f"{CORE_FULL}): 'CPU {GEN_CPU}: client and backends' if our parts there (wrk, backends, "
    f"the switch's processing, the core's softirq) make >= {OURS:.0%} of it, 'CPU {GEN_CPU}: "
    f"other work' if not; else 'CPU {LB_CPU}: other work' when the LB's core is full but not "
    f"with the LB; else 'none: idle cores' (nothing saturated: every connection waits on its "
    f"round trip while the cores idle)"
)


def figures(used: dict, backends: list[str], polling: bool) -> dict:
    """The table's figures from ``shares``: every part's share of one core, each core's.

    The LB's share: a kernel way's LB process plus the softirq work on its core (only the
    frames the LB sends cause softirq work there: everything else is pinned to the other
    core), at most that core's busy share; a polling DPDK LB's busy share. The switch
    (OVS-DPDK only): its processing cycles' share. ``cores_work``: each core's busy share
    less what pollers pinned there spent polling empty queues."""
    cpu, cores = used["cpu"], used["cores"]
    lb_core, gen_core = cores[LB_CPU], cores[GEN_CPU]
    out: dict = {
        "lb_process_share": cpu["lb"],
        "lb_busy_share": used["lb_busy"] if polling else None,
        "lb_softirq_share": None if polling else lb_core["softirq"],
        "backend_shares": {b: cpu[b] for b in backends},
        "wrk_share": cpu["wrk"],
        "switch_cpu_share": cpu.get("switch"),
        "switch_share": used.get("switch_busy"),
        "cores": cores,
    }
    if polling:
        out["lb_share"] = used["lb_busy"]
        lb_spin = max(0.0, cpu["lb"] - (used["lb_busy"] or 0.0))
    else:
        # at most the core's busy share: without IRQ time accounting (CONFIG_IRQ_TIME_
        # ACCOUNTING) softirq run in a process's context counts in both
        out["lb_share"] = round(min(lb_core["busy"], cpu["lb"] + lb_core["softirq"]), 3)
        lb_spin = 0.0
    switch_spin = max(0.0, (cpu.get("switch") or 0.0) - (used.get("switch_busy") or 0.0))
    work = [round(c["busy"], 3) for c in cores]
    work[GEN_CPU] = round(max(0.0, gen_core["busy"] - switch_spin), 3)
    work[LB_CPU] = round(max(0.0, lb_core["busy"] - lb_spin), 3)
    out["cores_work"] = work
    ours = cpu["wrk"] + sum(cpu[b] for b in backends) + (used.get("switch_busy") or 0.0)
    out["ours_on_gen_cpu"] = round(min(work[GEN_CPU], ours + gen_core["softirq"]), 3)
    busiest = max(backends, key=lambda b: cpu[b])
    out["busiest_backend"], out["busiest_backend_share"] = busiest, cpu[busiest]
    out["bound_by"] = bound_by(out)
    return out


def bound_by(f: dict) -> str:
    """Which part limited the rate (``BOUND_BY_RULES``, in that order), from ``figures``."""
    busiest = max(f["backend_shares"].values(), default=0.0)
    work = f["cores_work"]
    gen_full = work[GEN_CPU] >= CORE_FULL
    if f["lb_share"] >= SATURATED:
        verdict = "the LB"
        if busiest >= WELL_BELOW:
            verdict += ", backends close behind"
        return verdict + (f"; CPU {GEN_CPU} full too" if gen_full else "")
    if busiest >= SATURATED:
        return "the backends"
    if f["wrk_share"] >= SATURATED:
        return "the client"
    if gen_full:
        if f["ours_on_gen_cpu"] >= OURS * work[GEN_CPU]:
            return f"CPU {GEN_CPU}: client and backends"
        return f"CPU {GEN_CPU}: other work"
    if work[LB_CPU] >= CORE_FULL:
        return f"CPU {LB_CPU}: other work"
    return "none: idle cores"


# ------------------------------------------------------------------------------------------
# inside the sandbox: one way
# ------------------------------------------------------------------------------------------


def lb_argv(way: str) -> list[str]:
    """The way's reference program, pinned to the LB core as the packet bench pins it."""
    return ["taskset", "-c", str(LB_CPU), sys.executable, "-m", f"vnf.ways.{way}_lb"]


def lb_io(spec: HttpSpec) -> dict:
    """The io options of the packet bench's reference LB for this way (``bench.kernel``'s for
    socket and AF_PACKET; DPDK's fused style); ``Testbed`` adds the interface or vhost port."""
    if spec.way == "dpdk":
        return {"style": DPDK_STYLE}
    from bench.kernel import KernelPathDriver

    return KernelPathDriver().io(spec.way, None, spec.style, spec.tx)


def pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` and of its descendants onto ``cpu``."""
    for p in process_tree(pid):
        for tid in thread_ids(p):
            try:
                os.sched_setaffinity(tid, {cpu})
            except OSError:  # the thread ended meanwhile
                pass


def sample(pids: dict[str, int], lb: RunningLB | None, ovs) -> dict:
    """One reading: exact CPU seconds of each process tree in ``pids`` and every core's times
    (at ``t``), then, for the DPDK way, the LB's busy cycles (``lb``, at its own ``uptime_s``)
    and the switch's processing cycles (``ovs``, timed around the query)."""
    out: dict = {
        "t": time.monotonic(),
        "cpu": {name: cpu_times(pid).exact for name, pid in pids.items()},
        "cores": [core_times(c) for c in range(os.cpu_count() or 1)],
        # a process that has exited (a zombie until reaped) took its threads' CPU time along
        "gone": [name for name, pid in pids.items() if process_state(pid) in (None, "Z", "X")],
        "busy": None,
        "switch_cycles": None,
    }
    if lb is not None:
        stats = lb.stats_now()
        out["busy"], out["busy_t"] = stats.get("busy") or {}, stats.get("uptime_s")
    if ovs is not None:
        t0 = time.monotonic()
        out["switch_cycles"] = ovs.processing_cycles()
        out["switch_t"] = (t0 + time.monotonic()) / 2
    return out


def core_shares(a: CoreTimes, b: CoreTimes, wall: float) -> dict:
    """One core between two readings: busy (wall minus idle), and of that the kernel's
    interrupt and softirq work (packet processing no process is charged for) and steal."""

    def share(x: float) -> float:
        return round(min(1.0, max(0.0, x / wall)), 3)

    idle = (b.idle + b.iowait) - (a.idle + a.iowait)
    return {
        "busy": share(wall - idle),
        "softirq": share(b.softirq + b.irq - a.softirq - a.irq),
        "steal": share(b.steal - a.steal),
    }


def shares(a: dict, b: dict) -> dict:
    """What each part used between two samples, in cores (CPU seconds / wall seconds); busy
    cycles (the DPDK LB's, the switch's) by the LB's TSC rate."""
    wall = b["t"] - a["t"]
    out = {
        "window_s": round(wall, 3),
        "cpu": {k: round((b["cpu"][k] - a["cpu"][k]) / wall, 3) for k in a["cpu"]},
        "cores": [core_shares(ca, cb, wall) for ca, cb in zip(a["cores"], b["cores"])],
        "lb_busy": None,
        "switch_busy": None,
    }
    hz = (b["busy"] or {}).get("tsc_hz")
    if hz:
        busy_wall = b["busy_t"] - a["busy_t"]
        out["lb_busy"] = round((b["busy"]["cycles"] - a["busy"]["cycles"]) / hz / busy_wall, 3)
        if b["switch_cycles"] is not None:
            switch_wall = b["switch_t"] - a["switch_t"]
            cycles = b["switch_cycles"] - a["switch_cycles"]
            out["switch_busy"] = round(cycles / hz / switch_wall, 3)
    return out


def first_answer(bed: Testbed) -> str:
    """The HTTP status of one plain GET from c1 (``000``: no answer within 5 s)."""
    out = bed.net["c1"].cmd(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' {URL}")
    return (out.strip().splitlines() or ["000"])[-1]


def run_way(spec: HttpSpec, workdir: str) -> dict:
    """The HTTP bench of one way (inside its sandbox)."""
    spec.validate()
    io = lb_io(spec)
    exp = ExperimentSpec(way=spec.way, lb_extra=io, lb_command=lb_argv(spec.way))
    log(f"http bench, way={spec.way}: building the topology")
    bed = Testbed(exp, workdir)
    result: dict = {"way": spec.way, "lb_io": io}
    polling = spec.way == "dpdk"
    try:
        backends = {name: proc.pid for name, (proc, _) in bed.backend_procs.items()}
        for pid in [*backends.values(), *([bed.ovs.vswitchd.pid] if bed.ovs else [])]:
            pin(pid, GEN_CPU)  # OVS: its PMD is there already; its other threads join it
        lb = bed.start_lb("http")
        status = first_answer(bed)
        result["first_answer"] = status
        if status != "200":
            raise RuntimeError(
                f"a plain GET from c1 got {status!r}, not 200; the LB said:\n{lb.log_tail()}"
            )
        log(f"running {' '.join(spec.wrk_argv())} on c1 (CPU {GEN_CPU})")
        wrk = bed.popen("c1", ["taskset", "-c", str(GEN_CPU), *spec.wrk_argv()], "wrk")
        started = time.monotonic()
        pids = {"lb": lb.proc.pid, "wrk": wrk.pid, **backends}
        if bed.ovs is not None:
            pids["switch"] = bed.ovs.vswitchd.pid
        lead, length = window(spec.seconds)
        time.sleep(max(0.0, started + lead - time.monotonic()))
        a = sample(pids, lb if polling else None, bed.ovs)
        time.sleep(max(0.0, started + lead + length - time.monotonic()))
        b = sample(pids, lb if polling else None, bed.ovs)
        if a["gone"] or b["gone"]:
            raise RuntimeError(f"{', '.join(a['gone'] + b['gone'])} ended within the window")
        wrk.wait(spec.seconds + 30)
        with open(bed.path("wrk.log"), errors="replace") as f:
            text = f.read()
        result["wrk_output"] = text
        result["wrk"] = parse_wrk(text)
        result["lb_alive"] = lb.alive()
        result["answered_200"] = {
            r["backend"]: r.get("anonymous_requests", 0) for r in bed.backend_records()
        }
        result["lb_stats"] = lb.stop()  # its own counters (drops, flows), as the bench keeps
    finally:
        bed.close()
    used = shares(a, b)
    result["window_s"] = used["window_s"]
    result.update(figures(used, list(backends), polling))
    return result


def inside_main(spec_path: str, result_path: str) -> int:
    from testbed import sandbox

    return sandbox.serve_module(
        [spec_path, result_path], lambda spec, workdir: run_way(HttpSpec(**spec), workdir)
    )


# ------------------------------------------------------------------------------------------
# outside: one sandbox per way, the summary
# ------------------------------------------------------------------------------------------


def available(way: str) -> str | None:
    """None, or why this way cannot run here (no wrk; the way's own reasons, as the packet
    bench's drivers say them)."""
    if not shutil.which("wrk"):
        return "wrk is not installed (apt-get install wrk)"
    from bench.runner import default_drivers

    return default_drivers()[way].available(way)


def run_http_bench(ways: list[str], spec: HttpSpec, keep_workdir: str | None = None) -> dict:
    """The HTTP bench of each way in ``ways``, each in a fresh sandbox, one after the other."""
    from bench.machine import machine_info
    from testbed import sandbox

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load = os.getloadavg()
    results = []
    for way in ways:
        one = replace(spec, way=way).validate()
        why = available(way)
        if why:
            results.append({"way": way, "error": why})
            continue
        log(f"http bench: {way} ({' '.join(one.wrk_argv())})")
        r = sandbox.run_module_in_sandbox(
            "bench.http",
            asdict(one),
            one.timeout_s(),
            os.path.join(keep_workdir, way) if keep_workdir else None,
            what=f"http bench ({way})",
            keep=bool(keep_workdir),
            prefix="vnflab-bench-http-",
            name="http-",
        )
        r.setdefault("way", way)
        results.append(r)
    return {
        "date": started,
        "kind": "http",
        "spec": {k: v for k, v in asdict(spec).items() if k != "way"},
        "ways": results,
        "machine": {**machine_info(), "loadavg_at_start": [round(x, 2) for x in load]},
        "method": method(spec),
        "method_brief": method_brief(spec),
    }


def method(spec: HttpSpec) -> str:
    """The full method text (kept in the JSON, printed by ``vnflab bench --http --method``)."""
    lead, length = window(spec.seconds)
    return (
        f"Each way in a fresh sandbox: the default LB topology (2 clients, the LB, 3 backends "
        f"on one switch: a Linux bridge, or a private OVS-DPDK for the DPDK way), the backends "
        f"(topologies.servers: one epoll HTTP server per backend, answering a plain GET with "
        f"200 and its name), and the way's reference LB as the packet bench runs it: socket "
        f"(a proxy owning the VIP), AF_PACKET (direct server return, style {spec.style}, "
        f"transmit by {spec.tx}, 1 worker), DPDK (style {DPDK_STYLE}, direct server return "
        f"on a virtio-user port of OVS-DPDK). Pinning, as in the packet bench: the LB on CPU "
        f"{LB_CPU} (taskset; the DPDK LB's lcore too); wrk on c1 on CPU {GEN_CPU}, where the "
        f"packet bench's generator runs; every thread of the backends, and of ovs-vswitchd "
        f"(whose PMD the testbed puts on CPU {GEN_CPU}), on CPU {GEN_CPU} too, so the LB's "
        f"core holds the LB alone. On a 2-core machine that means wrk, the three backends, the "
        f"switch and the kernel's TCP work for them all share CPU {GEN_CPU}; the kernel's "
        f"softirq work for the frames the LB sends (a veth hand-off runs the receiver's first "
        f"steps, the bridge and the receiving host's TCP on the sender's core) runs on CPU "
        f"{LB_CPU}. One curl from c1 must get 200 first. Then wrk -t{spec.threads} "
        f"-c{spec.connections} -d{spec.seconds}s --latency {URL} (keep-alive connections; a "
        f"new request as soon as the last answer is back). CPU time is read {lead:g} s after "
        f"wrk starts and again {length:g} s later (inside wrk's run: its ramp-up and its end "
        f"stay out): exact on-CPU ns (schedstat) of the LB (every thread and worker), each "
        f"backend, wrk, and for DPDK ovs-vswitchd; each as a share = CPU s / wall s (1.0 = one "
        f"core's worth). Each core's busy and softirq shares come from /proc/stat (busy = wall "
        f"minus idle), machine-wide: other processes on the machine count there too. The LB's "
        f"share: kernel ways, its process plus the softirq share of its core (only the LB's "
        f"sends put softirq work there), at most the core's busy share (a kernel without "
        f"CONFIG_IRQ_TIME_ACCOUNTING counts softirq run in a process's context in both, and "
        f"samples /proc/stat's softirq by the tick); DPDK, its busy share (busy TSC cycles "
        f"from its stats on SIGUSR1 / wall s), since it polls and its CPU share is ~1.0 at any "
        f"load. The "
        f"switch's share (OVS-DPDK): its processing cycles (dpif-netdev/pmd-stats-show) / TSC "
        f"Hz / wall s; a Linux bridge has none of its own (its work is the cores' softirq). "
        f"Our parts on CPU {GEN_CPU}: wrk + the backends + the switch's share + that core's "
        f"softirq, at most its work share. A core's work share (CPU n in the table) = its "
        f"busy share less the empty polls of a poller pinned there (CPU share minus busy "
        f"share). From wrk: requests/s, transfer/s, "
        f"latency percentiles (p50, p99), socket errors and responses that were not 2xx or 3xx "
        f"(the backends never send 3xx); from the backends' records: plain requests answered "
        f"with 200, per backend. Bound by: {BOUND_BY_RULES}. One run per way: on a shared "
        f"machine re-run before believing a difference."
    )


def method_brief(spec: HttpSpec) -> list[str]:
    return [
        f"wrk -t{spec.threads} -c{spec.connections} -d{spec.seconds}s from c1 (CPU {GEN_CPU}, "
        f"with the backends) to the VIP through the reference LB (CPU {LB_CPU}), a sandbox "
        f"per way",
        "shares = CPU s / wall s over wrk's run (exact schedstat); LB: process + its core's "
        "softirq, or busy cycles (DPDK polls); cores: machine-wide",
    ]


# ------------------------------------------------------------------------------------------
# the terminal
# ------------------------------------------------------------------------------------------

HEADER = (
    "way",
    "req/s",
    "p50 ms",
    "p99 ms",
    "LB",
    "backend (max)",
    "wrk",
    "switch",
    "CPU 0",
    "CPU 1",
    "errors",
    "bound by",
)


def cell(x, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def table_rows(result: dict) -> list[tuple[str, ...]]:
    rows = []
    for w in result["ways"]:
        if w.get("error"):
            rows.append((w["way"], w["error"].splitlines()[0], *[""] * (len(HEADER) - 2)))
            continue
        wrk = w["wrk"]
        errors = sum(wrk["socket_errors"].values()) + wrk["non_2xx_3xx"]
        work = w["cores_work"] + [None] * 2
        rows.append(
            (
                w["way"],
                cell(wrk["requests_per_s"], "{:.0f}"),
                cell(wrk["latency_p50_ms"]),
                cell(wrk["latency_p99_ms"]),
                cell(w["lb_share"])
                + (
                    " busy"
                    if w.get("lb_busy_share") is not None
                    else f" (proc {w['lb_process_share']:.2f})"
                ),
                f"{w['busiest_backend_share']:.2f} ({w['busiest_backend']})",
                cell(w["wrk_share"]),
                cell(w.get("switch_share")),
                cell(work[0]),
                cell(work[1]),
                str(errors),
                w["bound_by"],
            )
        )
    return rows


def table(result: dict) -> str:
    from bench.report import aligned

    lines = aligned([HEADER, *table_rows(result)], left=(0, len(HEADER) - 1))
    spec = result.get("spec") or {}
    m = result.get("machine") or {}
    notes = [
        "shares of one core over wrk's run (CPU s / wall s); LB: its process + the softirq "
        "work on its core, or a polling DPDK LB's busy cycles; switch: OVS-DPDK's processing "
        "cycles; CPU n: busy less pollers' empty polls, machine-wide; errors: socket errors "
        "+ non-2xx/3xx",
        f"load average at the start: {' '.join(str(x) for x in m.get('loadavg_at_start', []))}"
        f" ({m.get('cores', '?')} cores)",
    ]
    for w in result["ways"]:
        if w.get("answered_200") is not None:
            done = w["wrk"]["requests"]
            got = sum(w["answered_200"].values())
            notes.append(
                f"{w['way']}: wrk completed {done} requests in {spec.get('seconds', '?')} s; "
                f"the backends answered {got} with 200 ("
                + ", ".join(f"{b} {n}" for b, n in sorted(w["answered_200"].items()))
                + ")"
            )
        elif w.get("error") and "\n" in w["error"]:
            notes.append(f"{w['way']}: {w['error']}")
    return "\n".join(lines + [f"  {n}" for n in notes])


def text_summary(result: dict) -> str:
    """The method in a few lines for the terminal (the JSON and ``--method`` have it all)."""
    return "\n".join(
        [
            "Method: in brief (in full: vnflab bench --http --method, or the JSON's):",
            *[f"  {line}" for line in result.get("method_brief") or []],
            f"  bound by: {BOUND_BY_RULES.split('; else')[0]}; ... (rules in full: --method)",
        ]
    )


if __name__ == "__main__":
    sys.exit(inside_main(*sys.argv[1:]))
