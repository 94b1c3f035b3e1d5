// The list of an account's worksheets (/worksheets): rename, copy, delete,
// and each one's versions: open, restore (a new newest version), share (a
// permalink of that version). Every change is a POST with the sign-in's CSRF
// token (from /api/me).
"use strict";

(() => {
  let csrf = null;

  async function post(url, body = {}) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      alert(answer.error || `${response.status} ${response.statusText}`);
      return null;
    }
    return answer;
  }

  function button(text, label, onclick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.title = label;
    b.onclick = onclick;
    return b;
  }

  async function history(id, title) {
    const box = document.getElementById("history");
    const response = await fetch(`/api/worksheets/${id}/versions`, { credentials: "same-origin" });
    const versions = await response.json();
    box.replaceChildren();
    const heading = document.createElement("h2");
    heading.textContent = `Versions of ${title}`;
    const list = document.createElement("ol");
    list.reversed = true;
    for (const v of versions) {
      const item = document.createElement("li");
      item.dataset.version = v.version;
      const open = document.createElement("a");
      open.href = `/w/${id}?version=${v.version}`;
      open.textContent = `version ${v.version}`;
      const about = document.createElement("span");
      about.textContent = ` · ${v.saved_at} UTC · ${v.cells} cell${v.cells === 1 ? "" : "s"}` +
        (v.restored_from ? ` · restored from version ${v.restored_from}` : "");
      const shared = document.createElement("input");
      shared.readOnly = true;
      shared.hidden = true;
      shared.className = "link";
      item.append(open, about,
        button("Restore", "Make this version the newest again", async () => {
          if (await post(`/api/worksheets/${id}/restore`, { version: v.version })) history(id, title);
        }),
        button("Share", "A link to this version's cells", async () => {
          const made = await post(`/api/worksheets/${id}/versions/${v.version}/share`);
          if (made) { shared.value = location.origin + made.url; shared.hidden = false; shared.select(); }
        }), shared);
      list.append(item);
    }
    box.append(heading, list);
    box.hidden = false;
  }

  async function start() {
    const me = await (await fetch("/api/me", { credentials: "same-origin" })).json();
    csrf = me.csrf;
    for (const row of document.querySelectorAll("#sheets tbody tr")) {
      const id = row.dataset.id;
      const title = () => row.querySelector("td a").textContent;
      row.querySelector(".actions").append(
        button("Versions", "Every saved version", () => history(id, title())),
        button("Rename", "Give it another title", async () => {
          const name = prompt("New title", title());
          if (name && await post(`/api/worksheets/${id}/rename`, { title: name })) {
            row.querySelector("td a").textContent = name.trim();
          }
        }),
        button("Copy", "A new worksheet with the same cells", async () => {
          const made = await post(`/api/worksheets/${id}/copy`);
          if (made) location.reload();
        }),
        button("Delete", "Remove it from your list", async () => {
          if (confirm(`Delete "${title()}"?`) && await post(`/api/worksheets/${id}/delete`)) row.remove();
        }));
    }
  }

  start();
})();
