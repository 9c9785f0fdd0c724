"""``vnflab.sandbox``: every experiment in its own net + pid + mount namespaces.

The mechanism lives once in :mod:`vnf.sandbox` (the DPDK binding's ``vnf.dpdk.sandbox`` is built
on it too, and ``vnf`` must not import ``vnflab``); this module keeps the orchestration's
historical name. Read ``vnf/sandbox.py`` for why namespaces and what is made private.
"""
from vnf.sandbox import (EXPERIMENT, HUGEPAGES, PRIVATE_TMPFS, UNSHARE, SandboxError,  # noqa: F401
                         can_sandbox, command, in_sandbox, leftovers, popen, reexec_in_sandbox,
                         run, run_module_in_sandbox, sandboxed, serve_module,
                         setup_inside)
