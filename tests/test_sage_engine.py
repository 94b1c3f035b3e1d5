"""The worker with the Sage engine (passagemath), as a real process."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.worker_client import WorkerProcess

# No skip when Sage is missing: `make test` installs the sage extra, and the
# Sage engine must be tested wherever the suite runs.

SECRET = "s3cret-9f27c1"


@pytest.fixture(scope="module")
def sage():
    folder = Path(tempfile.mkdtemp(prefix="salvus-sage-", dir="/tmp"))
    # A secret in the worker's environment, as supervisord may pass one.
    worker = WorkerProcess(folder, "sage", env={"SALVUS_TEST_SECRET": SECRET})
    try:
        worker.wait_ready()
        client = worker.client()
        yield client, client.start()
    finally:
        worker.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("code, shown", [
    ("2^3", "8"),
    ("1/2", "1/2"),
    ("type(1/2)", "<class 'sage.rings.rational.Rational'>"),
    ("2^10 + 0.5", "1024.50000000000"),
    ("f(x) = x^2\nf(3)", "9"),
    ("factor(2^32 + 1)", "641 * 6700417"),
    ("pari('nextprime(10^20)')", "100000000000000000039"),
    ("matrix(QQ, [[1, 2], [3, 4]]).det()", "-2"),
    ("R.<t> = PolynomialRing(ZZ)\n(t + 1)^2", "t^2 + 2*t + 1"),
    ("integrate(x^2, x)", "1/3*x^3"),
    ("None", None),
])
def test_preparser_and_display_as_in_sage(sage, code, shown):
    client, session = sage
    result = client.run(session, code)
    assert result.status == "ok", result.messages
    assert result.text == shown


def test_a_bare_result_is_the_repls_text_and_typesetting_is_asked_for(sage):
    client, _ = sage
    session = client.start()
    data = client.run(session, "sqrt(2)/3").of("result")[0]["data"]
    assert data == {"text/plain": "1/3*sqrt(2)"}  # as the Sage REPL shows it
    for code in ("show(sqrt(2)/3)", "pretty_print(sqrt(2)/3)",
                 "%display latex\nsqrt(2)/3", "pretty_print_default(True)\nsqrt(2)/3",
                 "typeset_mode(True)\nsqrt(2)/3"):
        data = client.run(session, code).of("result")[0]["data"]
        assert data["text/latex"] == "\\frac{1}{3} \\, \\sqrt{2}", code
        client.run(session, "%display default")
    assert client.run(session, "sqrt(2)/3").of("result")[0]["data"] == {
        "text/plain": "1/3*sqrt(2)"}


@pytest.mark.parametrize("code, shown", [
    ("latex(x^2)", "x^{2}"),  # the source, not typeset
    ("Permutations(3).options(display='cycle')\nPermutation([2, 1, 3])", "(1,2)"),
    ("QQbar.category()", "Category of infinite fields"),
    ("%display ascii_art\nx^10/3", " 10\nx  \n---\n 3 "),
    ("%display unicode_art\nmatrix([[1, 2], [3, 4]])", "⎛1 2⎞\n⎝3 4⎠"),
])
def test_results_look_as_in_the_sage_repl(sage, code, shown):
    client, _ = sage
    session = client.start()
    result = client.run(session, code)
    assert result.status == "ok", result.messages
    assert result.of("result")[-1]["data"] == {"text/plain": shown}


def test_display_magic_errors_are_sages_one_line(sage):
    client, session = sage
    result = client.run(session, "%display nonsense")
    assert result.status == "ok"
    assert "value must be unset (None) or one of" in result.of("stream")[0]["text"]


def test_html_is_sent_as_html(sage):
    client, session = sage
    data = client.run(session, "html('<b>bold</b>')").of("result")[0]["data"]
    assert data == {"text/plain": "<b>bold</b>", "text/html": "<b>bold</b>"}


def test_show_of_an_expression_typesets(sage):
    client, session = sage
    result = client.run(session, "show(x^2/2)")
    assert result.of("result")[0]["data"]["text/latex"] == "\\frac{1}{2} \\, x^{2}"


@pytest.mark.parametrize("code", [
    "plot(sin(x), (x, 0, 2*pi))",
    "show(plot(sin(x), (x, 0, 2*pi)) + point((1, 1)))",
    "plot(cos(x), (x, 0, 1)).show()",
    "graphics_array([plot(sin(x), (x, 0, 1)), line([(0, 0), (1, 2)]) + text('hi', (1, 1))])",
    "show(graphics_array([point((1, 2)), plot(x^2, (x, -1, 1))]))",
])
def test_sage_graphics_become_images(sage, code):
    client, session = sage
    result = client.run(session, code)
    assert result.status == "ok", result.messages
    [image] = result.of("image")
    assert image["mime"] == "image/svg+xml"
    assert b"<svg" in result.blobs[result.messages.index(image)][:400]
    assert result.of("result") == []


def test_errors_are_clean_and_interrupts_work(sage):
    client, session = sage
    result = client.run(session, "1/0")
    assert result.status == "error"
    assert result.of("error")[0]["ename"] == "ZeroDivisionError"
    assert "sage_worker" not in result.of("error")[0]["traceback"]
    # The traceback quotes what the user wrote, not the preparsed code.
    assert "    1/0\n" in result.of("error")[0]["traceback"]
    assert "_sage_const_" not in result.of("error")[0]["traceback"]
    execution = client.execute(session, "while True: pass")
    time.sleep(0.5)
    client.request("interrupt", session=session)
    assert client.collect(execution, timeout=10)[-1][0]["status"] == "interrupted"
    assert client.run(session, "2^2").text == "4"


def test_sessions_get_fresh_random_seeds(sage):
    client, _ = sage
    draws = {client.run(client.start(), "ZZ.random_element(10^30)").text for _ in range(3)}
    assert len(draws) == 3


def test_syntax_errors_quote_the_users_line(sage):
    client, session = sage
    result = client.run(session, "x = 1\n  y = 0.5")
    assert result.status == "error"
    assert "y = 0.5" in result.of("error")[0]["traceback"]
    assert "_sage_const_" not in result.of("error")[0]["traceback"]
    # no carets: their columns would point into the preparsed line
    broken = client.run(session, "factor(2^64 1)").of("error")[0]["traceback"]
    assert "factor(2^64 1)" in broken and "^^^" not in broken


# Maxima (through the symbolic ring and as an interface), PARI/GP, GAP,
# libgap and Singular start lazily, in the session: each needs the folders
# sage.env put into the worker's environment, and a DOT_SAGE it may write.
@pytest.mark.parametrize("code, shown", [
    ("solve(x^2 - 2 == 0, x)", "[x == -sqrt(2), x == sqrt(2)]"),
    ("limit(sin(x)/x, x=0)", "1"),
    ("taylor(sin(x), x, 0, 5)", "1/120*x^5 - 1/6*x^3 + x"),
    ("simplify(x - x)", "0"),
    ("y = function('y')(x)\ndesolve(diff(y, x) == y, y)", "_C*e^x"),
    ("integrate(1/(1 + x^2), x)", "arctan(x)"),
    ("k = var('k')\nsum(1/k^2, k, 1, oo)", "1/6*pi^2"),
    ("maxima('2 + 3')", "5"),
    ("gp('nextprime(100)')", "101"),
    ("gap('Size(SymmetricGroup(4))')", "24"),
    ("libgap.SymmetricGroup(4).Size()", "24"),
    ("singular('2 + 3')", "5"),
])
def test_every_interface_that_works_natively_works_in_a_session(sage, code, shown):
    client, session = sage
    result = client.run(session, code, timeout=120)
    assert result.status == "ok", result.messages
    assert result.text == shown


def test_each_session_has_a_dot_sage_of_its_own_and_no_secret(sage):
    client, _ = sage
    first, second = client.start(), client.start()
    wrote = client.run(first, "import os\nfrom sage.env import DOT_SAGE\n"
                              "open(os.path.join(DOT_SAGE, 'mine'), 'w').write('1')\n"
                              "DOT_SAGE.startswith(os.environ['HOME'])")
    assert wrote.text == "True", wrote.messages
    seen = client.run(second, "import os\nfrom sage.env import DOT_SAGE\n"
                              "os.path.exists(os.path.join(DOT_SAGE, 'mine'))")
    assert seen.text == "False", seen.messages
    environment = client.run(second, "import os\ndict(os.environ)").text
    assert "ECLDIR" in environment and "DOT_SAGE" in environment
    assert "SALVUS_TEST_SECRET" not in environment and SECRET not in environment


def test_underscores_hold_the_last_three_results_as_in_the_repl(sage):
    client, _ = sage
    session = client.start()
    for code in ("2 + 2", "3/4", "x^2"):
        client.run(session, code)
    assert client.run(session, "(_, __, ___)").text == "(x^2, 3/4, 4)"
    client.run(session, "_ = 'mine'")
    client.run(session, "5")
    assert client.run(session, "_").text == "'mine'"  # an assigned _ is the user's


def test_the_symbolic_variable_x_is_a_global_as_in_sage(sage):
    """clear_vars() and del remove x, as in the REPL (found by the fidelity
    suite: x was served from the namespace's builtins, so it stayed)."""
    client, _ = sage
    session = client.start()
    client.run(session, "var('y z'); clear_vars()")
    assert client.run(session, "x + 1").of("error")[0]["evalue"] == "name 'x' is not defined"
    other = client.start()
    assert client.run(other, "x + 1").text == "x + 1"  # the next session has it again
    client.run(other, "del x")
    assert client.run(other, "x").of("error")[0]["ename"] == "NameError"


def test_sleep_takes_the_preparsers_reals(sage):
    client, session = sage
    for code in ("sleep(0.05)", "import time\ntime.sleep(0.05)", "sleep(1/20)"):
        result = client.run(session, code)
        assert result.status == "ok", result.messages


def test_a_slider_over_sage_integers_shows_decimals(sage):
    client, session = sage
    result = client.run(session, "@interact\ndef f(x=(1, 10), y=(0, pi), n=(1, 3, 1/2)):\n"
                                 "    print(x, n)")
    controls = {c["name"]: c for c in result.of("interact")[0]["controls"]}
    assert controls["x"]["labels"][:4] == ["1.0", "1.09", "1.18", "1.27"]
    assert controls["x"]["labels"][-1] == "10.0"
    assert controls["y"]["labels"][1] == "0.0314159"  # pi/100, readable
    assert controls["n"]["labels"] == ["1", "3/2", "2", "5/2", "3"]  # a given step stays exact
    assert result.of("stream")[0]["text"] == "1.0 1\n"


def test_a_sympy_plot_shows_its_figure_and_nothing_else(sage):
    client, session = sage
    result = client.run(session, "import sympy\nt = sympy.Symbol('t')\nsympy.plot(t**2)")
    assert result.status == "ok", result.messages
    assert [m["type"] for m in result.messages] == ["image", "done"]


@pytest.mark.parametrize("code, data", [
    ("%md\n# Title\n*some* text", {"text/plain": "# Title\n*some* text",
                                    "text/html": "<h1>Title</h1>\n<p><em>some</em> text</p>\n"}),
    ("%html\n<b>bold</b>", {"text/plain": "<b>bold</b>", "text/html": "<b>bold</b>"}),
    ("%latex\n\\frac{1}{2}", {"text/plain": "\\frac{1}{2}", "text/latex": "\\frac{1}{2}"}),
    ("%python\n2^3", {"text/plain": "1"}),  # plain Python: ^ is xor
])
def test_cell_modes(sage, code, data):
    client, session = sage
    result = client.run(session, code)
    assert result.status == "ok", result.messages
    assert result.of("result")[0]["data"] == data


def test_python_mode_errors_point_at_the_users_line(sage):
    client, session = sage
    error = client.run(session, "%python\nvalue = 1\nvalue / 0").of("error")[0]
    assert error["ename"] == "ZeroDivisionError"
    assert "line 3" in error["traceback"] and "value / 0" in error["traceback"]


def test_an_unknown_cell_mode_is_named_with_the_ones_there_are(sage):
    client, session = sage
    result = client.run(session, "%mdx\nhello")
    assert result.status == "error"
    error = result.of("error")[0]
    assert error["ename"] == "UsageError" and "%mdx" in error["evalue"]
    assert "%md, %html, %latex, %python" in error["evalue"]


def test_help_shows_signature_and_docstring_and_source(sage):
    client, session = sage
    asked = client.run(session, "factor?").text
    assert asked.startswith("Signature: factor(n, proof=None")
    assert "Docstring:" in asked and "Return the factorization" in asked
    assert "``" not in asked  # Sage's reST, made into its REPL's text
    assert client.run(session, "help(factor)").text == asked
    assert client.run(session, "?factor").text == asked
    source = client.run(session, "factor??").text
    assert "Source:\ndef factor(n, proof=None" in source
    method = client.run(session, "ZZ.random_element?").text
    assert "Signature: random_element(" in method
    missing = client.run(session, "no_such_name?")
    assert missing.status == "error" and missing.of("error")[0]["ename"] == "NameError"


def test_completion_knows_sages_names(sage):
    client, session = sage
    names = client.complete(session, "facto").of("completions")[0]["matches"]
    assert "factor" in names and "factorial" in names
    assert "random_element" in client.complete(session, "ZZ.random_e").of(
        "completions")[0]["matches"]


def test_the_worksheets_switches_typeset_and_plain_python(sage):
    client, session = sage
    typeset = client.run(session, "x^2/2", typeset=True).of("result")[0]["data"]
    assert typeset["text/latex"] == "\\frac{1}{2} \\, x^{2}"
    assert client.run(session, "2^3", language="python").text == "1"
    error = client.run(session, "a = 1\n1/0", language="python").of("error")[0]
    assert "line 2" in error["traceback"]  # the user's line numbers
    assert client.run(session, "2^3", language="sage").text == "8"
    refused = client.request("execute", session=session, execution="e", code="1",
                             language="fortran")
    assert refused["type"] == "error" and "language" in refused["message"]


def test_3d_graphics_become_a_scene_or_a_picture(sage):
    client, session = sage
    code = ("y = var('y')\nplot3d(x*y, (x, -1, 1), (y, -1, 1)) + line3d([(0, 0, 0), (1, 1, 1)])"
            " + point3d((1, 0, 0)) + text3d('A', (0, 1, 0))")
    result = client.run(session, code)
    assert result.status == "ok", result.messages
    data = result.of("result")[0]["data"]
    assert data["text/plain"] == "Graphics3d Object"
    scene = json.loads(data["application/vnd.salvus.scene3d+json"])
    assert [kind for kind, _ in scene["objects"]] == ["surface", "line", "point", "text"]
    surface = scene["objects"][0][1]
    assert len(surface["vertices"]) % 3 == 0 and surface["faces"]
    assert max(max(face) for face in surface["faces"]) < len(surface["vertices"]) // 3
    assert scene["bounds"] == [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
    for shown in ("sphere().show()", "show(sphere(), viewer='threejs')"):
        assert "application/vnd.salvus.scene3d+json" in client.run(session, shown).of(
            "result")[0]["data"]
    picture = client.run(session, "sphere()", webgl=False)
    assert picture.of("image")[0]["mime"] == "image/png" and not picture.of("result")
    assert picture.blobs[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_every_expression_of_the_last_line_shows_as_in_sage(sage):
    client, session = sage
    shown = client.run(session, "m = matrix(ZZ, [[1, 2], [3, 4]]); m; m.parent()")
    assert [r["data"]["text/plain"] for r in shown.of("result")] == [
        "[1 2]\n[3 4]", "Full MatrixSpace of 2 by 2 dense matrices over Integer Ring"]
    block = client.run(session, "with assuming(x > 0):\n    solve(x^2 == 4, x)")
    assert block.text == "[x == 2]"
    earlier = client.run(session, "1 + 1\n2 + 2")
    assert [r["data"]["text/plain"] for r in earlier.of("result")] == ["4"]


@pytest.mark.parametrize("code", ["factor(2^1001 - 1)", "pari('factor(2^1001 - 1)')",
                                  "while True: pass"])
def test_an_interrupt_stops_compiled_code_and_keeps_the_session(sage, code):
    client, _ = sage
    session = client.start()
    client.run(session, "kept = 42")
    execution = client.execute(session, code)
    time.sleep(1)  # well into the computation (it takes minutes)
    client.request("interrupt", session=session)
    messages = [m for m, _ in client.collect(execution, timeout=30)]
    assert messages[-1]["status"] == "interrupted"  # not killed after the grace time
    assert client.run(session, "kept").text == "42"


def test_sages_alarm_interrupts_as_in_sage(sage):
    client, session = sage
    result = client.run(session, "try:\n    alarm(0.5)\n    factor(2^1001 - 1)\n"
                                 "except AlarmInterrupt:\n    print('alarm')")
    stdout = [m["text"] for m in result.of("stream") if m["name"] == "stdout"]
    assert result.status == "ok" and stdout == ["alarm\n"]
