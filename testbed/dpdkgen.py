"""A DPDK traffic generator on the vhost-user side of a DPDK LB's virtio-user port.

The DPDK way cannot be measured through veth (veth caps near 0.5 Mpps), so a second DPDK
process plays the wire: it owns a ``net_vhost`` server socket, the LB connects to it with
``net_virtio_user``, and the generator (the binding's C ``gen_loop``) sends copies of prebuilt
UDP frames to VIP:SERVICE_PORT (flow i on queue i % queues, one source address and port per
flow) as fast as the port takes them, and frees whatever comes back: it is also the sink. It
counts what it tried, sent and got back, so a measurement can be cross-checked against it, and
how often the port refused all or part of a burst: back-pressure, the LB not draining its ring
as fast as the generator fills it, i.e. the LB, not the generator, sets the pace.

Used by ``vnflab bench`` (``bench.dpdk``) and by the grader's DPDK cost window::

    gen = DpdkGenerator(sock, queues=1, flows=1024).start()   # listening on sock
    ...start the LB on net_virtio_user0,path=sock...
    gen.wait_ready()                                          # the LB connected
    gen.go(seconds)                                           # send for that long
    a = gen.counts()             # the running totals, at a window's start ...
    b = gen.counts()             # ... and end: window(a, b) says what happened in between
    counts = gen.result()        # the whole run: {"tried", "tx", "rx", "short", ..., "seconds"}
    gen.stop()

The running totals live in a shared memory block (a memfd the generator maps and the C loop
stores into every few bursts), so reading them costs the generator nothing and needs no
message to it.

The generator itself runs in its own process: ``python -m testbed.dpdkgen SOCK --queues Q
--flows N --payload B --cpu C``. It prints ``listening``, then ``up`` once a peer connected,
reads the seconds to send from stdin, and prints ``GEN {json counts}``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import struct
import subprocess
import sys
import time

from testbed.frames import udp_frame
from testbed.process import expect_line, stop_process
from testbed.procfs import process_cpu_seconds
from vnf.addresses import LB_MAC, SERVICE_PORT, VIP

GEN_MAC = "02:00:00:00:01:01"  # the generator's source MAC (any locally administered one)
MEM_MB = 128  # its huge-page memory
BURST = 32
# the C loop's running totals, in this order (uint64 each): see gen_loop in vnf/dpdk/_dpdk.c
COUNTERS = ("tried", "tx", "rx", "nomem", "short", "bursts")
_COUNTERS_FORMAT = f"={len(COUNTERS)}Q"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flow_frames(flows: int, payload: int, dst_mac: str = LB_MAC) -> list[bytes]:
    """One frame per flow: source address 10.1.x.y and source port vary, VIP:SERVICE_PORT."""
    data = b"VNFLBENCH".ljust(payload, b".")
    return [
        udp_frame(
            GEN_MAC,
            dst_mac,
            f"10.1.{i // 250}.{i % 250 + 1}",
            VIP,
            10000 + i % 50000,
            SERVICE_PORT,
            data,
        )
        for i in range(flows)
    ]


class DpdkGenerator:
    """The generator process, driven from the measuring side (see the module docstring).

    ``cpu``: the core it is pinned to (the LB takes another). ``log_path``: its stderr."""

    def __init__(
        self,
        sock: str,
        queues: int = 1,
        flows: int = 1024,
        payload: int = 18,
        cpu: int = 0,
        log_path: str | None = None,
        mem_mb: int = MEM_MB,
    ):
        self.sock, self.queues, self.flows, self.payload = sock, queues, flows, payload
        self.cpu, self.log_path, self.mem_mb = cpu, log_path, mem_mb
        self.proc: subprocess.Popen | None = None
        self.seconds: float | None = None
        self.live: mmap.mmap | None = None  # the running totals, shared with the process

    def start(self, timeout: float = 60) -> DpdkGenerator:
        """Start the process; return once its vhost socket listens (a peer may connect)."""
        argv = [
            "taskset",
            "-c",
            str(self.cpu),
            sys.executable,
            "-m",
            "testbed.dpdkgen",
            self.sock,
            "--queues",
            str(self.queues),
            "--flows",
            str(self.flows),
            "--payload",
            str(self.payload),
            "--cpu",
            str(self.cpu),
            "--mem-mb",
            str(self.mem_mb),
        ]
        fd = os.memfd_create("vnflab-gen-counters")
        err = open(self.log_path, "wb") if self.log_path else None
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *sys.path]))
        try:
            os.ftruncate(fd, struct.calcsize(_COUNTERS_FORMAT))
            self.live = mmap.mmap(fd, struct.calcsize(_COUNTERS_FORMAT))
            self.proc = subprocess.Popen(
                [*argv, "--counters-fd", str(fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL if err is None else err,
                text=True,
                env=env,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)
            if err is not None:
                err.close()
        try:
            expect_line(self.proc, "listening", "the DPDK generator", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the peer (the LB's virtio-user port) has connected: the link is up."""
        assert self.proc is not None, "start() first"
        expect_line(self.proc, "up", "the DPDK generator", timeout)

    def go(self, seconds: float) -> None:
        """Send flat out for ``seconds`` (returns at once; ``result`` waits for the end)."""
        self.seconds = seconds
        assert self.proc is not None and self.proc.stdin is not None, "start() first"
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()

    def counts(self) -> dict:
        """Its running totals now (zero before ``go``): frames it tried to send (``tried``),
        the port took (``tx``), came back (``rx``); bursts it could not fill for want of mbufs
        (``nomem``); tx bursts tried (``bursts``) and those the port took only part of
        (``short``). Stored every few bursts: a few microseconds old at most."""
        assert self.live is not None, "start() first"
        return dict(zip(COUNTERS, struct.unpack_from(_COUNTERS_FORMAT, self.live)))

    def cpu_s(self) -> float:
        """Its on-CPU seconds so far (every thread): over a window, against the wall time, it
        says whether the generator had its core or was itself held back by other work."""
        assert self.proc is not None, "start() first"
        return process_cpu_seconds(self.proc.pid)

    def result(self, timeout: float | None = None) -> dict:
        """Its counts once the sending is over: {"tried", "tx", "rx", "nomem", "short",
        "bursts", "seconds"} (as ``counts``, for the whole run, and the seconds it sent)."""
        if timeout is None:
            timeout = (self.seconds or 0) + 30
        assert self.proc is not None, "start() first"
        line = expect_line(self.proc, "GEN ", "the DPDK generator", timeout)
        self.proc.wait(10)
        return json.loads(line[4:])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
        if self.live is not None:
            self.live.close()
            self.live = None

    def __enter__(self) -> DpdkGenerator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def window(a: dict, b: dict) -> dict:
    """What the generator did between two ``counts`` snapshots: ``sent`` (frames the LB's ring
    took), ``returned`` (frames that came back from the LB), ``tried``, and ``back_pressure``,
    the share of its tx bursts the port took only in part or not at all (None with no burst):
    near 1 when the LB is the bottleneck (its ring stays full), near 0 when the generator is
    (the LB drains whatever arrives)."""
    d = {k: b[k] - a[k] for k in COUNTERS}
    return {
        "sent": d["tx"],
        "returned": d["rx"],
        "tried": d["tried"],
        "back_pressure": round(d["short"] / d["bursts"], 4) if d["bursts"] > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m testbed.dpdkgen", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("sock", help="the net_vhost server socket to listen on")
    ap.add_argument("--queues", type=int, default=1)
    ap.add_argument("--flows", type=int, default=1024)
    ap.add_argument("--payload", type=int, default=18, help="UDP payload bytes (60-byte frames)")
    ap.add_argument("--cpu", type=int, default=0, help="the EAL core (pin with taskset too)")
    ap.add_argument("--mem-mb", type=int, default=MEM_MB)
    ap.add_argument("--peer-timeout", type=float, default=60)
    ap.add_argument("--counters-fd", type=int, help="a memfd to keep the running totals in")
    a = ap.parse_args(argv)
    from vnf import dpdk

    dpdk.init(cores=[a.cpu], mem_mb=a.mem_mb, reserve_hugepages=True)
    pool = dpdk.pool(n=16383)
    port = dpdk.Port.open(f"net_vhost0,iface={a.sock},queues={a.queues}", pool, a.queues, a.queues)
    frames = flow_frames(a.flows, a.payload)
    print("listening", flush=True)
    deadline = time.monotonic() + a.peer_timeout
    while not port.link()["up"]:
        if time.monotonic() > deadline:
            raise SystemExit("no peer on the vhost socket")
        time.sleep(0.02)
    print("up", flush=True)
    seconds = float(sys.stdin.readline())
    live = None
    if a.counters_fd is not None:
        live = mmap.mmap(a.counters_fd, struct.calcsize(_COUNTERS_FORMAT))
    counts = dpdk.gen_loop(port.id, pool, frames, a.queues, BURST, seconds, counters=live)
    print("GEN " + json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
