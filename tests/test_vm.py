"""The VM recipe: valid cloud-config and a Vagrantfile that both run the one installer."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VM = os.path.join(ROOT, "vm")


def test_user_data_is_cloud_config_running_install_sh():
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(VM, "user-data.yaml")) as f:
        text = f.read()
    assert text.startswith("#cloud-config\n")  # cloud-init ignores user-data without it
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    assert set(doc) <= {"package_update", "packages", "write_files", "runcmd", "final_message"}
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    setup = files["/usr/local/sbin/vnflab-vm-setup"]
    assert re.search(r"bash /opt/vnflab/scripts/install\.sh --hugepages \d+ --jupyter", setup)
    assert any(
        "vnflab-vm-setup" in " ".join(c if isinstance(c, list) else [c]) for c in doc["runcmd"]
    )
    assert "git" in doc["packages"]
    # the setup script embedded in the YAML is valid bash
    assert subprocess.run(["bash", "-n"], input=setup, text=True).returncode == 0


def test_vagrantfile_runs_install_sh_on_both_boxes():
    with open(os.path.join(VM, "Vagrantfile")) as f:
        text = f.read()
    assert '"debian/bookworm64"' in text and "ubuntu-24.04" in text
    assert "scripts/install.sh --hugepages" in text and "--jupyter" in text
    assert "vb.cpus" in text and "vb.memory" in text


def test_install_sh_vm_options():
    """The options the recipe passes exist (CI runs install.sh without them)."""
    script = os.path.join(ROOT, "scripts", "install.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    bad = subprocess.run(["bash", script, "--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--hugepages N" in bad.stderr and "--jupyter" in bad.stderr
    with open(script) as f:
        text = f.read()
    assert "/etc/sysctl.d/80-vnflab-hugepages.conf" in text and "hugetlbfs" in text
    assert "vnflab-jupyter.service" in text and "--ip=127.0.0.1" in text
