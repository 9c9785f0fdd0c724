"""Shared test set-up: root-only tests skip cleanly elsewhere; the session checks for leftovers."""

import glob
import os
import shutil
import subprocess

import pytest

try:  # a bounded hypothesis profile for CI: enough examples to find bugs, not to eat minutes
    from hypothesis import settings

    settings.register_profile("ci", max_examples=300, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    skip_root = pytest.mark.skip(reason="needs root (network namespaces, Mininet)")
    for item in items:
        if not IS_ROOT and ("network" in item.keywords or "dpdk" in item.keywords):
            item.add_marker(skip_root)


NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def _nr_hugepages():
    try:
        with open(NR_HUGEPAGES) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _leftovers():
    ovs = subprocess.run(
        ["pgrep", "-x", "ovs-vswitchd"], capture_output=True, text=True
    ).stdout.split()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split(
        "\n"
    )
    return {
        "huge-page files": sorted(glob.glob("/dev/hugepages/*")),
        "DPDK runtime dirs": sorted(glob.glob("/var/run/dpdk/*")),
        "named network namespaces": sorted(n.split()[0] for n in netns if n.strip()),
        "ovs-vswitchd processes": ovs,
        "veth/bridge interfaces in the root namespace": sorted(
            os.path.basename(p)
            for p in glob.glob("/sys/class/net/*")
            if os.path.basename(p).split("-")[0] in {"c1", "c2", "lb", "b1", "s1"}
            or os.path.basename(p).startswith(("s1", "lb-", "vnfl"))
        ),
    }


@pytest.fixture(scope="session", autouse=True)
def no_leftovers():
    """Every run must clean up after itself, also when it fails: checked once for the session."""
    before = _leftovers()
    hugepages_before = _nr_hugepages()
    yield
    if hugepages_before is not None and IS_ROOT:
        # DPDK tests reserve huge pages as they need them; give the machine its count back
        # (the kernel only releases pages nobody uses).
        try:
            with open(NR_HUGEPAGES, "w") as f:
                f.write(str(hugepages_before))
        except OSError:
            pass
    after = _leftovers()
    new = {k: sorted(set(v) - set(before[k])) for k, v in after.items()}
    new = {k: v for k, v in new.items() if v}
    assert not new, f"the test session left things behind: {new}"


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)


def have(cmd):
    return shutil.which(cmd) is not None
