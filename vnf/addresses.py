"""The addressing plan that every part of vnflab shares, defined once (the lowest layer).

One service, ``VIP:SERVICE_PORT``, over TCP (HTTP) and UDP, in one /24: the LB host at
``LB_IP`` with ``LB_MAC``, clients at .11 and up, backends at .101 and up (``topologies.lb``
builds the rest of the plan from these).
"""

SUBNET = "10.0.0.0/24"
VIP = "10.0.0.100"
SERVICE_PORT = 8080
LB_IP = "10.0.0.1"
LB_MAC = "02:00:00:00:00:01"
