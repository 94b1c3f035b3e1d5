// Salvus worksheet: cells, a websocket that resumes by sequence number, output rendering.
"use strict";

const FOLD_AT = 200000;          // characters of one stream block shown before folding
const SHORT_URL = 2000;          // longest link offered with the cells inside it
// One session per tab and address: a shared link opens its own session.
const SESSION_KEY = "salvus.session:" + location.pathname + location.hash;

const state = {
  ws: null, session: sessionStorage.getItem(SESSION_KEY), lastSeq: 0,
  backoff: 250, cells: new Map(), order: [], attachedOnce: false, pingTimer: null,
  interacts: new Map(),
};

const $ = (sel) => document.querySelector(sel);
const statusLine = $("#status");

function setStatus(kind, text) {
  statusLine.className = "status " + kind;
  statusLine.textContent = text;
}

// ------------------------------------------------------------------ cells

function newId() { return "c" + Math.random().toString(36).slice(2, 10); }

function addCell(afterId, code = "", id = newId()) {
  const el = document.createElement("section");
  el.className = "cell";
  el.dataset.cell = id;
  el.innerHTML = '<span class="badge"></span><div class="editor"></div><div class="output"></div>';
  const list = $("#cells");
  const after = afterId && state.cells.get(afterId);
  if (after && after.el.nextSibling) list.insertBefore(el, after.el.nextSibling);
  else list.appendChild(el);
  const editor = CodeMirror(el.querySelector(".editor"), {
    value: code, mode: "python", lineNumbers: false, matchBrackets: true,
    indentUnit: 4, viewportMargin: Infinity,
    extraKeys: {
      "Shift-Enter": () => { run(id); focusNext(id); },
      "Ctrl-Enter": () => run(id),
      "Alt-Enter": () => { state.cells.get(addCell(id)).editor.focus(); },
      "Tab": (cm) => {
        if (cm.somethingSelected()) return cm.indentSelection("add");
        const before = cm.getLine(cm.getCursor().line).slice(0, cm.getCursor().ch);
        if (/[\w.]$/.test(before)) return complete(cm, id);
        cm.replaceSelection("    ");
      },
      "Ctrl-Space": (cm) => complete(cm, id),
    },
  });
  editor.on("focus", () => {
    document.querySelectorAll(".cell.focused").forEach((c) => c.classList.remove("focused"));
    el.classList.add("focused");
  });
  const cell = { id, el, editor, out: el.querySelector(".output"), badge: el.querySelector(".badge"),
                 execution: null, lastStream: null };
  state.cells.set(id, cell);
  const index = afterId ? state.order.indexOf(afterId) + 1 : state.order.length;
  state.order.splice(index, 0, id);
  return id;
}

function focusNext(id) {
  const index = state.order.indexOf(id);
  const nextId = state.order[index + 1] || addCell(id);
  const next = state.cells.get(nextId);
  next.editor.focus();
  next.el.scrollIntoView({ block: "nearest" });
}

function setCellState(cell, kind, label) {
  cell.el.classList.remove("running", "queued", "done-ok", "done-error", "done-killed",
                           "done-timeout", "done-limit", "done-interrupted");
  if (kind) cell.el.classList.add(kind);
  cell.badge.textContent = label || "";
}

function run(id) {
  const cell = state.cells.get(id);
  const code = cell.editor.getValue();
  cell.out.innerHTML = "";
  cell.lastStream = null;
  cell.execution = null;
  delete cell.el.dataset.status;
  setCellState(cell, "queued", "queued");
  send({ type: "execute", cell: id, code, typeset: $("#typeset").checked,
         language: $("#language").value, webgl: HAS_WEBGL });
}

// The worksheet's switches: remembered by this browser.
for (const [id, property] of [["typeset", "checked"], ["language", "value"]]) {
  const saved = localStorage.getItem(`salvus.${id}`);
  if (saved !== null) $(`#${id}`)[property] = property === "checked" ? saved === "true" : saved;
  $(`#${id}`).onchange = () => localStorage.setItem(`salvus.${id}`, String($(`#${id}`)[property]));
}

// ------------------------------------------------------------------ output

// A target is a cell, or an interact's own output area: {out, lastStream}.
function appendStream(cell, name, text) {
  let block = cell.lastStream;
  if (!block || block.name !== name) {
    const pre = document.createElement("pre");
    pre.className = name;
    cell.out.appendChild(pre);
    block = cell.lastStream = { name, pre, text: "", folded: false };
  }
  block.text += text;
  if (block.text.length > FOLD_AT && !block.showAll) {
    if (!block.fold) {
      block.fold = document.createElement("div");
      block.fold.className = "fold";
      block.fold.onclick = () => { block.showAll = true; block.fold.remove();
                                   block.pre.textContent = block.text; };
      cell.out.insertBefore(block.fold, block.pre);
    }
    const hidden = block.text.length - FOLD_AT;
    block.fold.textContent = `… ${hidden.toLocaleString()} earlier characters folded: show all`;
    block.pre.textContent = block.text.slice(hidden);
  } else {
    block.pre.textContent = block.text;
  }
  cell.out.scrollTop = cell.out.scrollHeight;
}

// $...$ and $$...$$ in HTML results (a %md cell's formulas) become KaTeX,
// outside code; what KaTeX cannot parse stays as written.
const MATH = /\$\$([^$]+)\$\$|\$([^$\n]+)\$/g;

function typesetMath(root) {
  if (!window.katex) return;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => node.parentElement.closest("code, pre")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT });
  const texts = [];
  while (walker.nextNode()) if (walker.currentNode.data.search(MATH) !== -1) texts.push(walker.currentNode);
  for (const text of texts) {
    const parts = document.createDocumentFragment();
    let last = 0;
    for (const match of text.data.matchAll(MATH)) {
      parts.append(text.data.slice(last, match.index));
      const span = document.createElement("span");
      try {
        katex.render(match[1] || match[2], span, { displayMode: !!match[1], throwOnError: true });
      } catch (e) { span.textContent = match[0]; }
      parts.append(span);
      last = match.index + match[0].length;
    }
    parts.append(text.data.slice(last));
    text.replaceWith(parts);
  }
}

// 3D scenes are drawn by our viewer in a sandboxed frame: the scene is a
// session's data, handed over by postMessage once the viewer is ready.
const SCENE = "application/vnd.salvus.scene3d+json";
const HAS_WEBGL = (() => {
  try {
    const canvas = document.createElement("canvas");
    return !!(canvas.getContext("webgl2") || canvas.getContext("webgl"));
  } catch (e) { return false; }
})();

function appendScene(div, scene) {
  const frame = document.createElement("iframe");
  frame.className = "scene3d";
  frame.setAttribute("sandbox", "allow-scripts");
  frame.title = "3D scene: drag to turn, wheel to zoom";
  const ready = (event) => {
    if (event.source !== frame.contentWindow || event.data !== "viewer3d-ready") return;
    window.removeEventListener("message", ready);
    frame.contentWindow.postMessage(scene, "*");
  };
  window.addEventListener("message", ready);
  frame.src = "/static/viewer3d.html";
  div.appendChild(frame);
  div.classList.add("scene");
}

function appendResult(cell, data) {
  const div = document.createElement("div");
  div.className = "result";
  div.dataset.plain = data["text/plain"] || "";
  if (data[SCENE]) {
    appendScene(div, data[SCENE]);
    cell.out.appendChild(div);
    return;
  }
  const latex = data["text/latex"];
  if (latex && window.katex) {
    try {
      const tex = latex.replace(/^\$+|\$+$/g, "");
      katex.render(tex, div, { displayMode: true, throwOnError: true });
      div.classList.add("latex");
      div.title = data["text/plain"] || "";
    } catch (e) { div.innerHTML = ""; }
  }
  const html = data["text/html"];
  if (html && !div.childNodes.length) {
    // Sanitized by the frontend (web/html.py) before it was sent.
    div.innerHTML = html;
    div.classList.add("html");
    typesetMath(div);
  }
  if (!div.childNodes.length) {
    const pre = document.createElement("pre");
    pre.textContent = data["text/plain"] || "";
    div.appendChild(pre);
  }
  cell.out.appendChild(div);
}

// ------------------------------------------------------------------ interacts

function buildInteract(cell, message) {
  const box = document.createElement("div");
  box.className = "interact";
  box.dataset.interact = message.interact;
  const controls = document.createElement("div");
  controls.className = "controls";
  const out = document.createElement("div");
  out.className = "interact-output";
  box.append(controls, out);
  const it = { id: message.interact, cell: cell.id, out, lastStream: null, values: {},
               busy: false, pending: false, inputs: [], box };
  for (const c of message.controls) {
    const row = document.createElement("label");
    row.className = "control";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.label;
    row.appendChild(name);
    let input;
    if (c.type === "slider") {
      input = document.createElement("input");
      Object.assign(input, { type: "range", min: c.min, max: c.max, step: c.step, value: c.value });
      const shown = document.createElement("span");
      shown.className = "value";
      shown.textContent = c.labels[c.value];
      input.addEventListener("input", () => {
        shown.textContent = c.labels[input.value];
        changed(it, c.name, Number(input.value));
      });
      row.append(input, shown);
    } else if (c.type === "checkbox") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = !!c.value;
      input.addEventListener("change", () => changed(it, c.name, input.checked));
      row.append(input);
    } else if (c.type === "selector") {
      input = document.createElement("select");
      c.choices.forEach((choice, i) => input.add(new Option(choice, i, false, i === c.value)));
      input.addEventListener("change", () => changed(it, c.name, Number(input.value)));
      row.append(input);
    } else if (c.type === "color") {
      input = document.createElement("input");
      input.type = "color";
      input.value = c.value;
      input.addEventListener("input", () => changed(it, c.name, input.value));
      row.append(input);
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.value = c.value;
      input.addEventListener("change", () => changed(it, c.name, input.value));
      row.append(input);
    }
    input.dataset.control = c.name;
    it.values[c.name] = c.value;
    it.inputs.push(input);
    controls.appendChild(row);
  }
  state.interacts.set(it.id, it);
  cell.out.appendChild(box);
  // A shared link restores the values its interacts had when it was made.
  const saved = (cell.savedInteracts || [])[cell.out.querySelectorAll(".interact").length - 1];
  if (saved) {
    for (const input of it.inputs) {
      const name = input.dataset.control;
      if (!(name in saved)) continue;
      if (input.type === "checkbox") input.checked = !!saved[name];
      else input.value = saved[name];
      const live = input.type === "range" || input.type === "color";
      input.dispatchEvent(new Event(live ? "input" : "change"));
      it.values[name] = saved[name];
    }
  }
}

// Dragging a slider must not queue hundreds of runs: while one runs, only the
// latest values wait, and they go when it is done.
function changed(it, name, value) {
  it.values[name] = value;
  if (it.busy) { it.pending = true; return; }
  fire(it);
}

function fire(it) {
  it.busy = true;
  it.pending = false;
  it.box.classList.add("busy");
  send({ type: "interact", cell: it.cell, interact: it.id, values: { ...it.values } });
}

function interactMessage(it, message) {
  switch (message.type) {
    case "interact_run":
      it.out.innerHTML = "";
      it.lastStream = null;
      it.busy = true;
      break;
    case "done":
      it.busy = false;
      it.box.classList.remove("busy");
      if (it.pending) fire(it);
      break;
    default:
      render(it, message);
  }
}

function disableInteracts() {
  for (const it of state.interacts.values()) {
    it.box.classList.add("ended");
    it.box.title = "The session ended: run the cell again to use these controls";
    for (const input of it.inputs) input.disabled = true;
  }
}

function apply(message) {
  if (message.seq !== undefined) {
    if (message.seq <= state.lastSeq) return;   // already shown (replay overlap)
    state.lastSeq = message.seq;
  }
  if (message.type === "session_status") {
    if (message.state === "running") return setStatus("connected", "connected");
    if (message.state === "lost") setStatus("lost", "session died — next run restarts it");
    else if (message.state === "restarted") setStatus("connected", "session restarted");
    disableInteracts();
    return;
  }
  const cell = message.cell && state.cells.get(message.cell);
  if (!cell) return;
  if (message.type === "interact") return buildInteract(cell, message);
  if (message.interact && state.interacts.has(message.interact)) {
    return interactMessage(state.interacts.get(message.interact), message);
  }
  if (message.execution && cell.execution && message.execution !== cell.execution
      && message.type !== "queued") {
    return;   // output of an older run of this cell
  }
  switch (message.type) {
    case "queued":
      if (statusLine.classList.contains("lost")) setStatus("connected", "connected");
      cell.execution = message.execution;
      setCellState(cell, "queued", "queued");
      break;
    case "running":   // the worker started it
      setCellState(cell, "running", "running");
      break;
    case "done":
      setCellState(cell, "done-" + message.status, message.status === "ok" ? "" : message.status);
      cell.el.dataset.status = message.status;
      break;
    default:
      if (message.type === "stream") setCellState(cell, "running", "running");
      render(cell, message);
  }
}

function render(target, message) {
  switch (message.type) {
    case "stream":
      appendStream(target, message.name, message.text);
      break;
    case "result":
      target.lastStream = null;
      appendResult(target, message.data);
      break;
    case "image": {
      target.lastStream = null;
      const img = document.createElement("img");
      img.src = message.url;
      img.alt = "figure";
      if (message.width) img.style.width = message.width + "px";  // a 2x PNG
      target.out.appendChild(img);
      break;
    }
    case "error": {
      target.lastStream = null;
      const pre = document.createElement("pre");
      pre.className = "error";
      pre.textContent = message.traceback;
      target.out.appendChild(pre);
      break;
    }
    case "notice": {
      target.lastStream = null;
      const div = document.createElement("div");
      div.className = "notice";
      div.textContent = message.text;
      target.out.appendChild(div);
      break;
    }
  }
}

// ------------------------------------------------------------------ completion

// Names from the live session for the name before the cursor (Tab, Ctrl-Space):
// the answer goes to this page only; a popup offers them (one is put in).
const completing = new Map();  // cell id -> the editor waiting for names

function complete(cm, id) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  completing.set(id, cm);
  state.ws.send(JSON.stringify({ type: "complete", cell: id,
                                 code: cm.getRange(CodeMirror.Pos(0, 0), cm.getCursor()) }));
}

function completed(message) {
  const cm = completing.get(message.cell);
  completing.delete(message.cell);
  if (!cm || !message.matches.length) return;
  const to = cm.getCursor();
  const from = CodeMirror.Pos(to.line, to.ch - message.prefix.length);
  if (cm.getRange(from, to) !== message.prefix) return;  // typed on meanwhile
  cm.showHint({ completeSingle: true,
                hint: () => ({ list: message.matches, from, to }) });
}

// ------------------------------------------------------------------ connection

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(message));
  } else {
    setStatus("reconnecting", "not connected — will send when reconnected");
    state.queue = (state.queue || []).concat([message]);
  }
}

// Where to connect: the frontend that served the page, until the session's
// attached message lists the live ones; after a drop, the next one in turn.
function socketUrl() {
  const own = location.origin + "/";
  const list = state.frontends && state.frontends.length ? state.frontends : [own];
  const base = list[(state.frontendIndex || 0) % list.length];
  return base.replace(/^http/, "ws").replace(/\/?$/, "/ws");
}

function connect() {
  const ws = new WebSocket(socketUrl());
  state.ws = ws;
  ws.onopen = () => {
    state.backoff = 250;
    ws.send(JSON.stringify({ type: "open", session: state.session || undefined,
                             last_seq: state.lastSeq }));
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "attached") return attached(message);
    if (message.type === "protocol_error") {
      setStatus(message.code === "quota" ? "lost" : "connected", message.message);
      return;
    }
    if (message.type === "pong") return;
    if (message.type === "completions") return completed(message);
    if (message.type === "announcement") return announce(message);
    if (message.type === "gap") return setStatus("reconnecting", message.text);
    apply(message);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    setStatus("reconnecting", "reconnecting…");
    state.frontendIndex = (state.frontendIndex || 0) + 1;   // another frontend, if any
    setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 8000);
  };
}

// A message for this page from the admin or another page's frontend: a banner
// until dismissed (its text is shown as text, never as HTML).
function announce(message) {
  const box = document.getElementById("announcements");
  if (box.querySelector(`[data-id="${CSS.escape(message.id)}"]`)) return;
  const banner = document.createElement("div");
  banner.className = "announcement";
  banner.dataset.id = message.id;
  banner.setAttribute("role", "alert");
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = message.text;
  const from = document.createElement("div");
  from.className = "from";
  from.textContent = message.from === "admin" ? "from the admin" : `from ${message.from}`;
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "✕";
  close.setAttribute("aria-label", "dismiss");
  close.onclick = () => banner.remove();
  banner.append(text, from, close);
  box.appendChild(banner);
}

function attached(message) {
  if (message.frontends && message.frontends.length) {
    state.frontends = message.frontends;   // this one first
    state.frontendIndex = 0;
  }
  const fresh = message.session !== state.session;
  if (fresh && state.session && state.attachedOnce) {
    setStatus("lost", "the server lost the session — a new one was started");
    state.lastSeq = 0;
  } else {
    setStatus("connected", "connected");
  }
  state.session = message.session;
  sessionStorage.setItem(SESSION_KEY, message.session);
  if (!state.attachedOnce) {
    // A fresh page: rebuild the cells the session knows, then the replay fills them.
    for (const saved of message.cells) {
      if (!state.cells.has(saved.cell)) {
        addCell(null, saved.code, saved.cell);
        const cell = state.cells.get(saved.cell);
        cell.execution = saved.execution;
        if (saved.state !== "done") setCellState(cell, "running", "running");
      }
    }
    if (!state.order.length && state.shared) {
      for (const saved of state.shared.cells) {
        const id = addCell(null, saved.code);
        state.cells.get(id).savedInteracts = saved.interacts || [];
      }
      if (new URLSearchParams(location.search).get("run") === "1") {
        for (const id of state.order) run(id);
      }
    }
    if (!state.order.length) addCell(null);
    state.cells.get(state.order[state.order.length - 1]).editor.focus();
  }
  state.attachedOnce = true;
  for (const queued of state.queue || []) state.ws.send(JSON.stringify(queued));
  state.queue = [];
}

// ------------------------------------------------------------------ sharing

async function squeeze(text) {   // deflate, then base64url
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function unsqueeze(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return await new Response(stream).text();
}

async function sharedContent() {
  const tag = document.getElementById("shared");
  if (tag) return JSON.parse(tag.textContent);
  const inUrl = location.hash.match(/^#z=([A-Za-z0-9_-]+)$/);
  if (location.pathname === "/s" && inUrl) {
    try { return JSON.parse(await unsqueeze(inUrl[1])); }
    catch (e) { setStatus("lost", "this link is damaged: its cells could not be read"); }
  }
  return null;
}

async function shareNow() {
  // Each cell with the current values of its interacts, in the order they appear.
  const cells = state.order.map((id) => {
    const cell = state.cells.get(id);
    const interacts = [...cell.out.querySelectorAll(".interact")]
      .map((box) => ({ ...state.interacts.get(box.dataset.interact).values }));
    return interacts.length ? { code: cell.editor.getValue(), interacts }
                            : { code: cell.editor.getValue() };
  }).filter((c) => c.code.trim());
  if (!cells.length) return setStatus("connected", "nothing to share yet");
  const response = await fetch("/api/share", { method: "POST", body: JSON.stringify({ cells }),
                                               headers: { "Content-Type": "application/json" } });
  const body = await response.json();
  if (!response.ok) return setStatus("connected", body.error);
  $("#sharebar").hidden = false;
  const link = $("#sharelink");
  link.value = location.origin + body.url;
  link.select();
  const inUrl = location.origin + "/s#z=" + await squeeze(JSON.stringify({ cells }));
  $("#shareshort").hidden = inUrl.length > SHORT_URL;
  $("#shareurl").href = inUrl;
}

$("#share").onclick = () => shareNow();
$("#shareclose").onclick = () => { $("#sharebar").hidden = true; };
$("#interrupt").onclick = () => send({ type: "interrupt" });
$("#restart").onclick = () => send({ type: "restart" });
setInterval(() => {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) send({ type: "ping" });
}, 20000);
// A closed tab frees its session's place within seconds; a reload comes back
// to it before then.
addEventListener("pagehide", () => {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send('{"type":"leave"}');
});
sharedContent().then((shared) => { state.shared = shared; connect(); });
