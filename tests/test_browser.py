"""End to end in real headless Chromium (Debian's, driven by Playwright) against
an appliance started by salvusctl: two frontends, two Sage workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import run, started_appliance, wait_for

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def appliance():
    with started_appliance("salvus-e2e-", "--web", "2", "--workers", "2") as (data, base,
                                                                             started):
        assert f"open http://127.0.0.1:{base}/" in started.stdout
        yield data, base


@pytest.fixture
def page(chromium, appliance, request):
    _, base = appliance
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto(f"http://127.0.0.1:{base}/")
    wait_ready(page)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    context.close()


def wait_ready(page) -> None:
    expect(page.locator("#status")).to_have_text("connected")
    page.wait_for_selector(".CodeMirror")


def type_code(page, code: str) -> None:
    """Put code into the focused cell: typed when it is one line, set through
    CodeMirror when it has several (typing would meet the editor's indenting)."""
    if "\n" not in code:
        page.keyboard.type(code)
        return
    page.evaluate("code => document.querySelector('.cell.focused .CodeMirror')"
                  ".CodeMirror.setValue(code)", code)


def run_cell(page, code: str, index: int) -> None:
    """Put code into the focused (last) cell and press Shift+Enter."""
    type_code(page, code)
    page.keyboard.press("Shift+Enter")
    expect(page.locator(".cell").nth(index)).to_have_attribute("data-status", "ok", timeout=30000)


def cell(page, index: int):
    return page.locator(".cell").nth(index)


def result(page, index: int):
    """The plain text of a cell's result (typeset ones show it as math)."""
    return cell(page, index).locator(".result").last


def test_two_plus_two(page):
    expect(page.locator("header .brand")).to_have_text("Salvus")
    run_cell(page, "2+2", 0)
    expect(result(page, 0)).to_have_attribute("data-plain", "4")
    # Shift+Enter moved on to a new cell
    assert page.locator(".cell").count() == 2


def codes(page) -> list[str]:
    """The worksheet's cells, in order, as they would run (a text cell's with %md)."""
    return page.evaluate("() => state.order.map((id) => codeOf(state.cells.get(id)))")


def test_a_first_visit_shows_help_whose_examples_go_into_a_cell(page):
    expect(page.locator("#help")).to_be_visible()
    expect(cell(page, 0).locator(".placeholder")).to_be_visible()  # says what to type
    page.click("#help [data-example^='factor']")
    expect(cell(page, 0).locator(".placeholder")).to_be_hidden()
    cell(page, 0).locator(".run").click()  # a button, for phones
    expect(result(page, 0)).to_have_attribute("data-plain", "274177 * 67280421310721")
    page.click("#helpclose")
    expect(page.locator("#help")).to_be_hidden()
    page.keyboard.type("a = 1")  # the editor has the keys again: no command runs
    expect(cell(page, 0).locator(".CodeMirror-line")).to_have_text("factor(2^64 + 1)a = 1")
    page.reload()
    wait_ready(page)
    expect(page.locator("#help")).to_be_hidden()  # seen once: not again


def test_cells_are_managed_from_the_keyboard_and_a_reload_keeps_them(page):
    page.keyboard.type("1+1")
    page.keyboard.press("Escape")  # command mode
    for key in ("b", "Enter"):
        page.keyboard.press(key)
    page.keyboard.type("2+2")
    page.keyboard.press("Escape")
    page.keyboard.press("Alt+ArrowUp")
    assert codes(page) == ["2+2", "1+1"]
    page.keyboard.press("b")
    expect(page.locator(".cell")).to_have_count(3)
    for key in ("d", "d"):
        page.keyboard.press(key)
    expect(page.locator(".cell")).to_have_count(2)
    page.keyboard.press("z")  # undo
    expect(page.locator(".cell")).to_have_count(3)
    for key in ("d", "d"):
        page.keyboard.press(key)
    expect(page.locator("#notice")).to_contain_text("Cell deleted")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("m")  # a text cell
    page.keyboard.press("Enter")
    page.keyboard.press("Control+a")
    page.keyboard.type("# Notes")
    page.keyboard.press("Control+Enter")
    expect(cell(page, 1).locator(".result h1")).to_have_text("Notes")
    expect(cell(page, 1).locator(".CodeMirror")).to_be_hidden()  # shown rendered
    assert codes(page) == ["2+2", "%md\n# Notes"]
    page.wait_for_timeout(600)  # the layout is sent 0.3 s after a change
    page.reload()
    wait_ready(page)
    assert codes(page) == ["2+2", "%md\n# Notes"]
    expect(cell(page, 1).locator(".result h1")).to_have_text("Notes")


def test_a_reload_shows_each_cells_latest_run_and_its_interacts_values(page):
    run_cell(page, "print('first run')", 0)
    page.locator(".cell .CodeMirror").first.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("print('second run')")
    page.keyboard.press("Control+Enter")
    expect(cell(page, 0).locator(".output")).to_have_text("second run")
    edit_last = page.locator(".cell .CodeMirror").nth(1)
    edit_last.click()
    run_cell(page, "@interact\ndef square(n=(1, 9, 1)):\n    print(n * n)", 1)
    slider = cell(page, 1).locator("input[type=range]")
    slider.evaluate("s => { s.value = 4; s.dispatchEvent(new Event('input')); }")
    expect(cell(page, 1).locator(".interact-output")).to_have_text("25")
    page.reload()
    wait_ready(page)
    expect(cell(page, 0).locator(".output")).to_have_text("second run")
    expect(cell(page, 1).locator(".interact-output")).to_have_text("25")
    expect(cell(page, 1).locator("input[type=range]")).to_have_value("4")
    expect(cell(page, 1).locator(".control .value")).to_have_text("5")


def test_restart_asks_first(page):
    run_cell(page, "answer = 7", 0)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#restart")
    cell(page, 1).locator(".CodeMirror").click()
    run_cell(page, "answer", 1)
    expect(result(page, 1)).to_have_attribute("data-plain", "7")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#restart")
    expect(page.locator("#notice")).to_contain_text("Session restarted")
    cell(page, 2).locator(".CodeMirror").click()
    type_code(page, "answer")  # (x would be Sage's variable)
    page.keyboard.press("Shift+Enter")
    expect(cell(page, 2)).to_have_attribute("data-status", "error")


def test_over_the_limit_a_tab_shows_the_worksheets_open_and_can_close_one(chromium,
                                                                            appliance):
    _, base = appliance
    context = chromium.new_context()
    try:
        tabs = []
        for _ in range(10):  # [web] sessions_per_browser
            tabs.append(context.new_page())
            tabs[-1].goto(f"http://127.0.0.1:{base}/")
            wait_ready(tabs[-1])
        extra = context.new_page()
        extra.goto(f"http://127.0.0.1:{base}/")
        listed = extra.locator("#overlimit li")
        expect(listed).to_have_count(10)
        expect(extra.locator("#overlimit h2")).to_contain_text("the limit of this appliance (10)")
        listed.first.locator(".close").click()
        wait_ready(extra)  # a worksheet of its own now
        expect(extra.locator("#overlimit")).to_be_hidden()
        # The first listed is the oldest: the first tab's, which is told.
        expect(tabs[0].locator("#notice")).to_contain_text("closed from another tab")
        tabs[1].close(run_before_unload=True)  # closing a tab frees its worksheet at once
        another = context.new_page()
        another.goto(f"http://127.0.0.1:{base}/")
        wait_ready(another)
    finally:
        context.close()


AXE_VERSION = "4.10.2"


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe-core from the npm registry (cached in test-artifacts/): the
    accessibility checker the issue names."""
    cached = ARTIFACTS / f"axe-core-{AXE_VERSION}.min.js"
    if not cached.exists():
        ARTIFACTS.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            subprocess.run(["npm", "pack", "--silent", f"axe-core@{AXE_VERSION}"], cwd=work,
                           check=True, timeout=120, capture_output=True)
            with tarfile.open(Path(work) / f"axe-core-{AXE_VERSION}.tgz") as tar:
                member = tar.extractfile("package/axe.min.js")
                cached.write_bytes(member.read())
    return cached.read_text()


def serious_violations(page, axe_source: str) -> list[str]:
    # Evaluated through the DevTools protocol: the page's CSP (no inline
    # script) does not apply to it, and the page itself is not changed.
    found = page.evaluate(axe_source + "\n;axe.run(document, {resultTypes: ['violations']})"
                          ".then(r => r.violations.filter(v => ['serious', 'critical']"
                          ".includes(v.impact)).map(v => v.id + ': ' + v.help + ' ' + "
                          "v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', ')))")
    return found


def test_no_serious_accessibility_violation_on_the_worksheet(page, axe_source):
    run_cell(page, "factor(2^64 + 1)", 0)
    run_cell(page, "@interact\ndef square(n=(1, 9, 1)):\n    print(n * n)", 1)
    run_cell(page, "plot(sin(x), (x, 0, pi), title='sine')", 2)
    expect(cell(page, 2).locator("img")).to_have_count(1)
    assert serious_violations(page, axe_source) == []
    page.keyboard.press("Escape")  # command mode: the selected cell shows focus
    assert serious_violations(page, axe_source) == []


def test_keyboard_focus_is_visible(page):
    page.keyboard.press("Escape")  # command mode: the cell itself has the focus
    ring = cell(page, 0).evaluate("el => getComputedStyle(el).boxShadow")
    assert ring not in ("", "none")
    page.keyboard.press("Tab")  # onto the cell's Run button
    focused = page.evaluate("() => document.activeElement.className")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert focused == "run" and outline == "solid"


def test_no_serious_accessibility_violation_on_a_permalink_and_the_404(page, appliance,
                                                                       axe_source):
    _, base = appliance
    run_cell(page, "2 + 2", 0)
    page.click("#share")
    link = page.locator("#sharelink")
    expect(link).to_have_value(re.compile("/s/"))
    page.goto(link.input_value())
    wait_ready(page)
    assert serious_violations(page, axe_source) == []
    page.goto(f"http://127.0.0.1:{base}/s/nosuchlink")
    assert serious_violations(page, axe_source) == []
    page.goto(f"http://127.0.0.1:{base}/no/such/page")
    assert serious_violations(page, axe_source) == []


def test_ten_thousand_lines_twenty_times(page):
    for i in range(20):
        run_cell(page, "for i in range(10**4): print(i)", i)
        output = cell(page, i).locator(".output pre")
        assert output.inner_text().rstrip().endswith("9999")
        assert output.inner_text().count("\n") >= 9999


def test_matplotlib_and_sage_plots_appear(page):
    run_cell(page, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])", 0)
    run_cell(page, "plot(sin(x), (x, 0, 2*pi))", 1)
    for index in (0, 1):
        image = cell(page, index).locator("img")
        expect(image).to_have_count(1)
        wait_for(lambda i=image: i.evaluate("img => img.complete && img.naturalWidth > 100"),
                 timeout=10, what="the image to load")


def test_results_are_sages_text_and_show_typesets(page):
    run_cell(page, "integrate(x^2, x)", 0)
    expect(result(page, 0)).to_have_attribute("data-plain", "1/3*x^3")
    expect(cell(page, 0).locator(".katex")).to_have_count(0)
    expect(result(page, 0).locator("pre")).to_have_text("1/3*x^3")
    run_cell(page, "show(integrate(x^2, x))", 1)
    expect(cell(page, 1).locator(".katex")).to_have_count(1)


def test_the_typeset_and_language_switches_apply_and_are_remembered(page):
    page.locator("#typeset").check()
    page.locator(".cell .CodeMirror").first.click()
    run_cell(page, "x^2/2", 0)
    expect(cell(page, 0).locator(".katex")).to_have_count(1)
    page.locator("#language").select_option("python")
    page.locator(".cell .CodeMirror").nth(1).click()
    run_cell(page, "2^3", 1)
    expect(result(page, 1)).to_have_attribute("data-plain", "1")  # xor: plain Python
    page.reload()
    wait_ready(page)
    expect(page.locator("#typeset")).to_be_checked()
    expect(page.locator("#language")).to_have_value("python")
    page.locator("#typeset").uncheck()
    page.locator("#language").select_option("sage")


PLOT3D = "y = var('y')\nplot3d(sin(x*y), (x, -2, 2), (y, -2, 2)) + text3d('peak', (0, 0, 1.2))"


def test_3d_graphics_are_rotatable_scenes_in_a_sandboxed_frame(page):
    run_cell(page, PLOT3D, 0)
    frame = cell(page, 0).locator("iframe.scene3d")
    expect(frame).to_have_attribute("sandbox", "allow-scripts")
    viewer = page.frame_locator(".cell >> nth=0 >> iframe.scene3d")
    expect(viewer.locator("body")).to_have_attribute("data-drawn", "2")
    canvas = viewer.locator("canvas")
    before = canvas.screenshot()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 320, box["y"] + 240, steps=5)
    page.mouse.up()
    assert canvas.screenshot() != before  # it turned
    # The frame has an origin of its own: nothing of the page is reachable.
    assert viewer.locator("body").evaluate(
        "() => { try { return String(window.parent.document.cookie); }"
        " catch (e) { return 'blocked'; } }") == "blocked"


def test_3d_graphics_are_pictures_where_webgl_is_missing(chromium, appliance):
    _, base = appliance
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script("HTMLCanvasElement.prototype.getContext = () => null;")
    page = context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{base}/")
        wait_ready(page)
        run_cell(page, "sphere(color='red')", 0)
        image = cell(page, 0).locator("img")
        expect(image).to_have_count(1)
        wait_for(lambda: image.evaluate("img => img.complete && img.naturalWidth > 100"),
                 timeout=10, what="the picture to load")
        assert cell(page, 0).locator("iframe").count() == 0
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "3d_without_webgl.png")
        context.close()


def test_markdown_and_html_cells_render_and_scripts_do_not_run(page):
    run_cell(page, "%md\n# Notes\n*Euler*: $e^{i\\pi}+1=0$\n\n| a | b |\n|---|---|\n| 1 | 2 |", 0)
    expect(cell(page, 0).locator(".result h1")).to_have_text("Notes")
    expect(cell(page, 0).locator(".result table td").first).to_have_text("1")
    expect(cell(page, 0).locator(".result .katex")).to_have_count(1)  # the formula
    run_cell(page, "%html\n<b id=bold>bold</b><img src=x onerror=\"document.title='owned'\">"
                   "<script>document.title='owned'</script>", 1)
    expect(cell(page, 1).locator(".result b")).to_have_text("bold")
    assert cell(page, 1).locator("script").count() == 0
    assert page.title() != "owned"


def test_tab_completes_from_the_live_session_and_help_shows_the_docstring(page):
    run_cell(page, "radius_of_circle = 3\nradius_of_sphere = 4", 0)
    page.keyboard.type("radius_of_c")
    page.keyboard.press("Tab")  # one match: put in at once
    editor = cell(page, 1).locator(".CodeMirror")
    expect(editor.locator(".CodeMirror-line")).to_have_text("radius_of_circle")
    page.keyboard.type(" + radius_of_")
    page.keyboard.press("Tab")  # two: a popup to choose from
    expect(page.locator(".CodeMirror-hints li")).to_have_text(["radius_of_circle",
                                                               "radius_of_sphere"])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(editor.locator(".CodeMirror-line")).to_have_text(
        "radius_of_circle + radius_of_sphere")
    page.keyboard.press("Shift+Enter")
    expect(result(page, 1)).to_have_attribute("data-plain", "7")
    run_cell(page, "factor?", 2)
    expect(result(page, 2).locator("pre")).to_contain_text("Signature: factor(n")
    expect(result(page, 2).locator("pre")).to_contain_text("Return the factorization")


def test_error_shows_a_traceback(page):
    page.keyboard.type("1/0")
    page.keyboard.press("Shift+Enter")
    expect(cell(page, 0)).to_have_attribute("data-status", "error")
    error = cell(page, 0).locator(".error")
    expect(error).to_contain_text("ZeroDivisionError")
    expect(error).to_contain_text("1/0")


def test_interrupt_a_busy_loop(page):
    page.keyboard.type("while True: pass")
    page.keyboard.press("Control+Enter")
    expect(cell(page, 0)).to_have_class("cell focused running")  # the worker said so
    time.sleep(1)
    page.click("#interrupt")
    expect(cell(page, 0)).to_have_attribute("data-status", "interrupted")
    page.locator(".cell .CodeMirror").nth(0).click()
    page.keyboard.press("Control+A")
    page.keyboard.type("3*3")
    page.keyboard.press("Control+Enter")
    expect(cell(page, 0)).to_have_attribute("data-status", "ok")


def test_reload_mid_output_shows_the_output_so_far_then_the_rest(page):
    type_code(page, "import time\nfor i in range(40):\n    print('line', i)\n"
                    "    time.sleep(float(0.1))")
    page.keyboard.press("Shift+Enter")
    expect(cell(page, 0).locator(".output")).to_contain_text("line 5")
    page.reload()
    wait_ready(page)
    output = cell(page, 0).locator(".output")
    expect(output).to_contain_text("line 0")
    assert "line 39" not in output.inner_text()
    expect(output).to_contain_text("line 39", timeout=20000)
    expect(cell(page, 0)).to_have_attribute("data-status", "ok")
    text = output.inner_text()
    assert [f"line {i}" for i in range(40)] == [t for t in text.splitlines() if t]


def worker_sessions(data) -> dict[int, int]:
    """Each worker's pid and how many sessions it holds (asked over CURVE)."""
    from sage_worker import curve
    from salvusctl.config import load
    from salvusctl.probe import ping_worker

    keys = data / "secrets" / "curve"
    port = load(data / "salvus.conf").get("worker", "port")
    pongs = [ping_worker(f"tcp://127.0.0.1:{port + i}", curve.load_public(keys / "worker.key"),
                         curve.load_pair(keys / "web.key_secret"), timeout=10)
             for i in range(2)]
    return {pong["pid"]: pong["sessions"] for pong in pongs}


def test_kill_9_of_the_worker_shows_a_notice_and_the_next_run_works(page, appliance):
    data, _ = appliance
    before = worker_sessions(data)
    type_code(page, "1")
    page.keyboard.press("Shift+Enter")
    expect(cell(page, 0)).to_have_attribute("data-status", "ok")
    after = worker_sessions(data)
    [worker_pid] = [pid for pid in after if after[pid] == before.get(pid, 0) + 1]
    type_code(page, "import time\ntime.sleep(120)")
    page.keyboard.press("Shift+Enter")
    time.sleep(0.5)
    os.kill(worker_pid, signal.SIGKILL)
    expect(cell(page, 1)).to_have_attribute("data-status", "killed", timeout=20000)
    expect(cell(page, 1).locator(".notice")).to_contain_text("stopped")
    page.keyboard.type("7*6")
    page.keyboard.press("Shift+Enter")
    expect(cell(page, 2)).to_have_attribute("data-status", "ok", timeout=30000)
    expect(result(page, 2)).to_have_attribute("data-plain", "42")
    # supervisord brought the killed worker back
    wait_for(lambda: json.loads(run(data, "status", "--json").stdout) and all(
        row["state"] == "RUNNING" for row in json.loads(run(data, "status", "--json",
                                                            check=False).stdout)),
             timeout=30, what="every program RUNNING again")


def test_a_second_frontend_serves_another_browser_at_the_same_time(chromium, appliance,
                                                                     page):
    _, base = appliance
    other_context = chromium.new_context(viewport={"width": 420, "height": 800})
    other = other_context.new_page()
    try:
        other.goto(f"http://127.0.0.1:{base + 1}/")
        wait_ready(other)
        type_code(other, "import time\ntime.sleep(1)\n'second'")
        other.keyboard.press("Shift+Enter")
        page.keyboard.type("'first'")
        page.keyboard.press("Shift+Enter")
        expect(result(page, 0)).to_have_attribute("data-plain", "'first'")
        expect(result(other, 0)).to_have_attribute("data-plain", "'second'")
        ARTIFACTS.mkdir(exist_ok=True)
        other.screenshot(path=ARTIFACTS / "second_frontend_narrow.png", full_page=True)
    finally:
        other_context.close()


def test_an_admin_message_is_a_banner_on_every_frontends_pages(chromium, appliance, page):
    data, base = appliance
    other_context = chromium.new_context(viewport={"width": 420, "height": 800})
    other = other_context.new_page()
    try:
        other.goto(f"http://127.0.0.1:{base + 1}/")  # the other frontend
        wait_ready(other)
        text = "Maintenance at 22:00 <b>UTC</b>: save your work."
        sent = run(data, "message", text)
        assert sent.stdout.startswith("delivered to 2 browser(s)")
        for shown in (page, other):
            banner = shown.locator(".announcement")
            expect(banner.locator(".text")).to_have_text(text)  # as text, never HTML
            expect(banner.locator(".from")).to_have_text("from the admin")
        ARTIFACTS.mkdir(exist_ok=True)
        other.screenshot(path=ARTIFACTS / "admin_message_narrow.png")
        other.get_by_role("button", name="dismiss").click()
        expect(other.locator(".announcement")).to_have_count(0)
        expect(page.locator(".announcement")).to_have_count(1)  # dismissed there only
    finally:
        other_context.close()


def start_printing(page, lines: int) -> None:
    """The first cell prints ``lines`` lines, one every 0.1 s; returns once
    a few have shown."""
    type_code(page, f"import time\nfor i in range({lines}):\n    print('line', i)\n"
                    "    time.sleep(0.1)")
    page.keyboard.press("Shift+Enter")
    expect(cell(page, 0).locator("pre.stdout")).to_contain_text("line 3")


def expect_every_line_once(page, lines: int) -> None:
    """The printing cell finished, connected, each of its lines shown once."""
    expect(cell(page, 0)).to_have_attribute("data-status", "ok", timeout=60000)
    expect(page.locator("#status")).to_have_text("connected")
    text = cell(page, 0).locator("pre.stdout").inner_text()
    assert text.split("\n")[:lines] == [f"line {i}" for i in range(lines)]
    assert text.count(f"line {lines - 1}") == 1


def kill_and_keep_down(data, name: str) -> None:
    """kill -9 of a program, then stopped, so that supervisord does not bring it back."""
    states = json.loads(run(data, "status", "--json", name).stdout)
    os.kill(states[0]["pid"], signal.SIGKILL)
    run(data, "stop", name)


def test_the_page_fails_over_to_another_frontend_and_loses_nothing(page, appliance):
    """web0 is killed (and kept down) while a cell prints: the page reconnects
    to web1, which takes the session from its worker; every line shows once."""
    data, base = appliance
    start_printing(page, 40)
    kill_and_keep_down(data, "web0")
    try:
        expect_every_line_once(page, 40)
        assert page.evaluate("state.ws.url").startswith(f"ws://127.0.0.1:{base + 1}/")
    finally:
        run(data, "start", "web0")


def test_share_then_open_the_link_shows_the_same_cells_and_output(page, chromium):
    run_cell(page, "a = 6", 0)
    run_cell(page, "a * 7", 1)
    page.click("#share")
    link = page.locator("#sharelink")
    expect(link).to_have_value(re.compile(r"/s/[A-Za-z]{6,}$"))
    url = link.input_value()
    # The link that carries the cells is made after the short one (compressed
    # asynchronously): wait for it, not for whatever the page holds yet ("#").
    expect(page.locator("#shareurl")).to_have_attribute("href", re.compile(r"/s#z="))
    in_url = page.locator("#shareurl").get_attribute("href")
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        other = context.new_page()
        other.goto(url + "?run=1")
        wait_ready(other)
        expect(other.locator(".cell")).to_have_count(2)
        expect(result(other, 1)).to_have_attribute("data-plain", "42")
        other.screenshot(path=ARTIFACTS / "shared_link_run.png", full_page=True)
        # the form that carries the cells in the URL works without the database
        second = context.new_page()
        second.goto(in_url + "")
        wait_ready(second)
        expect(second.locator(".cell")).to_have_count(2)
        assert second.locator(".cell").nth(1).locator(".CodeMirror").inner_text().strip() \
            == "a * 7"
        assert second.locator(".cell").nth(1).get_attribute("data-status") is None  # no ?run
    finally:
        context.close()


def test_unknown_link_shows_the_404_page(chromium, appliance):
    _, base = appliance
    context = chromium.new_context()
    try:
        page = context.new_page()
        response = page.goto(f"http://127.0.0.1:{base}/s/NoSuchLink")
        assert response.status == 404
        expect(page.locator("h1")).to_have_text("This link leads nowhere")
        page.screenshot(path=ARTIFACTS / "unknown_link.png")
    finally:
        context.close()


def test_interacts_with_sliders_and_input_boxes(page):
    run_cell(page, "@interact\ndef square(n=slider(1, 20, 1, default=3)):\n"
                   "    print('square', n^2)\n"
                   "@interact\ndef twice(x=input_box(5, label='x value'), show_it=True):\n"
                   "    if show_it:\n        print('twice', 2*x)", 0)
    first, second = (cell(page, 0).locator(".interact").nth(i) for i in range(2))
    expect(first.locator(".interact-output")).to_have_text("square 9")
    expect(second.locator(".interact-output")).to_have_text("twice 10")
    slider = first.locator("input[type=range]")
    slider.focus()
    for _ in range(4):  # arrow keys: several quick changes
        page.keyboard.press("ArrowRight")
    expect(first.locator(".interact-output")).to_have_text("square 49")
    expect(first.locator(".value")).to_have_text("7")
    expect(second.locator(".interact-output")).to_have_text("twice 10")  # untouched
    box = second.locator("input[type=text]")
    box.fill("21 + 1")
    box.press("Enter")
    expect(second.locator(".interact-output")).to_have_text("twice 44")
    expect(first.locator(".interact-output")).to_have_text("square 49")
    second.locator("input[type=checkbox]").uncheck()
    expect(second.locator(".interact-output")).to_have_text("")


def test_an_error_in_an_interact_keeps_its_controls_working(page):
    run_cell(page, "@interact\ndef inverse(k=[1, 0, 4]):\n    print(1/k)", 0)
    it = cell(page, 0).locator(".interact")
    expect(it.locator(".interact-output")).to_have_text("1")
    it.locator("select").select_option(label="0")
    expect(it.locator(".error")).to_contain_text("ZeroDivisionError")
    it.locator("select").select_option(label="4")
    expect(it.locator(".interact-output")).to_have_text("1/4")
    page.once("dialog", lambda dialog: dialog.accept())  # restart asks first
    page.click("#restart")
    expect(it).to_have_class(re.compile("ended"))
    expect(it.locator("select")).to_be_disabled()


def test_images_still_load_when_memcached_dies_and_that_is_logged_once(page, appliance):
    data, base = appliance
    run_cell(page, "plot(x^3, (x, -1, 1))", 0)
    url = f"http://127.0.0.1:{base}" + cell(page, 0).locator("img").get_attribute("src")
    for _ in range(2):  # the second answer comes from memcached
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b"<svg" in response.read()[:400]
    pid = next(row["pid"] for row in json.loads(run(data, "status", "--json").stdout)
               if row["name"] == "memcached")
    run(data, "stop", "memcached")
    try:
        assert not alive_pid(pid)
        for _ in range(5):
            with urllib.request.urlopen(url, timeout=5) as response:
                assert b"<svg" in response.read()[:400]
        run_cell(page, "plot(sin(x)^2, (x, 0, 3))", 1)
        image = cell(page, 1).locator("img")
        wait_for(lambda: image.evaluate("img => img.complete && img.naturalWidth > 100"),
                 timeout=10, what="the new image to load without memcached")
        log = (data / "logs" / "web0.log").read_text()
        assert log.count("memcached at") == 1 and "unavailable" in log
    finally:
        run(data, "start", "memcached")
    time.sleep(6)  # past the retry pause: the next request finds it back
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
    wait_for(lambda: "is back" in (data / "logs" / "web0.log").read_text(), timeout=5,
             what="the frontend to notice memcached is back")


def alive_pid(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_shared_link_keeps_interact_values(page, chromium):
    run_cell(page, "@interact\ndef f(n=slider(1, 10, 1, default=2), word='hi'):\n"
                   "    print(word * n)", 0)
    it = cell(page, 0).locator(".interact")
    expect(it.locator(".interact-output")).to_have_text("hihi")
    it.locator("input[type=range]").focus()
    page.keyboard.press("ArrowRight")
    expect(it.locator(".interact-output")).to_have_text("hihihi")
    it.locator("input[type=text]").fill("yo")  # a str default: taken as text
    it.locator("input[type=text]").press("Enter")
    expect(it.locator(".interact-output")).to_have_text("yoyoyo")
    page.click("#share")
    expect(page.locator("#sharelink")).to_have_value(re.compile(r"/s/[A-Za-z]{6,}$"))
    url = page.locator("#sharelink").input_value()
    context = chromium.new_context()
    try:
        other = context.new_page()
        other.goto(url + "?run=1")
        wait_ready(other)
        shared = cell(other, 0).locator(".interact")
        expect(shared.locator(".interact-output")).to_have_text("yoyoyo")
        expect(shared.locator(".value")).to_have_text("3")
    finally:
        context.close()


def test_dragging_a_slider_fast_runs_only_the_latest_value(page):
    run_cell(page, "import time\nruns = [0]\n@interact\ndef slow(n=slider(0, 50, 1)):\n"
                   "    runs[0] += 1\n    time.sleep(float(1))\n    print(n, runs[0])", 0)
    it = cell(page, 0).locator(".interact")
    expect(it.locator(".interact-output")).to_have_text("0 1")
    it.locator("input[type=range]").focus()
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    expect(it.locator(".interact-output")).to_contain_text("20 ", timeout=15000)
    runs = int(it.locator(".interact-output").inner_text().split()[1])
    # A run takes a second; twenty key presses take far less, so only a few
    # of the twenty values may have run (one at a time, the latest each time).
    assert runs <= 6, f"{runs} runs for 20 quick changes"
