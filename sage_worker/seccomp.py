"""The system calls a session may not make, as a seccomp filter.

A session runs as an unprivileged uid in namespaces the worker made; what is
left that could widen its reach is the kernel's own surface: creating more
namespaces (a user namespace hands its creator every capability inside it,
mounts of unbounded tmpfs included), mounting, keyrings, BPF, perf events,
userfaultfd, io_uring. Those calls fail with EPERM; ``clone`` may not ask for
new namespaces, and ``clone3`` (whose flags a filter cannot read) answers
ENOSYS so that the C library falls back to ``clone``.

The filter is a classic BPF program (``struct sock_filter``), built here and
installed with prctl(PR_SET_SECCOMP) after NO_NEW_PRIVS; user code and every
process it starts inherit it and cannot lift it. Only architectures whose
system call numbers are listed here are supported: anything else fails
closed, and the worker then refuses to start.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
# BPF opcodes (linux/bpf_common.h)
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
BPF_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
NR_OFFSET, ARCH_OFFSET, ARG0_LOW_OFFSET = 0, 4, 16
CLONE_NEW_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                   | 0x20000000 | 0x40000000)  # NEWNS CGROUP UTS IPC USER PID NET
X32_BIT = 0x40000000

DENIED = ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "keyctl",
          "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
          "kexec_file_load", "open_by_handle_at", "name_to_handle_at", "fsopen", "fsconfig",
          "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "io_uring_setup",
          "io_uring_enter", "io_uring_register")
# (audit arch, system call numbers)
ARCHITECTURES = {
    "x86_64": (0xC000003E, {
        "clone": 56, "clone3": 435, "unshare": 272, "setns": 308, "mount": 165,
        "umount2": 166, "pivot_root": 155, "chroot": 161, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "kexec_load": 246, "kexec_file_load": 320, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}),
    "aarch64": (0xC00000B7, {
        "clone": 220, "clone3": 435, "unshare": 97, "setns": 268, "mount": 40,
        "umount2": 39, "pivot_root": 41, "chroot": 51, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "kexec_load": 104, "kexec_file_load": 294, "open_by_handle_at": 265,
        "name_to_handle_at": 264, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}),
}


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes:
    """The filter for ``machine`` (this one's by default), as bytes."""
    machine = machine or platform.machine()
    if machine not in ARCHITECTURES:
        raise OSError(errno.ENOSYS, f"no seccomp filter for the {machine} architecture")
    arch, numbers = ARCHITECTURES[machine]
    deny = _op(BPF_RET_K, SECCOMP_RET_ERRNO | errno.EPERM)
    ops = [_op(BPF_LD_W_ABS, ARCH_OFFSET),
           _op(BPF_JEQ_K, arch, jt=1),  # another ABI than ours: killed
           _op(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
           _op(BPF_LD_W_ABS, NR_OFFSET)]
    if machine == "x86_64":  # the x32 ABI has its own numbers: refused
        ops += [_op(BPF_JGE_K, X32_BIT, jt=0, jf=1), deny]
    for name in DENIED:
        ops += [_op(BPF_JEQ_K, numbers[name], jt=0, jf=1), deny]
    ops += [_op(BPF_JEQ_K, numbers["clone3"], jt=0, jf=1),
            _op(BPF_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS),
            _op(BPF_JEQ_K, numbers["clone"], jt=0, jf=3),
            _op(BPF_LD_W_ABS, ARG0_LOW_OFFSET),  # clone's flags (their low 32 bits)
            _op(BPF_JSET_K, CLONE_NEW_FLAGS, jt=0, jf=1),
            deny,
            _op(BPF_RET_K, SECCOMP_RET_ALLOW)]
    return b"".join(ops)


def install() -> None:
    """Filter this process (and all it starts). NO_NEW_PRIVS must be set."""
    code = program()
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _Program(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"seccomp: {os.strerror(number)}")
