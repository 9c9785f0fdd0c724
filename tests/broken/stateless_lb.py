"""A deliberately broken LB for the pool-change judge's self-test: no flow table at all.

Every packet asks the pool (Maglev: ``pool.choose(flow)``), so every packet of a flow reaches
the same backend as long as the pool stays the same: the plain affinity check cannot tell it
from a correct LB. Across a pool change it moves flows (an added backend takes ~1/N of them, a
drained backend loses its own, a recovered one takes its flows back), which
``testbed.checker.judge_pool_change`` must report.

    python tests/broken/stateless_lb.py WAY --config ... (the way contract, WAY first)
"""

import importlib
import sys

from vnf.lb import NO_BACKEND, LoadBalancer

# the ways' programs; each must run a style that calls backend_for (DPDK: io style perpacket)
PROGRAMS = {"socket": "SocketLB", "afpacket": "AfPacketLB", "dpdk": "DpdkLB"}


class StatelessLoadBalancer(LoadBalancer):
    def backend_for(self, flow, now):
        self.packets += 1
        backend = self.pool.choose(flow)  # no lookup, nothing remembered
        if backend is None:
            self.dropped[NO_BACKEND] += 1
            return None
        self.forwarded += 1
        return backend


def main() -> None:
    way = sys.argv.pop(1)
    program = getattr(importlib.import_module(f"vnf.ways.{way}_lb"), PROGRAMS[way])

    class Stateless(program):
        balancer_class = StatelessLoadBalancer

    Stateless.main()


if __name__ == "__main__":
    main()
