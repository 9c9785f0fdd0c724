"""The provided part of way 3's LB program (``vnf/ways/dpdk_lb.py``, lab 3): everything around
the student's poll loop and forward functions.

:class:`DpdkProgram` parses the io options, starts DPDK's EAL (huge pages, a mempool), opens the
``net_virtio_user`` port and waits for its link, gives each polling lcore its own
``LoadBalancer``, starts the loops on their lcores, and writes the stats (busy cycles per packet
included: the grader's cost figure). ``vnf.ways.dpdk_lb.DpdkLB`` adds the run-to-completion poll
loop and the two styles of the per-burst work that lab 3 writes.

Three styles of the per-burst work (``io.style``); the lab writes the first two:

* ``perpacket``: what a student writes first. For each packet of the burst: ``burst.flow(i)``
  (the C parser's 5-tuple as a plain tuple), ``lb.is_for_service``, ``lb.backend_for`` (a flow
  table hit), ``burst.set_macs_at``. Python per packet: the DPDK I/O is nearly free, the Python
  is not (``vnflab bench`` prints the cost of each of these steps).
* ``vector`` (default): no Python per packet. The C parser fills numpy arrays for the whole
  burst (5-tuple, flow hash), ``lb.backends_for_batch`` does the service check and the lookup
  in a hash-indexed flow cache for the whole burst in one C call (``vnf.batch``; only new flows
  take Python), and C rewrites the MACs. What is left per burst is a fixed cost (a handful of
  Python calls), so the cost per packet falls as the burst grows.
* ``fused`` (vnflab's provided fast path, run to completion only): the same steps fused into
  one C function, and the poll loop itself in C (``vnf.dpdk.FusedForward``,
  :meth:`DpdkProgram.fused_poll_loop`): kernel fusion removes the per-step Python calls and
  touches each packet while it is hot; Python runs every ~1000 polls, and for new flows.

Two execution models (``io.model``):

* ``rtc`` (run to completion, default): each lcore polls its own RX queue and does everything
  for its packets (``DpdkLB.poll_loop``), with its own ``LoadBalancer`` (its own flow table: no
  shared state). Which queue a flow arrives on is the sender's choice: OVS-DPDK picks a vhost
  queue **per PMD thread**, not per flow hash, so with one PMD everything arrives on queue 0;
  the multi-queue case needs a generator that spreads flows over the queues by flow
  (``vnflab bench``'s does).
* ``pipeline``: an RX lcore polls all RX queues and hands bursts through an ``rte_ring`` to
  worker lcore(s) (by queue, so a flow always meets the same worker and flow table), which
  decide, rewrite and transmit on their own TX queue.

The GIL: ``lcores > 1`` runs Python threads pinned to the lcores (``dpdk.run_workers``), but only
one thread runs Python at a time, so extra lcores add no Python throughput; they only overlap
the C parts (parse, rewrite, the drivers' copies), which here hold the GIL too (except style
``fused``, whose C poll loop releases it: its lcores do run at the same time). The models are
here to be *measured and explained*, not because threads scale in CPython: real scaling would
be one process per queue.

io options: ``vhost_socket`` (path; the default vdev is
``net_virtio_user0,path=SOCK,server=1,queues=Q,mac=MAC``) or ``vdev`` (any devargs), ``mac``,
``style``, ``model``, ``lcores``, ``queues``, ``burst`` (or ``batch``; default 32), ``mem_mb``,
``cpus`` (CPUs for the lcores; default: the CPUs this process may use), ``link_timeout_s``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial

from vnf import dpdk
from vnf.addresses import LB_MAC
from vnf.lb import LBConfig, LoadBalancer
from vnf.ways.common import LBProgram, fail

EXPIRE_EVERY_S = 1.0
FUSED_POLLS = 1024  # fused: polling rounds per C call (a few ms at full load, less idle)
STYLES = ("vector", "perpacket", "fused")
MODELS = ("rtc", "pipeline")


def _int_option(io: dict, name: str, default: int, low: int, high: int) -> int:
    value = io.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        fail(name, f"must be a whole number from {low} to {high}, got {value!r}")
    return value


class DpdkProgram(LBProgram):
    """Way 3's LB program without its per-burst work: a subclass writes ``poll_loop(lcore)``,
    ``forward_perpacket`` and ``forward_vector`` (see ``vnf.ways.dpdk_lb``)."""

    way = "dpdk"
    port: dpdk.Port  # the DPDK port: setup() opens it, before any loop

    def __init__(self, config: LBConfig, io: dict):
        super().__init__(config, io)
        self.read_options()
        self.src_mac = b""  # its MAC
        self.lbs = [self.lb]  # one LoadBalancer (flow table) per polling lcore
        self.fused: list = []  # style fused: one FusedForward per lcore
        self.sent = [0] * self.lcores  # packets transmitted, per polling lcore
        self.bursts = [0] * self.threads  # bursts handled, per thread
        self.ring_drops = 0  # pipeline: packets the rings refused

    def read_options(self) -> None:
        """The io options (see the module docstring); a bad one exits naming it."""
        io = self.io
        self.style = io.get("style", "vector")
        if self.style not in STYLES:
            fail("style", f"must be one of {', '.join(STYLES)}, got {self.style!r}")
        self.model = io.get("model", "rtc")
        if self.model not in MODELS:
            fail("model", f"must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.style == "fused" and self.model != "rtc":
            fail("style", "fused runs to completion only (model rtc)")
        self.lcores = _int_option(io, "lcores", 1, 1, 8)
        rtc = self.model == "rtc"
        self.queues = _int_option(io, "queues", self.lcores if rtc else 1, 1, 8)
        if rtc and self.queues < self.lcores:
            fail(
                "queues",
                f"run to completion needs a queue per lcore ({self.lcores}), got {self.queues}",
            )
        self.burst = _int_option(io, "burst", io.get("batch", 32), 1, 512)
        # pipeline workers transmit on their own TX queue; virtio pairs RX and TX queues
        self.queues = max(self.queues, self.lcores)
        self.mem_mb = _int_option(io, "mem_mb", 128, 32, 8192)
        mac = io.get("mac") or LB_MAC
        self.vdev: str = io.get("vdev") or ""
        if not self.vdev:
            sock = io.get("vhost_socket") or fail(
                "vhost_socket", "a vhost-user socket path (or a full 'vdev') is required"
            )
            self.vdev = f"net_virtio_user0,path={sock},server=1,queues={self.queues},mac={mac}"
        self.cpus = list(io.get("cpus") or sorted(os.sched_getaffinity(0)))
        self.threads = self.lcores + (0 if rtc else 1)
        self.link_timeout_s = float(io.get("link_timeout_s", 30))

    def setup(self) -> None:
        try:
            dpdk.init(cores=[self.cpus[0]], mem_mb=self.mem_mb, reserve_hugepages=True)
            self.pool = dpdk.pool(n=max(8191, 2048 * (self.queues + self.threads) - 1))
            port = dpdk.Port.open(self.vdev, self.pool, nrxq=self.queues, ntxq=self.queues)
        except (dpdk.HugePagesError, dpdk.DpdkError) as exc:
            fail("vdev" if isinstance(exc, dpdk.DpdkError) else "mem_mb", str(exc))
        self.wait_link(port, self.link_timeout_s)
        self.port = port
        self.src_mac = bytes(port.mac)
        backends = self.config.backends
        self.mac_table = b"".join(b.mac_bytes for b in sorted(backends, key=self.lb.pool.index_of))
        self.lbs += [self.balancer_class(self.config) for _ in range(self.lcores - 1)]
        self.ring_list = (
            [
                dpdk.ring(4096, single_producer=True, single_consumer=True)
                for _ in range(self.lcores)
            ]
            if self.model == "pipeline"
            else []
        )

    def balancers(self) -> list:
        return self.lbs

    def prepare_for_pool(self, pool) -> None:
        """A pool change (control plane): a backend that joins gets its MAC in the table the C
        rewrite indexes by backend number, before the pool that may pick it goes live. The
        fused kernels take the new table when they next refresh (the pool change makes them)."""
        self.mac_table = b"".join(b.mac_bytes for b in pool.by_number())
        for fused in self.fused:
            fused.mac_table = self.mac_table

    def wait_link(self, port, timeout: float) -> None:
        """With server=1 the link comes up when OVS (the vhost-user client) connects."""
        deadline = time.monotonic() + timeout
        while not port.link()["up"]:
            if time.monotonic() > deadline:
                fail("vhost_socket", f"no vhost-user peer connected within {timeout:.0f} s")
            if self.stopping:
                raise SystemExit(1)
            time.sleep(0.05)

    # --- the loops -------------------------------------------------------------------------
    def run(self) -> None:
        targets: list[Callable[[], None]]
        if self.style == "fused":
            targets = [partial(self.fused_poll_loop, i) for i in range(self.lcores)]
        elif self.model == "rtc":
            targets = [partial(self.poll_loop, i) for i in range(self.lcores)]
        else:
            targets = [self.rx_loop] + [partial(self.worker_loop, i) for i in range(self.lcores)]
        if len(targets) == 1:
            targets[0]()  # the main thread is the EAL main lcore already
        else:
            cores = [self.cpus[i % len(self.cpus)] for i in range(len(targets))]
            dpdk.run_workers(targets, cores)

    def poll_loop(self, lcore: int) -> None:
        raise NotImplementedError("the subclass polls (vnf.ways.dpdk_lb.DpdkLB)")

    def forward_perpacket(self, burst, lb: LoadBalancer, arrays, txq: int, now: float) -> int:
        raise NotImplementedError("the subclass forwards (vnf.ways.dpdk_lb.DpdkLB)")

    def forward_vector(self, burst, lb: LoadBalancer, arrays, txq: int, now: float) -> int:
        raise NotImplementedError("the subclass forwards (vnf.ways.dpdk_lb.DpdkLB)")

    def now_and_then(self, lb: LoadBalancer, next_expire: float) -> float:
        """Every few hundred polls, not per burst (a clock read per burst would cost more than
        it is worth): expire idle flows when due, and if other Python threads run (more lcores,
        pipeline stages) hand them the GIL. Returns when to expire next."""
        now = time.monotonic()
        if now >= next_expire:
            lb.expire(now)
            next_expire = now + EXPIRE_EVERY_S
        if len(self.bursts) > 1:
            time.sleep(0)
        return next_expire

    def fused_poll_loop(self, lcore: int) -> None:
        """Run to completion with kernel fusion (style ``fused``; vnflab's provided fast path,
        not part of the lab): the poll loop itself is C (``FlowKernel.poll``: rx, parse, decide
        from the flow cache, rewrite, tx, ``FUSED_POLLS`` rounds per call, GIL released).
        Python runs once per call, for what the loop in ``DpdkLB.poll_loop`` does now and then
        (stop, expiry, pool changes), and per burst only when a burst has drops or new flows.
        The separate calls of ``forward_vector`` each cost a fixed amount of Python, which at
        32 packets per burst weighs as much as the C work: this is the style without them."""
        lb, n = self.lbs[lcore], self.burst
        queues = tuple(range(lcore, self.queues, self.lcores))
        fused = dpdk.FusedForward(
            lb, dpdk.ParseArrays(n), self.mac_table, self.src_mac, self.port.id
        )
        self.fused.append(fused)
        buf = dpdk.Burst(n)
        next_expire = time.monotonic() + EXPIRE_EVERY_S
        while not self.stopping:
            sent, bursts = fused.refresh().poll(buf, queues, FUSED_POLLS)  # picks up pool changes
            self.sent[lcore] += sent
            self.bursts[lcore] += bursts
            next_expire = self.now_and_then(lb, next_expire)

    def rx_loop(self) -> None:
        """Pipeline stage 1: poll every RX queue; queue q's bursts go to worker q % lcores."""
        port, n = self.port.id, self.burst
        rx_burst = dpdk.rx_burst
        rings = self.ring_list
        polls = 0
        while not self.stopping:
            for q in range(self.queues):
                burst = rx_burst(port, q, n)
                if burst:
                    k = len(burst)
                    self.ring_drops += k - rings[q % self.lcores].enqueue(burst)
                    self.bursts[-1] += 1
            polls += 1
            if polls & 0xFF == 0:
                time.sleep(0)

    def worker_loop(self, worker: int) -> None:
        """Pipeline stage 2: dequeue from this worker's ring, decide, rewrite, transmit."""
        ring, lb, n = self.ring_list[worker], self.lbs[worker], self.burst
        forward = self.forward_vector if self.style == "vector" else self.forward_perpacket
        arrays = dpdk.ParseArrays(n)
        buf = dpdk.Burst(n)
        next_expire = time.monotonic() + EXPIRE_EVERY_S
        polls = 0
        while not self.stopping:
            burst = ring.dequeue(n, buf)
            if burst:
                now = time.monotonic()
                self.sent[worker] += forward(burst, lb, arrays, worker, now)
                self.bursts[worker] += 1
            polls += 1
            if polls & 0xFF == 0:
                next_expire = self.now_and_then(lb, next_expire)

    # --- stats -------------------------------------------------------------------------------
    def stats(self) -> dict:
        for fused in self.fused:
            fused.fold_counters()  # what C forwarded on its own, into lb's counts
        out = super().stats()
        if len(self.lbs) > 1:
            out["lb_per_lcore"] = [lb.stats() for lb in self.lbs]
            out["lb"] = _merge([lb.stats() for lb in self.lbs])
        return out

    def extra_stats(self) -> dict:
        """The way's counters, and the busy cycles per packet the grader's cost is read from."""
        busy = port_stats = None
        try:  # before setup, no EAL yet: DpdkError
            b = dpdk.busy_stats()
            per = b["per_queue"]
            rx_pkts = sum(v[1] for k, v in per.items() if k != "ring")
            busy = {
                "cycles": b["busy_cycles"],
                "rx_packets": rx_pkts,
                "bursts": b["bursts"],
                "tsc_hz": b["tsc_hz"],
                # every stage's cycles per packet received: pipeline stages add up
                "ns_per_packet": (
                    b["busy_cycles"] / rx_pkts / b["tsc_hz"] * 1e9 if rx_pkts else None
                ),
            }
            port = getattr(self, "port", None)  # None until setup() opened it
            port_stats = port.stats() if port is not None else None
        except dpdk.DpdkError:
            pass
        caches = [lb.batch_cache.stats() for lb in self.lbs if lb.batch_cache is not None]
        return {
            "style": self.style,
            "model": self.model,
            "lcores": self.lcores,
            "queues": self.queues,
            "burst": self.burst,
            "sent": sum(self.sent),
            "bursts": sum(self.bursts),
            "ring_drops": self.ring_drops,
            "mac": ":".join(f"{x:02x}" for x in self.src_mac),
            "busy": busy,
            "port": port_stats,
            "flow_cache": caches,
        }


def _merge(parts: list[dict]) -> dict:
    """Sum the per-lcore LoadBalancer stats (numbers and dicts of numbers)."""
    out = dict(parts[0])
    for p in parts[1:]:
        for k, v in p.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out[k] + v
            elif isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
                out[k] = {kk: out[k].get(kk, 0) + vv for kk, vv in v.items()}
    return out
