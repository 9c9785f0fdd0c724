"""The three ways to move packets through the same load balancer (``vnf.lb.LoadBalancer``).

* ``socket_lb``   — way 1, kernel sockets: the Linux stack does everything, per packet.
* ``afpacket_lb`` — way 2, AF_PACKET TPACKET_V3 rings: raw frames from a ring shared with the
  kernel, polled and processed in batches.
* ``dpdk_lb``     — way 3, DPDK poll-mode driver over virtio-user/vhost-user: no kernel at all.

They differ only in I/O; the decision is always ``LoadBalancer.backend_for``. The program
contract they share is in ``common.py``. Ways 2 and 3 keep only their hot loop and per-batch work
(what labs 2 and 3 hand out); the provided rest of their programs is ``afpacket_program.py`` and
``dpdk_program.py``.
"""
