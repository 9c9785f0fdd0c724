"""What one ``vnflab bench`` invocation measures: the ways, runs, window, flows, io options.

``BenchSpec`` crosses the sandbox boundary as JSON (``dataclasses.asdict``), so it holds plain
values only. The cores are fixed: the generator on ``GEN_CPU``, the LB on ``LB_CPU``; on the
lab's 2-core machines that is all there is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

GEN_CPU, LB_CPU = 0, 1
WAYS = ("socket", "afpacket", "dpdk")
WHOLE_CORE_FRACTIONS = (0.3, 0.6, 0.9, 1.2)  # offered load, relative to the saturation rate
# io options of the DPDK LB that the bench sets itself (not overridable through dpdk_io)
DPDK_IO_OWNED = ("vdev", "vhost_socket", "style", "burst", "batch")


@dataclass
class BenchSpec:
    ways: list[str] = field(default_factory=lambda: ["socket"])
    runs: int = 5
    seconds: float = 3.0
    batches: list[int] | None = None  # io "batch" sweep (afpacket, dpdk)
    flows: int = 1024
    payload: int = 18  # UDP payload bytes (60-byte frames)
    whole_core: bool = True
    warmup_s: float = 0.5
    timeout_s: float = 1800.0
    baseline: str | None = None  # "testpmd": dpdk-testpmd io on the same vdevs (dpdk)
    style: str = "vector"  # AF_PACKET style: "vector" (reference) or "perpacket"
    tx: str = "sendmmsg"  # AF_PACKET transmit: "sendmmsg" (reference) or "ring"
    dpdk_io: dict | None = None  # extra io options of the DPDK LB (model, lcores, queues)

    def variants(self) -> list[tuple[str, int | None]]:
        """(way, batch) pairs, one per table row: each way once, or once per batch size."""
        out: list[tuple[str, int | None]] = []
        for way in self.ways:
            if self.batches and way != "socket":
                out += [(way, b) for b in self.batches]
            else:
                out.append((way, None))
        return out

    def validate(self, known_ways: Iterable[str] = WAYS) -> BenchSpec:
        known_ways = tuple(known_ways)
        if self.style not in ("vector", "perpacket"):
            raise ValueError(f"style: must be vector or perpacket, got {self.style!r}")
        if self.tx not in ("sendmmsg", "ring"):
            raise ValueError(f"tx: must be sendmmsg or ring, got {self.tx!r}")
        for w in self.ways:
            if w not in known_ways:
                raise ValueError(f"way: must be one of {', '.join(known_ways)}, got {w!r}")
        if len(set(self.ways)) != len(self.ways):
            raise ValueError(f"way: listed twice in {self.ways}")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise ValueError(f"runs: need at least 1, got {self.runs!r}")
        if not self.seconds > 0:
            raise ValueError(f"seconds: must be > 0, got {self.seconds!r}")
        if self.batches is not None and any(
            (not isinstance(b, int)) or b < 1 for b in self.batches
        ):
            raise ValueError(f"batch: whole numbers >= 1, got {self.batches!r}")
        if not 1 <= self.flows <= 60000:
            raise ValueError(f"flows: 1..60000, got {self.flows!r}")
        if self.baseline not in (None, "testpmd"):
            raise ValueError(f"baseline: only 'testpmd' is known, got {self.baseline!r}")
        if self.dpdk_io is not None:
            if not isinstance(self.dpdk_io, dict):
                raise ValueError(f"dpdk_io: a dict of io options, got {self.dpdk_io!r}")
            owned = sorted(set(self.dpdk_io) & set(DPDK_IO_OWNED))
            if owned:
                raise ValueError(
                    f"dpdk_io: {', '.join(owned)} set by the bench itself "
                    f"(burst: use batches; both styles are measured)"
                )
            if self.dpdk_io.get("model", "rtc") not in ("rtc", "pipeline"):
                raise ValueError(
                    f"dpdk_io: model must be rtc or pipeline, got {self.dpdk_io['model']!r}"
                )
            for k in ("lcores", "queues"):
                v = self.dpdk_io.get(k, 1)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"dpdk_io: {k} must be a whole number >= 1, got {v!r}")
        return self


def variant_label(way: str, batch: int | None) -> str:
    """A table row's name: ``afpacket`` or ``afpacket(batch=32)``."""
    return way if batch is None else f"{way}(batch={batch})"


def parse_io_options(text: str) -> dict:
    """``"model=pipeline,lcores=2,queues=2"`` -> ``{"model": "pipeline", "lcores": 2,
    "queues": 2}`` (``vnflab bench --dpdk-io``): key=value pairs, whole numbers as ints."""
    out: dict = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ValueError(f"dpdk-io: expected key=value, got {item!r}")
        if key in out:
            raise ValueError(f"dpdk-io: {key} given twice")
        out[key] = int(value) if re.fullmatch(r"[+-]?\d+", value) else value
    return out


def estimate_seconds(spec: BenchSpec) -> float:
    """Roughly how long the bench takes (printed up front; the sandbox's timeout is twice it)."""
    per_run = spec.warmup_s + spec.seconds + 3.0
    if spec.whole_core:
        per_run += len(WHOLE_CORE_FRACTIONS) * (spec.seconds + 0.5)
    return 15 + per_run * spec.runs * len(spec.variants())
