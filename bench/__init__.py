"""``vnflab bench``: per-packet cost of the ways, measured side by side in one run.

It builds on the testbed (topology, traffic, generators) and the NF; the grader and the command
line use it, never the other way round.
"""
