"""Build the two compiled layers vnflab provides (everything else is pure Python).

* ``vnf._fastpath``: batch parse / flow hash / rewrite over packet buffers, plain C, no
  dependencies. The AF_PACKET and DPDK ways use it; it mirrors ``vnf/packet.py`` exactly.
* ``vnf.afpacket._ring``: walks TPACKET_V3 ring blocks and fills the TX ring in C, so the
  Python loop of way 2 touches each packet once (for the flow-table lookup).
* ``vnf.dpdk._dpdk``: the DPDK binding. ``rte_eth_rx_burst``/``tx_burst`` are static inline
  functions in DPDK's headers, so a binding must be compiled against them (dlopen cannot
  reach them). Built only when ``pkg-config libdpdk`` answers (Debian: ``libdpdk-dev``);
  without it vnflab still installs and the DPDK way reports that the binding is missing.
"""

import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
NF_H = "vnf/csrc/nf.h"  # every extension includes it: a change there rebuilds them all
CFLAGS = ["-O3", "-std=gnu11", "-Wall", "-Wno-unused-function"]


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return shlex.split(out.stdout)


def extensions():
    exts = []
    if os.path.exists(os.path.join(HERE, "vnf/csrc/fastpath.c")):
        exts.append(
            Extension(
                "vnf._fastpath",
                ["vnf/csrc/fastpath.c"],
                depends=[NF_H],
                include_dirs=["vnf/csrc"],
                extra_compile_args=CFLAGS,
            )
        )
    if os.path.exists(os.path.join(HERE, "vnf/afpacket/_ring.c")):
        exts.append(
            Extension(
                "vnf.afpacket._ring",
                ["vnf/afpacket/_ring.c"],
                depends=[NF_H],
                include_dirs=["vnf/csrc"],
                extra_compile_args=CFLAGS,
            )
        )
    dpdk_src = os.path.join(HERE, "vnf/dpdk/_dpdk.c")
    if os.path.exists(dpdk_src):
        cflags, libs = pkg_config("--cflags", "libdpdk"), pkg_config("--libs", "libdpdk")
        if cflags is None or libs is None:
            print(
                "vnflab: pkg-config libdpdk not found; building without the DPDK binding "
                "(install libdpdk-dev for way 3)",
                file=sys.stderr,
            )
        else:
            exts.append(
                Extension(
                    "vnf.dpdk._dpdk",
                    ["vnf/dpdk/_dpdk.c"],
                    depends=[NF_H],
                    include_dirs=["vnf/csrc"],
                    extra_compile_args=CFLAGS + cflags,
                    extra_link_args=libs,
                )
            )
    return exts


setup(ext_modules=extensions())
