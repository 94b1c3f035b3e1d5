"""A session child's output: coalesced, ordered, capped, always flushed.

``sys.stdout`` is a C-buffered text file (``stdout_file``): a print costs what
it costs in plain Python, and its text reaches ``OutputStream`` through
``Sink`` once per 64 KiB, or when something drains it. ``sys.stderr``
(``StreamFile``) writes into ``OutputStream`` directly, after draining stdout;
so do file descriptors 1 and 2 (output of C code and subprocesses), through
pipes that a pump thread reads, also after draining stdout. Text is sent in
chunks: when 64 KiB have gathered, every 50 ms while an execution runs (the
flusher thread drains and sends), before any other message, and before
``done``. One lock orders everything the child sends.

Lock order: a file's own buffer lock (taken by the C code), then
``OutputStream.lock``, never the other way: stdout is drained only by code
that holds no ``OutputStream.lock``, or a thread would wait for itself.
"""

from __future__ import annotations

import _thread
import codecs
import contextlib
import io
import os
import select
import signal
import sys
import threading
import time

CHUNK = 64 << 10
MAX_DELAY = 0.05
POLL_INTERVAL = 0.0005


class OutputLimit(BaseException):
    """Raised in user code once an execution's output passes the cap.
    A BaseException, so ``except Exception`` in user code does not swallow it."""


class OutputStream:
    def __init__(self, send, cap: int):
        self._send = send  # send(message: dict, blob: bytes | None)
        self.cap = cap
        self.lock = threading.RLock()
        self.execution: str | None = None
        self.tag: str | None = None  # the interact whose output this is, if any
        self.pending: list[list[str]] = []  # [[name, text, tag], ...]
        self.pending_bytes = 0
        self.total = 0
        self.exceeded = False
        self.buffered: list[io.TextIOWrapper] = []  # files whose text may wait in C
        # Wakes the flusher thread when an execution begins, so that an idle
        # session's thread sleeps instead of polling.
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)

    def begin(self, execution: str) -> None:
        self.drain_buffered()  # nothing of an earlier execution is this one's
        with self.lock:
            self.pending, self.pending_bytes = [], 0
            self.execution = execution
            self.total = 0
            self.exceeded = False
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_write, b"!")

    def drain_buffered(self) -> None:
        """The text waiting in the buffered files' C buffers, into ``pending``.
        Never under ``self.lock`` (see the lock order above). Past the cap the
        rest is dropped quietly: the writer, not the drainer, is stopped."""
        for file in self.buffered:
            for _ in range(2):  # a second time, if the cap stopped the first
                try:
                    file.flush()
                    break
                except OutputLimit:
                    continue
                except (OSError, ValueError, RuntimeError):
                    break  # closed by user code, or drained from inside itself

    def retag(self, tag: str | None) -> None:
        """Text from now on is the interact ``tag``'s (None: the cell's)."""
        self.drain_buffered()
        with self.lock:
            self.tag = tag

    def write(self, name: str, text: str, from_main_thread: bool = True) -> None:
        if not text:
            return
        with self.lock:
            if self.exceeded or self.execution is None:
                return
            size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
            if self.total + size > self.cap:
                room = max(self.cap - self.total, 0)
                self._append(name, text.encode("utf-8", "replace")[:room].decode("utf-8",
                                                                                  "ignore"))
                self.exceeded = True
                self._flush_locked()
                self._send({"type": "notice", "text": f"Output limit of {self.cap} bytes "
                            "reached: the rest of the output was dropped and the "
                            "execution interrupted.", **self._tagged()}, None)
                if from_main_thread:
                    raise OutputLimit()
                _thread.interrupt_main()
                return
            self.total += size
            self._append(name, text)
            if self.pending_bytes >= CHUNK:
                self._flush_locked()

    def _append(self, name: str, text: str) -> None:
        if not text:
            return
        if self.pending and self.pending[-1][2] != self.tag:
            self._flush_locked()  # text of another interact (or of none)
        if self.pending and self.pending[-1][0] == name:
            self.pending[-1][1] += text
        else:
            self.pending.append([name, text, self.tag])
        self.pending_bytes += len(text)

    def _flush_locked(self) -> None:
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        for name, text, tag in pending:
            message = {"type": "stream", "name": name, "text": text}
            if tag:
                message["interact"] = tag
            self._send(message, None)

    def _tagged(self) -> dict:
        return {"interact": self.tag} if self.tag else {}

    def send_pending(self) -> None:
        """Send the text drained so far (what stdout's buffer holds stays)."""
        with self.lock:
            self._flush_locked()

    def flush(self) -> None:
        """Send every byte of text written so far."""
        self.drain_buffered()
        with self.lock:
            self._flush_locked()

    def send(self, message: dict, blob: bytes | None = None) -> None:
        """Anything else the execution emits: first the text before it."""
        self.drain_buffered()
        with self.lock:
            self._flush_locked()
            if "interact" not in message and message.get("type") != "done":
                message.update(self._tagged())
            self._send(message, blob)


class Sink(io.RawIOBase):
    """Where the bytes of a buffered file (``stdout_file``) go when its C
    buffer is full or drained: back to text, into ``OutputStream``."""

    def __init__(self, stream: OutputStream, name: str, fd: int):
        self._stream = stream
        self._name = name
        self._fd = fd
        # A multi-byte character may straddle two drains.
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        self._main = threading.main_thread().ident

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        text = self._decoder.decode(bytes(data))
        self._stream.write(self._name, text, threading.get_ident() == self._main)
        return len(data)

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False


def stdout_file(stream: OutputStream, fd: int = 1) -> io.TextIOWrapper:
    """What user code sees as sys.stdout: C's TextIOWrapper and BufferedWriter
    (print pays no Python call per line), over a ``Sink``; its ``buffer``
    takes bytes, as a real stdout's does."""
    file = io.TextIOWrapper(io.BufferedWriter(Sink(stream, "stdout", fd), CHUNK),
                            encoding="utf-8", errors="surrogatepass", newline="\n")
    file._CHUNK_SIZE = CHUNK  # text gathers in C up to a whole chunk
    file._stream = stream  # for tests and for the curious: where the text goes
    stream.buffered.append(file)
    return file


class StreamFile(io.TextIOBase):
    """What user code sees as sys.stdout / sys.stderr."""

    def __init__(self, stream: OutputStream, name: str, fd: int, pump: FdPump):
        self._stream = stream
        self.name = name
        self._fd = fd
        self._pump = pump

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._stream.drain_buffered()  # what stdout has waiting was written first
        self._pump.drain_if_ready()
        self._stream.write(self.name, text)
        return len(text)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


class FdPump:
    """Reads file descriptors 1 and 2 (redirected to pipes) into the stream."""

    def __init__(self, stream: OutputStream):
        self.stream = stream
        self.lock = threading.Lock()
        self.readers: dict[int, tuple[str, codecs.IncrementalDecoder]] = {}
        self.poller = select.poll()
        self.last_poll = 0.0
        self.spawned = False  # a process started since stdout was last drained
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self.readers[read_end] = (name, codecs.getincrementaldecoder("utf-8")("replace"))
            self.poller.register(read_end, select.POLLIN)

    def drain_if_ready(self) -> None:
        """Before text written by Python: whatever C code or a subprocess wrote
        to the descriptors first. One poll system call, at most every 0.5 ms,
        so that a fast print loop does not pay one per line; a C write (or a
        subprocess, which takes longer than that) is still ordered."""
        now = time.monotonic()
        if now - self.last_poll < POLL_INTERVAL:
            return
        self.last_poll = now
        if self.poller.poll(0):
            self.drain(from_main_thread=True)

    def drain(self, from_main_thread: bool) -> None:
        """What stdout has waiting was written before what the pipes hold,
        unless a process was started since stdout was last drained (see
        ``watch_spawns``): then the pipes' text, being that process's, came
        first."""
        pipes_first = self.spawned
        if from_main_thread:
            # Only the session's own thread knows its order: the pump cannot
            # tell whether a started process is done writing.
            self.spawned = False
        if pipes_first:
            self._read_pipes(from_main_thread)
        self.stream.drain_buffered()
        self._read_pipes(from_main_thread)

    def before_spawn(self) -> None:
        """A process is about to start: what is in the pipes (an earlier
        process's), then stdout's buffered text, go first."""
        self.drain(from_main_thread=True)
        self.spawned = True

    def _read_pipes(self, from_main_thread: bool) -> None:
        with self.lock:
            for fd, (name, decoder) in self.readers.items():
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    self.stream.write(name, decoder.decode(data), from_main_thread)


# Audit events of the session starting a process (os.system, subprocess,
# fork, exec): what it prints goes to the pipes, not through stdout's buffer.
SPAWNS = frozenset({"os.system", "subprocess.Popen", "os.posix_spawn", "os.spawn", "os.fork",
                    "os.forkpty", "os.exec", "pty.spawn"})


def watch_spawns(stream: OutputStream, pump: FdPump) -> None:
    """Keep a started process's output in its place: stdout's buffered text
    goes out before the process starts (a forked child no longer repeats
    it either), and the next drain reads the pipes first, since what the
    process wrote came before what the session prints after it ends."""
    main, pid = threading.main_thread().ident, os.getpid()

    def hook(event: str, _args) -> None:
        # Not in a forked child about to exec (pexpect's closes every
        # descriptor first): the session's own process only.
        if event in SPAWNS and threading.get_ident() == main and os.getpid() == pid:
            with contextlib.suppress(OSError):  # never the reason a spawn fails
                pump.before_spawn()

    sys.addaudithook(hook)


INTERRUPTS = {signal.SIGINT, signal.SIGALRM}


def start_background(stream: OutputStream, pump: FdPump) -> None:
    """One daemon thread: pump the pipes and, every 50 ms while an execution
    runs, send what text waits. Between executions it sleeps until the next
    begins, so an idle session costs no CPU."""

    def loop():
        # Interrupts are the main thread's: with Sage, cysignals' handler may
        # jump back into compiled code it interrupts, which it can only do on
        # the thread that runs that code.
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
        fds = [*pump.readers, stream.wake_read]
        flushed = time.monotonic()
        while True:
            timeout = None if stream.execution is None \
                else max(0.0, flushed + MAX_DELAY - time.monotonic())
            readable, _, _ = select.select(fds, [], [], timeout)
            if stream.wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(stream.wake_read, 4096)
            if any(fd in pump.readers for fd in readable):
                pump.drain(from_main_thread=False)
            now = time.monotonic()
            if stream.execution is None or now - flushed >= MAX_DELAY:
                if stream.execution is not None:
                    pump.drain(from_main_thread=False)  # in its order, see FdPump.drain
                    stream.send_pending()
                flushed = now

    threading.Thread(target=loop, name="salvus-output", daemon=True).start()
