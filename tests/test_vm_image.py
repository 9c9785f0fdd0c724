"""The VM image (vm/build.sh, vm/boot-test.sh): cheap checks always; the real build and boot
only with VNFLAB_VM_IMAGE_TEST=1 (root, QEMU, 30-60 minutes on 2 cores under TCG)."""

import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VM = os.path.join(ROOT, "vm")
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"


@pytest.mark.parametrize("script", ["build.sh", "boot-test.sh", "image-setup.sh", "ovf.sh"])
def test_vm_scripts_are_valid_bash(script):
    assert subprocess.run(["bash", "-n", os.path.join(VM, script)]).returncode == 0


def test_build_sh_rejects_bad_arguments_before_doing_anything():
    for argv in (["--arch", "sparc", "/tmp/x"], ["--format", "iso", "/tmp/x"], ["--no-such"], []):
        r = subprocess.run(
            ["bash", os.path.join(VM, "build.sh"), *argv], capture_output=True, text=True
        )
        assert r.returncode == 2, (argv, r.stderr)


def test_image_setup_runs_the_one_installer():
    with open(os.path.join(VM, "image-setup.sh")) as f:
        text = f.read()
    assert "bash scripts/install.sh --hugepages 256 --jupyter" in text
    assert "vnflab release /home/student/labs" in text


def test_ovf_descriptor_is_well_formed_and_matches_the_disk(tmp_path):
    vmdk = tmp_path / "vnflab-amd64-disk1.vmdk"
    vmdk.write_bytes(b"x" * 1234)
    out = subprocess.run(
        ["bash", os.path.join(VM, "ovf.sh"), "vnflab-amd64", "amd64", str(vmdk), str(20 * 2**30)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env = ET.fromstring(out)
    f = env.find(f"{OVF}References/{OVF}File")
    assert f.get(f"{OVF}href") == vmdk.name and f.get(f"{OVF}size") == "1234"
    disk = env.find(f"{OVF}DiskSection/{OVF}Disk")
    assert disk.get(f"{OVF}capacity") == str(20 * 2**30)
    assert disk.get(f"{OVF}format").endswith("#streamOptimized")


def test_cli_vm_subcommand_passes_the_arguments_through():
    from vnflab.cli import build_parser

    args = build_parser().parse_args(
        ["vm", "build", "/out", "--arch", "arm64", "--format", "qcow2"]
    )
    assert args.action == "build" and args.args == ["/out", "--arch", "arm64", "--format", "qcow2"]


@pytest.mark.vmimage
@pytest.mark.skipif(
    os.environ.get("VNFLAB_VM_IMAGE_TEST") != "1",
    reason="builds and boots the VM image: set VNFLAB_VM_IMAGE_TEST=1 (root, QEMU)",
)
def test_image_boots_and_runs_the_labs(tmp_path):
    """VNFLAB_VM_IMAGE=path/to/vnflab-amd64.qcow2 tests that image; otherwise one is built."""
    image = os.environ.get("VNFLAB_VM_IMAGE")
    if not image:
        if os.geteuid() != 0:
            pytest.skip("building the image needs root")
        subprocess.run(
            ["bash", os.path.join(VM, "build.sh"), str(tmp_path), "--format", "qcow2"], check=True
        )
        image = str(tmp_path / "vnflab-amd64.qcow2")
    r = subprocess.run(
        [
            "bash",
            os.path.join(VM, "boot-test.sh"),
            image,
            "--ways",
            os.environ.get("VNFLAB_VM_WAYS", "socket"),
        ],
        capture_output=True,
        text=True,
    )
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "boot to login prompt" in r.stdout
