"""The session child: runs executions in one namespace and reports each one.

Every execution sends, in order: stream text, results, images, an error if
any, and then exactly one ``done`` with its status. The parent adds session,
execution and sequence numbers; it also sends ``done(killed)`` itself if
this process dies first.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import linecache
import signal
import sys
import traceback
from typing import Any

from sage_worker import interact, introspect, modes
from sage_worker.interact import Interacts
from sage_worker.output import (
    FdPump,
    OutputLimit,
    OutputStream,
    StreamFile,
    start_background,
    stdout_file,
    watch_spawns,
)
from salvusctl import logline

# errno values that mean a resource limit stopped the code (ENOSPC, EDQUOT:
# the session's own disk quota)
LIMIT_ERRNOS = {errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM,
                errno.ENOSPC, errno.EDQUOT}


_UNSET = object()


class _AlreadyReported(Exception):
    """An error the execution already sent in its own words."""


class Executor:
    def __init__(self, channel, engine, output_cap: int, flush_c_stdio):
        self.channel = channel
        self.engine = engine
        self.flush_c_stdio = flush_c_stdio
        logline.forget()  # the worker's log lines are not this session's output
        self.stream = OutputStream(channel.send, output_cap)
        self.pump = FdPump(self.stream)
        self.namespace = engine.namespace()
        self.count = 0
        self.results: dict[str, Any] = {}  # what _, __ and ___ were last set to
        self.webgl = True  # the browser of the latest execution draws 3D scenes
        self.executing = False
        self.transformed = False
        sys.stdout = stdout_file(self.stream)
        sys.stderr = StreamFile(self.stream, "stderr", 2, self.pump)
        sys.displayhook = self._display_result
        self.typeset = False  # the running cell's: results are typeset
        engine.prepare_child(self.namespace, self.show)
        self.interacts = Interacts(self.namespace, self._announce_interact, self._run_interact)
        self.namespace.update(interact.NAMES, interact=self.interacts.decorator)
        self.namespace[introspect.HELP_CALL] = self._help
        self.namespace["help"] = self._help_function
        signal.signal(signal.SIGINT, self._on_interrupt)
        engine.interrupt_compiled_code()
        start_background(self.stream, self.pump)
        watch_spawns(self.stream, self.pump)

    def _on_interrupt(self, signum, frame) -> None:
        # Only user code is interrupted; an idle child ignores the signal.
        try:
            self.engine.raise_interrupt(signum, frame)
        except KeyboardInterrupt:
            if self.executing:
                raise

    def serve(self) -> None:
        while True:
            request = self.channel.receive()
            if request is None:
                return
            if request.get("type") == "execute":
                self.webgl = request.get("webgl") is not False
                self.execute(request["execution"], request["code"],
                             typeset=request.get("typeset") is True,
                             python=request.get("language") == "python")
            elif request.get("type") == "complete":
                self.complete(request["execution"], request["code"], request["cursor"])
            elif request.get("type") == "interact":
                self.execute(request["execution"], None, request["interact"],
                             request["values"])

    # -- one execution

    def execute(self, execution: str, code: str | None, interact_id: str | None = None,
                values: dict | None = None, typeset: bool = False,
                python: bool = False) -> None:
        """Run a cell's code, or (code None) an interact's function with new
        values. ``typeset``: its result typeset (the worksheet's switch);
        ``python``: a cell without a mode line is plain Python."""
        self.count += 1
        filename = f"<cell {self.count}>"
        self.stream.begin(execution)
        status = "ok"
        try:
            self.executing = True
            if code is None:
                self.interacts.update(interact_id, values or {})
            else:
                self._run(code, filename, typeset, python)
            for image in self.engine.figures():
                self.image(*image)
        except OutputLimit:
            status = "limit"
        except KeyboardInterrupt:
            status = "limit" if self.stream.exceeded else "interrupted"
            if status == "interrupted":
                self.stream.send({"type": "error", "ename": "KeyboardInterrupt",
                                  "evalue": "", "traceback": "KeyboardInterrupt\n"})
        except _AlreadyReported:
            status = "error"
        except BaseException as exc:  # user code may raise anything, SystemExit too
            status = "limit" if _is_limit(exc) else "error"
            self.report(exc, filename)
        finally:
            self.executing = False
        self._finish(status)

    def _run(self, code: str, filename: str, typeset: bool = False,
             python: bool = False) -> None:
        try:
            mode, body = modes.split(code)
        except modes.UnknownMode as exc:
            self.stream.send({"type": "error", "ename": "UsageError", "evalue": str(exc),
                              "traceback": f"UsageError: {exc}\n"})
            raise _AlreadyReported from None
        if mode in ("md", "html", "latex"):
            self.stream.send({"type": "result", "data": modes.result(mode, body)})
            return
        plain = mode == "python" or (mode is None and python)  # no Sage preparser
        if mode == "python":  # its line stays (blank): line numbers match the cell's
            setup, source = "", "\n" + introspect.transform(body)
        elif plain:
            setup, source = "", introspect.transform(code)
        else:
            setup, source = self.engine.transform(introspect.transform(code))
        self.transformed = not plain and (setup != "" or source != code)
        shown = code if setup or source == code or plain else source
        linecache.cache[filename] = (len(shown), None, shown.splitlines(True), filename)
        if setup:
            exec(compile(setup, filename + " setup", "exec"), self.namespace)
        tree = ast.parse(source, filename)
        shown_last = _shown_last(tree.body, self.engine.single_last_line)
        body, tree.body = tree.body[:len(tree.body) - len(shown_last)], shown_last
        exec(compile(ast.Module(body, []), filename, "exec"), self.namespace)
        if shown_last:
            # In "single" mode, as the Sage notebook and doctests run a cell's
            # last line (and a block that ends it): with Sage every expression
            # statement there shows: `m; m.parent()`, `with ...: solve(...)`.
            self.typeset = typeset
            exec(compile(ast.Interactive(shown_last), filename, "single"), self.namespace)

    def _display_result(self, value: Any) -> None:
        """sys.displayhook: a result of the cell's last line."""
        if value is not None:
            self._remember(value)
            self.show(value, self.typeset)

    def _remember(self, value: Any) -> None:
        """``_``, ``__`` and ``___``: the last three results, as in the REPL.
        A name the user assigned is theirs: it is left alone, as IPython does."""
        if value is None:
            return
        for name, newer in (("___", "__"), ("__", "_")):
            if self.namespace.get(name, _UNSET) is self.results.get(name, _UNSET):
                self.namespace[name] = self.results[name] = self.results.get(newer)
        if self.namespace.get("_", _UNSET) is self.results.get("_", _UNSET):
            self.namespace["_"] = self.results["_"] = value

    def _finish(self, status: str) -> None:
        """Everything still buffered, then done: even if that is interrupted."""
        try:
            self.flush_c_stdio()
            self.pump.drain(from_main_thread=True)
        except (OutputLimit, KeyboardInterrupt):
            status = "limit" if self.stream.exceeded else status
        self.stream.send({"type": "done", "status": status})
        self.stream.execution = None

    # -- completion

    def complete(self, execution: str, code: str, cursor: int) -> None:
        """The names that complete the one before ``cursor``: a completions
        message, then done. Looking up attributes may run code (properties),
        so it is interruptible and under the wall time like any execution."""
        self.stream.begin(execution)
        status = "ok"
        try:
            self.executing = True
            matches, start, end = introspect.complete(self.namespace, code, cursor)
            self.stream.send({"type": "completions", "matches": matches, "start": start,
                              "end": end})
        except KeyboardInterrupt:
            status = "interrupted"
        except Exception:
            status = "error"
        finally:
            self.executing = False
        self._finish(status)

    # -- help

    def _help(self, value: Any, name: str, source: bool) -> None:
        text = introspect.describe(value, name, source)
        self.stream.send({"type": "result", "data": {"text/plain": text}})

    def _help_function(self, *args: Any) -> None:
        """help(x) as x?; help() alone says so (no interactive help here)."""
        if not args:
            print("Type NAME? for help on NAME, NAME?? for its source.")
            return
        value = args[0]
        self._help(value, getattr(value, "__name__", type(value).__name__), False)

    # -- interacts

    def _announce_interact(self, interact_id: str, controls: list[dict]) -> None:
        self.stream.send({"type": "interact", "interact": interact_id, "controls": controls})

    def _run_interact(self, interact_id: str, function, kwargs: dict) -> None:
        """One run of an interact's function: its output is tagged with the
        interact; an exception shows there and leaves the controls working."""
        outer = self.stream.tag
        self.stream.retag(interact_id)
        try:
            self.show(function(**kwargs))
            for image in self.engine.figures():
                self.image(*image)
        except Exception as exc:
            self.report(exc, "<cell")
        finally:
            self.stream.flush()
            self.stream.retag(outer)

    # -- what an execution emits

    def show(self, value: Any, typeset: bool = False) -> None:
        """Display like the interactive interpreter: None shows nothing.
        ``typeset``: asked for by show() and its kin."""
        if value is None:
            return
        data, images = self.engine.display(value, typeset, self.webgl)
        for image in images:
            self.image(*image)
        if data:
            self.stream.send({"type": "result", "data": data})

    def image(self, mime: str, data: bytes, width: int | None = None) -> None:
        message = {"type": "image", "mime": mime, "size": len(data),
                   "sha1": hashlib.sha1(data).hexdigest()}
        if width:
            message["width"] = width  # CSS pixels: a PNG drawn at twice that
        self.stream.send(message, data)

    def report(self, exc: BaseException, filename: str) -> None:
        """A traceback that starts at the user's code, without the worker's frames."""
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
            tb = tb.tb_next
        if isinstance(exc, SyntaxError):
            shown = linecache.getline(filename, exc.lineno or 0)
            if exc.filename == filename and shown:
                exc.text = shown  # what the user wrote, not the preparsed line
                if self.transformed:  # its columns belong to the preparsed line
                    exc.offset = exc.end_offset = None
            lines = traceback.format_exception_only(type(exc), exc)
        else:
            report = traceback.TracebackException(type(exc), exc, tb)
            if self.transformed:
                # Columns refer to the preparsed code: no carets under the user's.
                for frame in report.stack:
                    if frame.filename.startswith("<cell "):
                        frame.colno = frame.end_colno = None
            lines = list(report.format())
        self.stream.send({"type": "error", "ename": type(exc).__name__,
                          "evalue": str(exc), "traceback": "".join(lines)})


def _shown_last(body: list[ast.stmt], whole_line: bool) -> list[ast.stmt]:
    """The statements whose results show: those that start on the line where
    the cell's last statement starts (that one alone when it is a block), as
    Sage does; or (``whole_line`` false) the last one if it is an expression,
    as IPython does."""
    if whole_line:
        return [statement for statement in body if statement.lineno == body[-1].lineno]
    return body[-1:] if body and isinstance(body[-1], ast.Expr) else []


def _is_limit(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, OSError) and exc.errno in LIMIT_ERRNOS
