"""Every OS call the worker makes on processes, mounts and privileges, through
one thin object.

Tests can hand the server or the child setup a stand-in; the real one is
``System``. Linux-only calls (prctl, unshare, mount, capset) go through libc
via ctypes; each failure is an ``OSError`` that names the call.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CAP_LAST_CAP = 40  # capabilities beyond what this kernel knows are skipped
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class System:
    def __init__(self):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.c_ulong, ctypes.c_char_p]

    fork = staticmethod(os.fork)
    kill = staticmethod(os.kill)
    killpg = staticmethod(os.killpg)
    waitpid = staticmethod(os.waitpid)
    setsid = staticmethod(os.setsid)
    getppid = staticmethod(os.getppid)
    setgroups = staticmethod(os.setgroups)
    setgid = staticmethod(os.setgid)
    setuid = staticmethod(os.setuid)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def setrlimit(self, which: int, soft: int, hard: int) -> None:
        resource.setrlimit(which, (soft, hard))

    def _prctl(self, option: int, value: int) -> None:
        self._check(self._libc.prctl(option, value, 0, 0, 0), f"prctl({option})")

    def set_parent_death_signal(self, sig: int = signal.SIGKILL) -> None:
        self._prctl(PR_SET_PDEATHSIG, int(sig))

    def no_new_privileges(self) -> None:
        self._prctl(PR_SET_NO_NEW_PRIVS, 1)

    def unshare(self, flags: int) -> None:
        self._check(self._libc.unshare(flags), "unshare")

    def setns(self, fd: int, nstype: int) -> None:
        self._check(self._libc.setns(fd, nstype), "setns")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None) -> None:
        encode = lambda text: None if text is None else os.fsencode(text)  # noqa: E731
        self._check(self._libc.mount(encode(source), encode(target), encode(fstype), flags,
                                     encode(data)), f"mount {target}")

    def keep_capabilities(self, keep: set[int]) -> None:
        """Drop every capability but ``keep``: from the bounding set (so no
        exec can regain them) and from the permitted and effective sets."""
        for cap in range(CAP_LAST_CAP + 1):
            if cap not in keep and self._libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                errno = ctypes.get_errno()
                if errno != 22:  # EINVAL: a capability this kernel does not have
                    raise OSError(errno, f"prctl(PR_CAPBSET_DROP): {os.strerror(errno)}")
        mask = [0, 0]
        for cap in keep:
            mask[cap // 32] |= 1 << (cap % 32)
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)(*(_CapData(m, m, 0) for m in mask))
        self._check(self._libc.capset(ctypes.byref(header), data), "capset")

    def flush_c_stdio(self) -> None:
        """fflush(NULL): output that C code buffered in stdio reaches the pipes."""
        self._libc.fflush(None)
