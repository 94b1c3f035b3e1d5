"""Every OS call the worker makes on processes, through one thin object.

Tests can hand the server or the child setup a stand-in; the real one is
``System``. Linux-only calls (prctl, unshare) go through libc via ctypes.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000


class System:
    def __init__(self):
        self._libc = ctypes.CDLL(None, use_errno=True)

    fork = staticmethod(os.fork)
    kill = staticmethod(os.kill)
    killpg = staticmethod(os.killpg)
    waitpid = staticmethod(os.waitpid)
    setsid = staticmethod(os.setsid)
    getppid = staticmethod(os.getppid)
    setgroups = staticmethod(os.setgroups)
    setgid = staticmethod(os.setgid)
    setuid = staticmethod(os.setuid)

    def setrlimit(self, which: int, soft: int, hard: int) -> None:
        resource.setrlimit(which, (soft, hard))

    def _prctl(self, option: int, value: int) -> None:
        if self._libc.prctl(option, value, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    def set_parent_death_signal(self, sig: int = signal.SIGKILL) -> None:
        self._prctl(PR_SET_PDEATHSIG, int(sig))

    def no_new_privileges(self) -> None:
        self._prctl(PR_SET_NO_NEW_PRIVS, 1)

    def private_network(self) -> None:
        if self._libc.unshare(CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    def flush_c_stdio(self) -> None:
        """fflush(NULL): output that C code buffered in stdio reaches the pipes."""
        self._libc.fflush(None)
