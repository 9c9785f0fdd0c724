"""A steady-rate frame generator for the paced levels of ``vnflab bench`` (the whole-core phase).

    python -m testbed.pacer IFNAME FRAMES --frame-len N --rate PPS [--seconds S] [--batch B]

FRAMES is a file of pre-built frames, back to back, ``frame-len`` bytes each; they are sent in
turn, over and over, from an AF_PACKET socket bound to IFNAME, at ``rate`` frames per second.

Why not trafgen's ``--rate``: it sends each second's packets in one burst at full speed and then
waits for the next second (measured: 114,312 frames in the first ~400 ms of every second at
114 kpps "paced"). A burst like that overflows a socket's receive buffer even when the average
rate is a fraction of what the load balancer can do, so the "paced" levels measured bursts, not
a rate. Here the C loop (``vnf.afpacket.ring.paced_send``) hands the kernel ``batch`` frames
every ``batch / rate`` seconds (about every 40 us by default), like a NIC that coalesces a few
packets per interrupt. trafgen stays the generator for the saturation window, where flat out is
the point.
"""

from __future__ import annotations

import argparse
import socket
import sys

from vnf.afpacket.ring import PACKET_QDISC_BYPASS, SOL_PACKET, paced_send

BATCH_INTERVAL_S = 40e-6  # about one sendmmsg per 40 us, whatever the rate
MAX_BATCH = 32


def default_batch(rate_pps: float) -> int:
    """Frames per sendmmsg so that batches leave about every 40 us (1..32)."""
    return max(1, min(MAX_BATCH, round(rate_pps * BATCH_INTERVAL_S)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.pacer", description=__doc__.split("\n")[0])
    ap.add_argument("ifname")
    ap.add_argument("frames", help="file of frames, back to back, --frame-len bytes each")
    ap.add_argument("--frame-len", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True, help="frames per second")
    ap.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    ap.add_argument("--batch", type=int, default=None, help="frames per sendmmsg")
    args = ap.parse_args(argv)
    with open(args.frames, "rb") as f:
        frames = f.read()
    if args.frame_len < 14 or len(frames) < args.frame_len or len(frames) % args.frame_len:
        ap.error(
            f"frames: {len(frames)} bytes is not a whole number of {args.frame_len}-byte frames"
        )
    if args.rate <= 0:
        ap.error("rate: must be > 0")
    batch = args.batch or default_batch(args.rate)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:  # protocol 0: send only
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)  # as trafgen does
        sock.bind((args.ifname, 0))
        sent = paced_send(sock.fileno(), frames, args.frame_len, args.rate, args.seconds, batch)
    print(f"sent {sent} frames at {args.rate:g}/s target, {batch} per sendmmsg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
