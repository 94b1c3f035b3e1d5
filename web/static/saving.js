// Saved worksheets: while someone is signed in, the page saves itself (its
// cells, their outputs and image links) a moment after it changes, each save a
// new version (web/worksheet_routes.py). The first save of a new page makes
// the worksheet and the address becomes /w/<id>; an anonymous page whose
// person signs in comes back with its session and is saved then: nothing is
// lost by signing in. Uses account.js (who, the CSRF token), notebook.js
// (worksheetCells) and app.js (state).
"use strict";

const saving = {
  every: 2000,        // ms between looks for changes
  last: null,         // what was saved last (JSON)
  busy: false,
  primed: false,

  content() {
    const cells = window.worksheetCells();
    if (!cells.some((c) => c.code.trim() || c.outputs.length)) return null;
    return { language: document.getElementById("language").value, cells };
  },

  show(text, failed = false) {
    const box = document.getElementById("saved");
    box.textContent = text;
    box.classList.toggle("failed", failed);
    box.hidden = false;
  },

  async post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-CSRF-Token": account.csrf || "" },
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
    return answer;
  },

  async look() {
    if (saving.busy || !account.me || !account.me.account) return;
    const content = saving.content();
    if (!content) return;
    const text = JSON.stringify(content);
    if (!saving.primed) {
      // An opened worksheet is saved already: only what changes after is new.
      saving.primed = true;
      if (state.saved) {
        saving.last = text;
        saving.show(`version ${state.saved.version} of ${state.saved.head}`);
        return;
      }
    }
    if (text === saving.last) return;
    saving.busy = true;
    try {
      if (!state.saved) {
        const made = await saving.post("/api/worksheets", { title: saving.title(content), content });
        state.saved = { id: made.id, version: made.version, head: made.version };
        // The session goes on under the worksheet's own address.
        sessionStorage.setItem("salvus.session:" + made.url, state.session || "");
        history.replaceState(null, "", made.url);
        saving.show(`saved · version ${made.version}`);
      } else {
        const done = await saving.post(`/api/worksheets/${state.saved.id}/versions`, { content });
        state.saved.version = done.version;
        saving.show(`saved · version ${done.version}`);
      }
      saving.last = text;
    } catch (e) {
      saving.show(`not saved: ${e.message}`, true);
    } finally {
      saving.busy = false;
    }
  },

  title(content) {
    const first = content.cells.map((c) => c.code.trim()).find((c) => c) || "Untitled";
    return first.split("\n")[0].slice(0, 60);
  },
};

setInterval(saving.look, saving.every);
addEventListener("pagehide", () => { saving.look(); });
