"""What the worker computes with: the preloaded stack, code transform, display.

An engine is imported once in the worker parent (``preload``), warmed with
work that is slow the first time and safe to fork (``warm``), and then every
session child gets a fresh namespace from it. Nothing that breaks across fork
(threads, Maxima/ECL interfaces, sockets) may be started here.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.metadata
import io
import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sage_worker import scene3d

Image = tuple[str, bytes, int | None]  # (mime type, bytes, width in CSS pixels)
SVG_MAX = 200 << 10  # a plain vector plot up to this size goes as SVG, others as PNG
PNG_SCALE = 2  # PNGs are drawn at twice their shown size: sharp on high-DPI screens


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


class PythonEngine:
    """Plain Python with numpy, sympy and matplotlib (Agg) preloaded."""

    name = "python"
    distributions = ("numpy", "sympy", "matplotlib")
    # The results that show: the last statement's if it is an expression (as
    # IPython); Sage shows every expression of the last line (its notebook
    # and doctests run that line in "single" mode).
    single_last_line = False

    def session_environment(self) -> dict[str, str]:
        """What a session's environment holds besides PATH, HOME and the locale
        (the worker's own is scrubbed: it may carry secrets)."""
        return {"MPLBACKEND": "Agg"}

    def raise_interrupt(self, signum: int, frame: Any) -> None:
        """Python-level SIGINT in a session: what an interrupt raises."""
        raise KeyboardInterrupt

    def interrupt_compiled_code(self) -> None:
        """After the session set its Python-level SIGINT handler: let compiled
        code be interrupted too, where the stack knows how (nothing here)."""

    def preload(self, session_home: Path) -> float:
        """Import the stack; ``session_home`` is the home folder as each session
        will see it."""
        start = time.perf_counter()
        os.environ["MPLBACKEND"] = "Agg"
        import matplotlib

        matplotlib.use("Agg")
        import markdown_it  # noqa: F401  (%md cells)
        import matplotlib.pyplot
        import numpy.random  # noqa: F401  (numpy loads it lazily: in every child)
        import sympy  # noqa: F401

        return time.perf_counter() - start

    def warm(self) -> None:
        """Draw and discard one figure: the first savefig loads fonts and caches."""
        import matplotlib.pyplot as plt
        import sympy

        fig = plt.figure(figsize=(2, 2))
        fig.gca().plot([0, 1], [0, 1])
        figure_images(fig)
        fig.savefig(io.BytesIO(), format="png")
        plt.close("all")
        sympy.latex(sympy.Symbol("x") ** 2 / 3)
        for value in (2, 1.5, "text", [1, 2], sympy.Rational(1, 3)):
            self.display(value)

    def versions(self) -> str:
        python = sys.version.split()[0]
        return f"python {python} " + " ".join(f"{d} {_version(d)}" for d in self.distributions)

    def namespace(self) -> dict[str, Any]:
        return {"__name__": "__main__", "__builtins__": __builtins__}

    def reseed(self) -> None:
        random.seed()
        import numpy

        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))

    def transform(self, code: str) -> tuple[str, str]:
        """(setup, source): setup runs first; source's lines are the user's lines,
        so tracebacks can show what the user wrote."""
        return "", code

    def prepare_child(self, namespace: dict[str, Any], show) -> None:
        """In a new session: figures are captured after each execution, so
        pyplot's show() only has to not complain about the Agg backend."""
        import matplotlib.pyplot as plt

        plt.show = lambda *args, **kwargs: None

    def display(self, value: Any, typeset: bool = False,
                webgl: bool = True) -> tuple[dict[str, str], list[Image]]:
        """What a final expression's value shows as: representations and images.
        ``typeset``: the user asked for typesetting (show(), the worksheet's
        Typeset switch); plain Python offers LaTeX where it has one anyway."""
        figure = _matplotlib_figure(value)
        if figure is not None:
            return {}, figure_images(figure)
        if _sympy_plot(value):
            return {}, []
        data = {"text/plain": repr(value)}
        data.update(_rich(value))
        return data, []

    def figures(self) -> list[Image]:
        """Figures drawn during an execution (pyplot state), then closed."""
        if "matplotlib.pyplot" not in sys.modules:
            return []
        import matplotlib.pyplot as plt

        images = [image for n in plt.get_fignums() for image in figure_images(plt.figure(n))]
        plt.close("all")
        return images


def _matplotlib_figure(value: Any):
    if "matplotlib.figure" not in sys.modules:
        return None
    from matplotlib.figure import Figure

    if isinstance(value, Figure):
        return value
    return None


def _png(figure, scale: int = 1) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", dpi=figure.dpi * scale)
    return buffer.getvalue()


def figure_images(figure) -> list[Image]:
    """SVG for a plain vector plot under SVG_MAX; otherwise (raster content, or
    too many points) a PNG at PNG_SCALE, shown at its natural size."""
    if not any(ax.images for ax in figure.axes):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", bbox_inches="tight")
        if buffer.tell() <= SVG_MAX:
            return [("image/svg+xml", buffer.getvalue(), None)]
    png = _png(figure, PNG_SCALE)
    width = int.from_bytes(png[16:20], "big") // PNG_SCALE  # from the IHDR chunk
    return [("image/png", png, width)]


def _defines(value: Any, method: str) -> bool:
    """Whether the class defines ``method``: looked up in the class dicts, not by
    getattr, whose fallbacks (Sage's category framework) cost milliseconds."""
    return any(method in vars(klass) for klass in type(value).__mro__)


def _rich(value: Any, methods=(("_repr_latex_", "text/latex"),
                                ("_repr_html_", "text/html"))) -> dict[str, str]:
    data = {}
    # Checked by module first: isinstance against sympy's classes goes through
    # ABC caches that a fresh child may have to rebuild (milliseconds).
    if type(value).__module__.startswith("sympy.") and "sympy" in sys.modules:
        import sympy

        if isinstance(value, sympy.Basic | sympy.MatrixBase):
            data["text/latex"] = sympy.latex(value)
    for method, mime in methods:
        if mime in data:
            continue
        try:
            text = getattr(value, method)() if _defines(value, method) else None
        except Exception:
            text = None
        if isinstance(text, str):
            data[mime] = text
    return data


_sleep = time.sleep


def _sleep_taking_any_real(seconds: Any) -> None:
    """time.sleep, for Sage's numbers as well as Python's."""
    _sleep(seconds if isinstance(seconds, int | float) else float(seconds))


def _is_3d(value: Any) -> bool:
    from sage.plot.plot3d.base import Graphics3d

    return isinstance(value, Graphics3d)


def _sympy_plot(value: Any) -> bool:
    """A sympy plot (a Plot, or a backend object in newer sympy): sympy drew it
    into pyplot, so the figure is shown, not its repr."""
    return type(value).__module__.startswith("sympy.plotting")


class SageEngine(PythonEngine):
    """Sage (passagemath): ``sage.all`` preloaded, the preparser on every execution."""

    name = "sage"
    distributions = ("passagemath-standard", "numpy", "sympy", "matplotlib")
    single_last_line = True

    def __init__(self) -> None:
        self._sage_environment: dict[str, str] = {}

    def session_environment(self) -> dict[str, str]:
        # What importing Sage put into the environment (sage.env's folders for
        # ECL, Maxima, PARI, Singular, ...), taken from Sage itself: Maxima and
        # the pexpect interfaces start after fork, in the session, and need them.
        return {**super().session_environment(), **self._sage_environment}

    def preload(self, session_home: Path) -> float:
        start = time.perf_counter()
        os.environ["MPLBACKEND"] = "Agg"
        import matplotlib

        matplotlib.use("Agg")
        import markdown_it  # noqa: F401  (%md cells)
        import numpy.random  # noqa: F401  (numpy loads it lazily: in every child)

        # DOT_SAGE (logs, GAP's workspace, caches) in the session's own home:
        # sage.env reads it at import, and interfaces copy it then (gp's log
        # file, Maxima's caches), so it is set before, to the path every session
        # sees as its home (with isolation full, a folder of its own there).
        before = dict(os.environ)
        os.environ["DOT_SAGE"] = str(session_home / ".sage")
        import sage.all

        self._sage_environment = {key: value for key, value in os.environ.items()
                                  if before.get(key) != value}
        # cysignals (imported by Sage) put its own SIGINT handler in place: it
        # interrupts compiled code (PARI, FLINT, Maxima, ...) inside sig_on().
        from cysignals.pysignals import getossignal

        self._cysignals_sigint = getossignal(signal.SIGINT)
        from sage.repl.preparse import preparse_file  # noqa: F401

        # Sage's names are served as the namespace's builtins: one dict built
        # here, shared by every child. Copying thousands of names into each
        # session would write to every object's refcount and so copy its page.
        names = {k: v for k, v in vars(sage.all).items() if not k.startswith("__")}
        # The symbolic variables (x) are globals, as in Sage: clear_vars() and
        # `del x` remove them, and then they are gone.
        self._symbols = {k: names.pop(k) for k in list(names)
                         if isinstance(names[k], sage.all.Expression) and names[k].is_symbol()}
        self._builtins = {**vars(builtins), **names}
        return time.perf_counter() - start

    def warm(self) -> None:
        """One plot saved and a few latex forms: slow once, fork-safe. Maxima is
        not touched (its ECL process state must not be shared across fork)."""
        import sage.all as sa

        super().warm()
        _png(sa.plot(sa.sin, (0, 1)).matplotlib())
        sa.latex(sa.QQ(1) / 3)
        # The preparser compiles its patterns on first use; displaying the
        # usual kinds of results fills caches of Sage's category framework.
        self.transform("f(x) = x^2\n[1..3]\nR.<t> = QQ[]\n2^3 + 1/2 + 1.5")
        for value in (sa.Integer(2), sa.QQ(1) / 3, sa.SR.var("x") ** 2, sa.RR(1.5)):
            self.display(value, typeset=True)
        import sage.repl.ipython_extension  # noqa: F401  (%display: Sage's own magic)

    def namespace(self) -> dict[str, Any]:
        return {"__name__": "__main__", "__builtins__": self._builtins, **self._symbols}

    def raise_interrupt(self, signum: int, frame: Any) -> None:
        # cysignals' own: clears its state, raises KeyboardInterrupt (or
        # AlarmInterrupt, for alarm()), as in Sage.
        from cysignals.signals import python_check_interrupt

        python_check_interrupt(signum, frame)
        # No signal cysignals saw: the session's own interrupt_main (output cap).
        raise KeyboardInterrupt

    def interrupt_compiled_code(self) -> None:
        """The session's Python handler stays for Python code; the OS-level
        handler is cysignals' again, so an interrupt stops a factorization in
        PARI at once instead of waiting for it (and then killing it)."""
        from cysignals.pysignals import setossignal

        setossignal(signal.SIGINT, self._cysignals_sigint)

    def reseed(self) -> None:
        super().reseed()
        import sage.all as sa

        sa.set_random_seed()

    def prepare_child(self, namespace: dict[str, Any], show) -> None:
        """show(x) and Graphics.show() display in the worksheet."""
        from sage.plot.graphics import Graphics

        super().prepare_child(namespace, show)
        Path(os.environ["DOT_SAGE"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        # Sage's temporary folder was made at import, in the worker's /tmp; the
        # session has a /tmp of its own, where it is made again (tmp_filename
        # and everything that saves a file: 3D pictures, animations, ...).
        from sage.misc.temporary_file import TMP_DIR_FILENAME_BASE

        Path(TMP_DIR_FILENAME_BASE.name).mkdir(mode=0o700, parents=True, exist_ok=True)
        # The preparser makes 0.5 a RealLiteral, which time.sleep refuses on
        # Python 3.11 (in native Sage too): here sleep takes any real number.
        namespace["sleep"] = time.sleep = _sleep_taking_any_real
        from sage.plot.multigraphics import MultiGraphics

        def typeset(*values: Any, **_options: Any) -> None:
            for value in values:
                show(value, typeset=True)

        # show(g, viewer='threejs') and the like: options do not matter here
        namespace["show"] = namespace["pretty_print"] = typeset
        namespace["typeset_mode"] = _typeset_mode  # the Sage notebook's spelling
        namespace["_salvus_display_magic"] = _display_magic
        from sage.repl.rich_output import get_display_manager

        Graphics.show = lambda self, **kwargs: show(self)
        MultiGraphics.show = lambda self, **kwargs: show(self)
        # What Sage shows at once (g.show() of 3D graphics, whose extension type
        # takes no patch, and the rest of its rich output) shows here too.
        get_display_manager().display_immediately = \
            lambda obj, **kwargs: show(obj, typeset=True)

    def transform(self, code: str) -> tuple[str, str]:
        from sage.repl.preparse import preparse_file

        source = preparse_file(DISPLAY_MAGIC.sub(_display_magic_call, code))
        # The preparser puts the constants it lifted out (_sage_const_2 = ...)
        # on a first line of its own; the other lines match the user's.
        first, _, rest = source.partition("\n")
        if first.startswith("_sage_const_") and rest.count("\n") == code.count("\n"):
            return first, rest
        return "", source

    def display(self, value: Any, typeset: bool = False,
                webgl: bool = True) -> tuple[dict[str, str], list[Image]]:
        """As the Sage REPL shows it: text (or ASCII/Unicode art after
        ``%display ascii_art``); typeset LaTeX only when asked, by ``show()``,
        ``pretty_print()``, ``%display latex``, ``pretty_print_default()`` or
        the worksheet's Typeset switch (``typeset``). ``html(...)`` is HTML
        (the frontend sanitizes it: this process is not trusted)."""
        from sage.misc.html import HtmlFragment
        from sage.plot.graphics import Graphics
        from sage.plot.multigraphics import MultiGraphics
        from sage.repl.rich_output import get_display_manager

        if isinstance(value, Graphics | MultiGraphics):
            return {}, figure_images(value.matplotlib())
        if _is_3d(value):
            return scene3d.display(value, webgl)
        figure = _matplotlib_figure(value)
        if figure is not None:
            return {}, figure_images(figure)
        if _sympy_plot(value):
            return {}, []
        mode = get_display_manager().preferences.text
        data = {"text/plain": _character_art(value, mode) if mode in ART else repr(value)}
        if isinstance(value, HtmlFragment):
            data["text/plain"] = data["text/html"] = str(value)
        elif (typeset or mode == "latex") and _defines(value, "_latex_"):
            # Sage's own latex() rather than SageObject._repr_latex_ (which
            # wraps the same in $\displaystyle$).
            from sage.misc.latex import latex

            with contextlib.suppress(Exception):
                data["text/latex"] = str(latex(value))
        return data, []


ART = ("ascii_art", "unicode_art")

# IPython's %display line magic, as Sage's REPL has it: the line becomes a
# call of the same length in lines, so tracebacks still point at the user's.
DISPLAY_MAGIC = re.compile(r"^%display\b(.*)$", re.MULTILINE)


def _display_magic_call(match: re.Match) -> str:
    return f"_salvus_display_magic({match.group(1).strip()!r})"


def _display_magic(args: str) -> None:
    from sage.repl.ipython_extension import SageMagics

    SageMagics.display(None, args)  # Sage's own: its modes, checks and messages


def _typeset_mode(on: bool = True) -> None:
    from sage.repl.rich_output import get_display_manager

    get_display_manager().preferences.text = "latex" if on else None


def _character_art(value: Any, mode: str) -> str:
    from sage.typeset import ascii_art, unicode_art

    draw = ascii_art.ascii_art if mode == "ascii_art" else unicode_art.unicode_art
    try:
        return str(draw(value))
    except Exception:
        return repr(value)


ENGINES = {"python": PythonEngine, "sage": SageEngine}


def default_engine() -> str:
    """sage where passagemath is installed, else python."""
    try:
        importlib.metadata.version("passagemath-repl")
        return "sage"
    except importlib.metadata.PackageNotFoundError:
        return "python"
