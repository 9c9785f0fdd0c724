"""Loading a tiny eBPF program with bpf(2) from Python: no compiler, no libbpf.

The bench's sink is ``return TC_ACT_SHOT`` (two instructions) at the tc ingress of the switch
port facing the LB, so every frame the LB transmits is dropped where its wire ends (see
``bench.kernel``). Two instructions are easier to write out as bytes than to build with clang;
``load_program`` hands them to the kernel's verifier and ``pin`` gives the program a path in
the bpf file system, where ``tc filter ... object-pinned PATH`` picks it up.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

BPFFS = "/sys/fs/bpf"
BPF_PROG_LOAD, BPF_OBJ_PIN = 5, 6  # bpf(2) commands
BPF_PROG_TYPE_SCHED_CLS = 3  # a tc classifier
TC_ACT_SHOT = 2  # tc: drop the frame
SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}  # the bpf(2) syscall number per machine

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: bytes) -> int:
    nr = SYSCALL_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"bpf(2) syscall number unknown for {platform.machine()}")
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    return _libc.syscall(nr, cmd, buf, 128)


def insn(opcode: int, regs: int = 0, offset: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction: opcode, dst/src registers, 16-bit offset, 32-bit immediate."""
    return struct.pack("<BBhi", opcode, regs, offset, imm)


def load_program(prog_type: int, insns: bytes, name: str, license: str = "GPL") -> int:
    """BPF_PROG_LOAD: returns the program's file descriptor (close it once pinned or attached).
    The verifier's log comes with the error when the kernel refuses the program."""
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log_buf = ctypes.create_string_buffer(4096)
    attr = struct.pack(
        "<IIQQIIQII16s",
        prog_type,
        len(insns) // 8,
        ctypes.addressof(insn_buf),
        ctypes.addressof(lic),
        1,
        len(log_buf),
        ctypes.addressof(log_buf),
        0,
        0,
        name.encode()[:15],
    )
    fd = _bpf(BPF_PROG_LOAD, attr)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(
            err, f"BPF_PROG_LOAD: {os.strerror(err)} {log_buf.value.decode(errors='replace')}"
        )
    return fd


def pin(fd: int, path: str) -> None:
    """BPF_OBJ_PIN: give the program (or map) ``fd`` a path in the bpf file system."""
    path_buf = ctypes.create_string_buffer(path.encode())
    if _bpf(BPF_OBJ_PIN, struct.pack("<QII", ctypes.addressof(path_buf), fd, 0)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_OBJ_PIN {path}: {os.strerror(err)}")


def load_tc_drop(pin_path: str) -> None:
    """Load ``r0 = TC_ACT_SHOT; exit`` as a tc classifier (direct action) and pin it."""
    mov_r0_imm, exit_ = 0xB7, 0x95  # BPF_ALU64|BPF_MOV|BPF_K, BPF_JMP|BPF_EXIT
    fd = load_program(
        BPF_PROG_TYPE_SCHED_CLS, insn(mov_r0_imm, imm=TC_ACT_SHOT) + insn(exit_), "vnflab_drop"
    )
    try:
        pin(fd, pin_path)
    finally:
        os.close(fd)


def drop_at_ingress(port: str, pin_path: str) -> None:
    """Drop every frame arriving at ``port`` (tc ingress, the pinned drop program): the end of
    a sender's wire, so a benchmark charges it its transmit and nothing downstream. Mounts the
    bpf file system if needed (the sandbox has a mount namespace of its own). Raises OSError
    when tc or BPF is unavailable."""
    import subprocess

    os.makedirs(BPFFS, exist_ok=True)
    if not os.path.ismount(BPFFS):
        subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=True, capture_output=True)
    if not os.path.exists(pin_path):
        load_tc_drop(pin_path)
    for argv in (
        ["tc", "qdisc", "add", "dev", port, "clsact"],
        [
            "tc",
            "filter",
            "add",
            "dev",
            port,
            "ingress",
            "bpf",
            "direct-action",
            "object-pinned",
            pin_path,
        ],
    ):
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode:
            raise OSError(f"{' '.join(argv)}: {(out.stdout + out.stderr).strip()[:300]}")


def stop_dropping(port: str) -> None:
    """Undo ``drop_at_ingress`` (the clsact qdisc takes its filter with it)."""
    import subprocess

    subprocess.run(["tc", "qdisc", "del", "dev", port, "clsact"], capture_output=True)
