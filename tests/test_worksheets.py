"""Saved worksheets for real: a frontend, PostgreSQL, signed-in clients (the
local provider), and Chromium for the page that saves itself."""

from __future__ import annotations

import re
import threading

import psycopg2
import pytest
import requests
from playwright.sync_api import expect

from tests.accounts_client import me, session, signed_in
from tests.test_browser import ARTIFACTS, cell, result, run_cell, wait_ready
from tests.web_client import Browserish


def sheet(cells: list[tuple[str, str]]) -> dict:
    """A version's content: (code, printed text) per cell."""
    return {"language": "python", "cells": [
        {"type": "code", "code": code,
         "outputs": [{"type": "stream", "name": "stdout", "text": out}] if out else []}
        for code, out in cells]}


class Client:
    """A signed-in account's JSON calls, with its CSRF token."""

    def __init__(self, web, person: dict, provider):
        provider.person = person
        self.web = web
        self.http = signed_in(web)
        self.csrf = me(self.http, web)["csrf"]

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.web.url + path, timeout=30)

    def post(self, path: str, body: dict | None = None, csrf: bool = True
             ) -> requests.Response:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return self.http.post(self.web.url + path, json=body or {}, headers=headers, timeout=30)


@pytest.fixture
def alice(signin_stack):
    web, provider, _ = signin_stack
    return Client(web, {"sub": "alice-ws", "email": "a@example.org", "name": "Alice"}, provider)


@pytest.fixture
def bob(signin_stack):
    web, provider, _ = signin_stack
    return Client(web, {"sub": "bob-ws", "email": "b@example.org", "name": "Bob"}, provider)


IMAGE = {"type": "image", "url": "/blobs/" + "ab" * 20, "width": 300}
RESULT = {"type": "result", "data": {"text/plain": "x^2", "text/latex": "$$x^{2}$$"}}


def test_history_round_trip_save_change_restore(alice):
    made = alice.post("/api/worksheets", {"title": "Primes", "content": sheet([("1+1", "2")])})
    assert made.status_code == 201
    sid = made.json()["id"]
    assert alice.post(f"/api/worksheets/{sid}/versions",
                      {"content": sheet([("1+1", "2"), ("2+3", "5")])}).json() == \
        {"version": 2, "saved": True}
    # The same again adds nothing.
    assert alice.post(f"/api/worksheets/{sid}/versions",
                      {"content": sheet([("1+1", "2"), ("2+3", "5")])}).json() == \
        {"version": 2, "saved": False}
    assert alice.post(f"/api/worksheets/{sid}/restore", {"version": 1}).json() == {"version": 3}
    newest = alice.get(f"/api/worksheets/{sid}").json()
    assert newest["version"] == 3 and newest["content"] == sheet([("1+1", "2")])
    history = alice.get(f"/api/worksheets/{sid}/versions").json()
    assert [(v["version"], v["cells"], v["restored_from"]) for v in history] == \
        [(3, 1, 1), (2, 2, None), (1, 1, None)]
    assert alice.get(f"/api/worksheets/{sid}/versions/2").json()["content"] == \
        sheet([("1+1", "2"), ("2+3", "5")])
    # Images (links to their blobs) and results come back as saved.
    pictured = sheet([("plot(x)", "")])
    pictured["cells"][0]["outputs"] = [IMAGE, RESULT]
    alice.post(f"/api/worksheets/{sid}/versions", {"content": pictured})
    assert alice.get(f"/api/worksheets/{sid}").json()["content"] == pictured


def test_rename_copy_delete_and_share_a_version(alice, signin_stack):
    web, _, _ = signin_stack
    sid = alice.post("/api/worksheets", {"content": sheet([("x = 7", "")])}).json()["id"]
    alice.post(f"/api/worksheets/{sid}/versions", {"content": sheet([("x = 8", "")])})
    assert alice.post(f"/api/worksheets/{sid}/rename", {"title": "  Seven  "}).status_code == 200
    copied = alice.post(f"/api/worksheets/{sid}/copy").json()["id"]
    titles = {s["id"]: s["title"] for s in alice.get("/api/worksheets").json()}
    assert titles[sid] == "Seven" and titles[copied] == "Copy of Seven"
    assert alice.get(f"/api/worksheets/{copied}").json()["content"] == sheet([("x = 8", "")])
    link = alice.post(f"/api/worksheets/{sid}/versions/1/share").json()["url"]
    page = requests.get(web.url + link, timeout=10)
    assert page.status_code == 200 and "x = 7" in page.text and "x = 8" not in page.text
    assert alice.post(f"/api/worksheets/{sid}/delete").status_code == 200
    assert sid not in {s["id"] for s in alice.get("/api/worksheets").json()}
    assert alice.get(f"/api/worksheets/{sid}").status_code == 404


def test_bad_input_is_named_and_saves_nothing(alice):
    sid = alice.post("/api/worksheets", {"content": sheet([("1", "")])}).json()["id"]
    for body, words in [
        ({"content": {"cells": "no"}}, "send"),
        ({"content": {"language": "fortran", "cells": [{"code": "1"}]}}, "'language'"),
        ({"content": {"cells": [{"code": "1", "outputs": [
            {"type": "image", "url": "https://tracker.example/x.png"}]}]}}, "/blobs/"),
    ]:
        answer = alice.post(f"/api/worksheets/{sid}/versions", body)
        assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    assert alice.post(f"/api/worksheets/{sid}/rename", {"title": " "}).status_code == 400
    assert len(alice.get(f"/api/worksheets/{sid}/versions").json()) == 1
    # Results' HTML is cleaned on the way in.
    alice.post(f"/api/worksheets/{sid}/versions", {"content": {"cells": [{"code": "h", "outputs": [
        {"type": "result", "data": {"text/html": "<b>ok</b><script>alert(1)</script>"}}]}]}})
    saved = alice.get(f"/api/worksheets/{sid}").json()["content"]["cells"][0]["outputs"][0]
    assert saved["data"]["text/html"] == "<b>ok</b>"


def test_one_account_can_never_reach_another_s_worksheets(alice, bob, signin_stack):
    web, _, _ = signin_stack
    sid = alice.post("/api/worksheets", {"title": "Mine", "content": sheet([("1", "")])}
                     ).json()["id"]
    for path in (f"/api/worksheets/{sid}", f"/api/worksheets/{sid}/versions",
                 f"/api/worksheets/{sid}/versions/1"):
        assert bob.get(path).status_code == 404
    for path, body in ((f"/api/worksheets/{sid}/versions", {"content": sheet([("2", "")])}),
                       (f"/api/worksheets/{sid}/rename", {"title": "Bob's"}),
                       (f"/api/worksheets/{sid}/copy", {}), (f"/api/worksheets/{sid}/delete", {}),
                       (f"/api/worksheets/{sid}/restore", {"version": 1}),
                       (f"/api/worksheets/{sid}/versions/1/share", {})):
        assert bob.post(path, body).status_code == 404, path
    assert sid not in {s["id"] for s in bob.get("/api/worksheets").json()}
    assert bob.get(f"/w/{sid}").status_code == 404
    # Nothing of it changed.
    assert alice.get(f"/api/worksheets/{sid}").json()["title"] == "Mine"
    assert len(alice.get(f"/api/worksheets/{sid}/versions").json()) == 1
    # Nor can Bob's websocket take over the session of Alice's page.
    cookies = "; ".join(f"{k}={v}" for k, v in alice.http.cookies.items())
    page = Browserish(web, f"browser=alice-page; {cookies}")
    theirs = Browserish(web, "browser=bob-page; salvus_signin=" + bob.http.cookies["salvus_signin"])
    try:
        mine = page.open()["session"]
        assert theirs.open(mine)["session"] != mine
    finally:
        page.close()
        theirs.close()


def test_without_a_sign_in_or_the_csrf_token_nothing_is_done(alice, signin_stack):
    web, _, _ = signin_stack
    assert requests.get(f"{web.url}/api/worksheets", timeout=10).status_code == 401
    answer = requests.post(f"{web.url}/api/worksheets", json={}, timeout=10)
    assert answer.status_code == 401 and "sign in first" in answer.json()["error"]
    refused = alice.post("/api/worksheets", {"title": "x"}, csrf=False)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    page = requests.get(f"{web.url}/worksheets", allow_redirects=False, timeout=10)
    assert page.status_code == 302 and page.headers["Location"].startswith("/signin?next=")


def test_a_hundred_people_saving_at_once_lose_no_version(signin_stack):
    web, provider, dsn = signin_stack
    people = [Client(web, {"sub": f"crowd-{i}", "email": f"c{i}@example.org",
                           "name": f"C{i}"}, provider) for i in range(100)]
    sheets = [p.post("/api/worksheets", {"content": sheet([("0", "")])}).json()["id"]
              for p in people]
    shared = sheets[0]  # and every one of them also edits person 0's, in their own tab
    answers: dict[int, list] = {i: [] for i in range(100)}
    crowd = people[0]
    start = threading.Barrier(100)

    def edit(i: int) -> None:
        tab = session()  # person 0's tab in this one's browser
        tab.cookies.update(crowd.http.cookies)
        start.wait(timeout=60)
        for n in range(1, 4):
            answers[i].append(people[i].post(f"/api/worksheets/{sheets[i]}/versions",
                                             {"content": sheet([(f"{i}:{n}", "")])}).json())
        answers[i].append(tab.post(f"{web.url}/api/worksheets/{shared}/versions",
                                   json={"content": sheet([(f"tab {i}", "")])},
                                   headers={"X-CSRF-Token": crowd.csrf}, timeout=60).json())

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    for i in range(1, 100):
        assert [a["version"] for a in answers[i][:3]] == [2, 3, 4], answers[i]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT version, content->'cells'->0->>'code' FROM worksheet_versions"
                    " WHERE worksheet = %s ORDER BY version", (shared,))
        rows = cur.fetchall()
    conn.close()
    # Person 0's three own edits and the hundred tabs' each got a version of its own.
    assert [v for v, _ in rows] == list(range(1, 105))
    assert {code for _, code in rows if code.startswith("tab ")} == \
        {f"tab {i}" for i in range(100)}
    assert sorted(a["version"] for i in range(100) for a in answers[i][3:]) == \
        sorted(v for v, code in rows if code.startswith("tab "))


def test_an_anonymous_page_signs_in_keeps_its_work_and_saves_itself(chromium, signin_stack,
                                                                     request):
    web, provider, _ = signin_stack
    provider.person = {"sub": "erin-1", "email": "erin@example.org", "name": "Erin"}
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(30000)
    try:
        page.goto(f"{web.url}/")
        wait_ready(page)
        run_cell(page, "print(6*7)", 0)
        expect(cell(page, 0).locator("pre.stdout")).to_have_text("42\n")
        page.locator("#account a").click()
        page.get_by_text("Sign in with Campus").click()
        page.wait_for_url(re.compile(r".*/w/w[A-Za-z0-9_-]+$"), timeout=30000)
        # Back with the same cells and outputs, and saved under the account.
        expect(cell(page, 0).locator("pre.stdout")).to_have_text("42\n")
        expect(page.locator("#saved")).to_contain_text("saved · version 1")
        sid = page.url.rsplit("/", 1)[1]
        run_cell(page, "7*6", 1)
        expect(result(page, 1)).to_have_attribute("data-plain", "42")
        expect(page.locator("#saved")).to_contain_text("saved · version 2")
        run_cell(page, "%md\n# Notes\n$e^{i\\pi}+1=0$", 2)
        expect(page.locator("#saved")).to_contain_text("saved · version 3")
        # Opened again (a new tab): the cells with their outputs, from the database,
        # the text cell rendered as it was.
        again = context.new_page()
        again.goto(f"{web.url}/w/{sid}")
        wait_ready(again)
        expect(cell(again, 0).locator("pre.stdout")).to_have_text("42\n")
        expect(result(again, 1)).to_have_attribute("data-plain", "42")
        expect(cell(again, 2).locator(".result h1")).to_have_text("Notes")
        expect(cell(again, 2).locator(".result .katex")).to_have_count(1)
        expect(cell(again, 2)).to_have_class(re.compile(r"\brendered\b"))
        expect(again.locator("#saved")).to_contain_text("version 3 of 3")
        # The list page: its versions, and a restore.
        again.goto(f"{web.url}/worksheets")
        row = again.locator(f'tr[data-id="{sid}"]')
        expect(row).to_contain_text("print(6*7)")
        row.get_by_role("button", name="Versions").click()
        expect(again.locator("#history li")).to_have_count(3)
        again.locator('#history li[data-version="1"]').get_by_role(
            "button", name="Restore").click()
        expect(again.locator("#history li")).to_have_count(4)
        expect(again.locator("#history li").first).to_contain_text("restored from version 1")
        again.screenshot(path=ARTIFACTS / f"{request.node.name}-list.png")
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"{request.node.name}.png")
        context.close()
