"""The testbed: what vnflab builds around a load balancer to run and measure it.

Topologies in namespaces (``sandbox``, ``experiment``, ``ovsdpdk``), the traffic driver and the
affinity checker (``traffic``, ``checker``), frames and the malformed-frame corpus (``frames``,
``corpus``, ``probe``) and steady-rate generation (``pacer``). It imports the NF (``vnf``) and
the topologies, never the bench, the grader or the command line.
"""
