"""``vnflab bench``: per-packet cost of the ways, measured side by side in one run.

One idea per module: ``spec`` (what to measure), ``kernel`` (the socket and AF_PACKET ways' bed
and driver), ``dpdk`` (the DPDK way's driver; ``binding_io`` its io-forward baseline),
``machine`` (the machine and its drift), ``report`` (summary, table, results page),
``runner`` (the sandboxed run, with the drivers handed in) and ``http`` (``--http``: requests/s
through each way with ``wrk``, and which part bounds them).

It builds on the testbed (topology, traffic, generators) and the NF; the grader and the command
line use it, never the other way round.
"""
