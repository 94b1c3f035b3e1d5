"""Sage fidelity: the installed Sage's own doctest examples, replayed through a
real worker, compared with what Sage expects.

For each group of modules (calculus, symbolic, functions, integers, matrices,
polynomials, combinatorics, plotting), the examples of every docstring are
taken with Sage's own doctest parser, then run twice:

- natively, in a plain Sage process (not the one that collected them, whose
  inspection resolved the modules' lazy imports), as Sage's doctester runs them (one
  namespace per group, ``set_random_seed(0)`` at each docstring, each example
  compiled in "single" mode so expression statements print their repr);
- through the worker protocol, in one session per group, exactly as a
  worksheet cell would run them (the same prologue is a cell too).

What counts is what Sage's doctest checker says (normalized whitespace,
``...``, its float tolerance), and only examples that pass natively on this
machine count at all: random output, optional packages and slow examples
drop out on their own. Each difference left is a bug, or one of the reasoned
exceptions in ``EXPECTED_DIFFERENCES``.

    python bench/sage_fidelity.py [--limit N] [GROUP ...]

prints the pass rate per group and writes bench/results/sage_fidelity.json
(with every difference). tests/test_sage_fidelity.py runs a sample in CI.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUPS = {
    "calculus": ["sage.calculus.calculus", "sage.calculus.functional",
                 "sage.calculus.desolvers", "sage.calculus.var", "sage.calculus.functions"],
    "symbolic": ["sage.symbolic.relation", "sage.symbolic.assumptions", "sage.symbolic.ring",
                 "sage.symbolic.expression"],
    "functions": ["sage.functions.trig", "sage.functions.log", "sage.functions.other",
                  "sage.functions.gamma", "sage.functions.hyperbolic"],
    "integers": ["sage.rings.integer", "sage.rings.integer_ring", "sage.rings.rational",
                 "sage.arith.misc"],
    "matrices": ["sage.matrix.constructor", "sage.matrix.special", "sage.matrix.matrix0",
                 "sage.matrix.matrix2"],
    "polynomials": ["sage.rings.polynomial.polynomial_ring_constructor",
                    "sage.rings.polynomial.polynomial_element",
                    "sage.rings.polynomial.multi_polynomial_ideal"],
    "combinatorics": ["sage.combinat.permutation", "sage.combinat.partition",
                      "sage.combinat.combination", "sage.combinat.subset",
                      "sage.combinat.composition"],
    "plotting": ["sage.plot.plot", "sage.plot.graphics", "sage.plot.line", "sage.plot.point",
                 "sage.plot.plot3d.plot3d", "sage.plot.plot3d.parametric_plot3d"],
}

NATIVE_TIMEOUT = 10  # seconds an example may take natively; slower ones do not count
# Before each docstring, in both runs: the doctester's seed, and no assumption
# left by the docstring before (Maxima would ask questions about them).
PROLOGUE = "set_random_seed(0); forget()"

# Where a worksheet shows something else than the REPL's text on purpose.
GRAPHICS_TEXT = re.compile(r"^(Graphics object consisting of \d+ graphics primitives?"
                           r"|Graphics3d Object|Graphics Array of size \d+ x \d+"
                           r"|Multigraphics with \d+ elements)\s*$", re.MULTILINE)
EXPECTED_DIFFERENCES = {
    "graphics": "a plot shows as a picture or a 3D scene, not as its repr "
                "('Graphics object consisting of ...'): counted as passed when a "
                "picture or scene came instead",
}


@dataclass
class Example:
    docstring: str  # its qualified name
    source: str  # Sage source, as a user types it
    python: str  # after Sage's preparser (how the doctester runs it)
    want: str
    exc_msg: str | None  # the exception's text when a traceback is expected
    tolerance: dict  # "# abs tol 1e-10" and kin: how far numbers may be off

    def expected(self) -> str:
        """What the checker compares with: the output, with its tolerance."""
        if not any(self.tolerance.values()):
            return self.want
        from sage.doctest.marked_output import MarkedOutput

        return MarkedOutput(self.want).update(**self.tolerance)


def collect(modules: list[str], limit: int | None = None) -> list[list[Example]]:
    """The examples of each docstring of ``modules``, in order; at most
    ``limit`` examples in all. (Runs where Sage is importable.)"""
    import doctest
    import importlib

    import sage.all  # noqa: F401
    from sage.doctest.parsing import SageDocTestParser

    # "sage" among the tags: untagged examples too (without it, Sage's parser
    # keeps only the examples tagged with an optional feature).
    finder = doctest.DocTestFinder(parser=SageDocTestParser(("sage",), long=False),
                                   exclude_empty=True)
    groups, count = [], 0
    for name in modules:
        module = importlib.import_module(name)
        for test in sorted(finder.find(module, name), key=lambda t: t.lineno or 0):
            examples = [Example(test.name, e.sage_source, e.source, str(e.want), e.exc_msg,
                                {k: float(getattr(e.want, k, 0) or 0)
                                 for k in ("abs_tol", "rel_tol", "tol")})
                        for e in test.examples if "sage_source" in vars(e)]
            if limit is not None:
                examples = examples[:max(limit - count, 0)]
            if examples:
                groups.append(examples)
                count += len(examples)
    return groups


def checker():
    import doctest

    from sage.doctest.parsing import SageOutputChecker

    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    return lambda want, got: SageOutputChecker().check_output(want, got, flags)


# ------------------------------------------------------------ native


def run_natively(docstrings: list[list[Example]]) -> list[list[bool | None]]:
    """Each example's outcome in this (plain Sage) process, as the doctester
    would judge it; None: it took longer than NATIVE_TIMEOUT."""
    import contextlib
    import io
    import traceback

    import sage.all  # noqa: F401
    from cysignals.alarm import AlarmInterrupt, alarm, cancel_alarm

    check = checker()
    namespace = {"__name__": "__main__"}
    exec("from sage.all import *", namespace)

    outcomes = []
    for examples in docstrings:
        exec(PROLOGUE, namespace)
        passed = []
        for example in examples:
            out = io.StringIO()
            hook = sys.displayhook
            sys.displayhook = functools.partial(_display, namespace, out)
            alarm(NATIVE_TIMEOUT)  # cysignals': it interrupts compiled code too
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(example.python, "<doctest>", "single"), namespace)
                ok = bool(example.exc_msg is None and check(example.expected(), out.getvalue()))
            except AlarmInterrupt:
                ok = None  # too slow to count: cut off there at the same time (cut_as_natively)
            except BaseException as exc:  # what the example raised is its output
                text = "".join(traceback.format_exception_only(type(exc), exc))
                ok = bool(example.exc_msg is not None and check(example.exc_msg, text))
            finally:
                cancel_alarm()
                sys.displayhook = hook
            passed.append(ok)
        outcomes.append(passed)
    return outcomes


_SET: dict = {}  # what _display last set each of _, __, ___ to
_UNSET = object()


def _display(namespace: dict, out, value) -> None:
    """The REPL's displayhook: print the repr, keep _, __ and ___ as Sage's
    IPython shell does (a name the user assigned stays theirs)."""
    if value is None:
        return
    for name, newer in (("___", "__"), ("__", "_"), ("_", None)):
        if namespace.get(name, _UNSET) is _SET.get(name, _UNSET):
            namespace[name] = _SET[name] = value if newer is None else _SET.get(newer)
    print(repr(value), file=out)


def native_outcomes(modules: list[str], limit: int | None, folder: Path) -> tuple[list, list]:
    """(docstrings, outcomes): the examples are collected in one plain Sage
    process and run in another. Collecting inspects every object of the
    modules, which resolves their lazy imports (``from sage.functions.other
    import beta`` would then give the function instead of the lazy import
    a user gets): the run must start from Sage as a user's does."""
    folder.mkdir(parents=True, exist_ok=True)
    examples, out = folder / "examples.json", folder / "native.json"
    # Their own HOME: Maxima and friends write caches there.
    for args in (["--collect-json", str(examples), "--limit", str(limit or 0), *modules],
                 ["--native-json", str(out), "--examples", str(examples)]):
        subprocess.run([sys.executable, __file__, *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600,
                       cwd=folder, check=True, env={**os.environ, "HOME": str(folder)})
    docstrings = [[Example(**e) for e in d] for d in json.loads(examples.read_text())]
    return docstrings, json.loads(out.read_text())


# ------------------------------------------------------------ through a worker


def shown_text(result) -> str:
    """What a worksheet shows as text for one execution, in order: printed
    output and results' text (every expression of the last line shows)."""
    return "".join(m["text"] if m["type"] == "stream" else m["data"]["text/plain"] + "\n"
                   for m in result.messages
                   if m["type"] == "result" or (m["type"] == "stream" and m["name"] == "stdout"))


def exception_text(error: dict) -> str:
    """What doctest compares for an exception: the traceback's last part, from
    the line that names it (module-qualified, as the REPL prints it)."""
    lines = error["traceback"].splitlines(keepends=True)
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].split(":", 1)[0].strip().endswith(error["ename"]):
            return "".join(lines[index:])
    return f"{error['ename']}: {error['evalue']}\n"


def judge(example: Example, result, check) -> tuple[bool, str]:
    """(passed, what we showed) for one example run in a session."""
    errors = result.of("error")
    if errors:
        text = exception_text(errors[-1])
        return example.exc_msg is not None and check(example.exc_msg, text), text
    got = shown_text(result)
    if example.exc_msg is None and check(example.expected(), got):
        return True, got
    pictured = result.of("image") or any(
        "application/vnd.salvus.scene3d+json" in m["data"] for m in result.of("result"))
    # The picture stands for the repr's line; what was printed before it
    # (warnings, say) must still match.
    printed = GRAPHICS_TEXT.sub("", example.want).rstrip("\n")
    if pictured and printed != example.want.rstrip("\n") and (
            check(printed + "\n", got) if printed.strip() else True):
        return True, got + "(a picture: expected difference 'graphics')"
    return False, got


def cut_as_natively(client, session: str, example: Example) -> str:
    """Run an example that was natively cut off at NATIVE_TIMEOUT, and cut it
    off here too: what it left half done (a Maxima package half loaded, say)
    is then what the next examples meet, natively and here alike. Skipped,
    it moved its cost onto a later example, which ran into the worker's
    wall time instead. Returns the execution's status."""
    from tests.worker_client import Result

    execution = client.execute(session, example.source)
    try:
        return Result(client.collect(execution, NATIVE_TIMEOUT)).status
    except TimeoutError:
        client.request("interrupt", session=session)
        return Result(client.collect(execution, 120)).status


def run_in_salvus(docstrings: list[list[Example]], natively: list[list[bool]],
                  folder: Path) -> list[dict]:
    """Every natively passing example through a real Sage worker, one session
    for the group; returns the differences."""
    from tests.worker_client import WorkerProcess

    check = checker()
    worker = WorkerProcess(folder / "worker", "sage")
    differences = []
    try:
        worker.wait_ready()
        client = worker.client()
        session = client.start()
        for examples, passed in zip(docstrings, natively, strict=True):
            client.run(session, PROLOGUE)
            for example, native in zip(examples, passed, strict=True):
                if native is None:
                    status = cut_as_natively(client, session, example)
                else:
                    result = client.run(session, example.source, timeout=120)
                    ok, got = judge(example, result, check)
                    if native and not ok:
                        differences.append({**asdict(example), "got": got,
                                            "status": result.status,
                                            "notices": [m["text"] for m in result.of("notice")]})
                    status = result.status
                if status in ("killed", "limit"):
                    session = client.start()  # go on in a fresh one, as a user would
    finally:
        worker.stop()
    return differences


# ------------------------------------------------------------ report


def fidelity(group: str, limit: int | None, folder: Path) -> dict:
    docstrings, natively = native_outcomes(GROUPS[group], limit, folder)
    differences = run_in_salvus(docstrings, natively, folder)
    total = sum(len(e) for e in docstrings)
    counted = sum(p.count(True) for p in natively)
    return {"group": group, "examples": total, "pass_natively": counted,
            "pass_in_salvus": counted - len(differences), "differences": differences}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help=f"some of: {', '.join(GROUPS)}")
    parser.add_argument("--limit", type=int, default=0, help="examples per group (0: all)")
    parser.add_argument("--collect-json", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--native-json", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--examples", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collect_json:  # a plain Sage process: the groups are module names here
        docstrings = collect(args.groups, args.limit or None)
        Path(args.collect_json).write_text(json.dumps([[asdict(e) for e in d]
                                                       for d in docstrings]))
        return
    if args.native_json:  # another one, which runs them
        docstrings = [[Example(**e) for e in d]
                      for d in json.loads(Path(args.examples).read_text())]
        Path(args.native_json).write_text(json.dumps(run_natively(docstrings)))
        return
    folder = Path(tempfile.mkdtemp(prefix="salvus-fidelity-"))
    os.chmod(folder, 0o755)
    try:
        reports = [fidelity(group, args.limit or None, folder / group)
                   for group in args.groups or GROUPS]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'group':<15}{'examples':>10}{'pass natively':>15}{'pass in Salvus':>16}"
          f"{'rate':>9}")
    for r in reports:
        rate = r["pass_in_salvus"] / max(r["pass_natively"], 1)
        print(f"{r['group']:<15}{r['examples']:>10}{r['pass_natively']:>15}"
              f"{r['pass_in_salvus']:>16}{rate:>9.1%}")
    counted = sum(r["pass_natively"] for r in reports)
    passed = sum(r["pass_in_salvus"] for r in reports)
    print(f"{'all':<15}{sum(r['examples'] for r in reports):>10}{counted:>15}{passed:>16}"
          f"{passed / max(counted, 1):>9.1%}")
    print("expected differences: " + "; ".join(f"{k}: {v}"
                                            for k, v in EXPECTED_DIFFERENCES.items()))
    out = ROOT / "bench" / "results" / "sage_fidelity.json"
    out.write_text(json.dumps({"groups": reports, "expected": EXPECTED_DIFFERENCES},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
