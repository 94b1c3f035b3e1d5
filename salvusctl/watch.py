"""Wake when a folder's files change: Linux inotify through libc, or a plain
timeout where inotify is not to be had.

The shipper waits on the logs folder between looks: a line written wakes it
at once (instead of at its next poll), and an idle appliance costs no
wake-ups beyond the poll that remains as a safety net.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import time
from pathlib import Path

IN_MODIFY = 0x00000002
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


class FolderWatch:
    """``wait(timeout)`` returns when a file in the folder was written,
    created or renamed into it, or when ``timeout`` seconds have passed."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fd: int | None = None

    def open(self) -> bool:
        """Start watching; False (and waits become sleeps) without inotify."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return False
            if libc.inotify_add_watch(fd, os.fsencode(self.folder),
                                      IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0:
                os.close(fd)
                return False
        except (OSError, AttributeError):
            return False
        self.fd = fd
        return True

    def wait(self, timeout: float) -> bool:
        """True when a change woke it (False: the time passed)."""
        if self.fd is None:
            time.sleep(timeout)
            return False
        readable, _, _ = select.select([self.fd], [], [], timeout)
        if readable:
            self._drain()
        return bool(readable)

    def _drain(self) -> None:
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
