"""A deliberately broken LB for the checker's self-test: round-robin on *every packet*.

It is the socket LB with the flow table bypassed, so consecutive packets of one flow land on
different backends: the affinity check must report split flows.
"""

import itertools

from vnf.ways.socket_lb import SocketLB


class PerPacketRoundRobinLB(SocketLB):
    way = "broken-rr"

    def setup(self):
        super().setup()
        backends = itertools.cycle(self.config.backends)

        class ForgetfulNF:  # stands in for LoadBalancer: no memory of flows at all
            def backend_for(self, flow, now):
                return next(backends)

            def stats(self):
                return {}

        self.lb = ForgetfulNF()


if __name__ == "__main__":
    PerPacketRoundRobinLB.main()
