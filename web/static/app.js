// Salvus worksheet: cells, a websocket that resumes by sequence number, output rendering.
"use strict";

const FOLD_AT = 200000;          // characters of one stream block shown before folding
const SHORT_URL = 2000;          // longest link offered with the cells inside it
// One session per tab and address: a shared link opens its own session.
const SESSION_KEY = "salvus.session:" + location.pathname + location.hash;

const state = {
  ws: null, session: sessionStorage.getItem(SESSION_KEY), lastSeq: 0,
  backoff: 250, cells: new Map(), order: [], attachedOnce: false, pingTimer: null,
  interacts: new Map(), selected: null, deleted: [], attachSeq: 0,
};

const $ = (sel) => document.querySelector(sel);
const statusLine = $("#status");

// The status pill says how the connection is; notices (what just happened)
// show beside it and go away by themselves, or with their ✕.
function setStatus(kind, text) {
  statusLine.className = "status " + kind;
  statusLine.textContent = text;
}

function notify(text, { action, run, seconds = 6 } = {}) {
  const box = $("#notice");
  clearTimeout(state.noticeTimer);
  box.replaceChildren();
  const words = document.createElement("span");
  words.textContent = text;
  box.append(words);
  if (action) box.append(button("action", action, action, () => { box.hidden = true; run(); }));
  box.append(button("close", "✕", "Dismiss", () => { box.hidden = true; }));
  box.hidden = false;
  state.noticeTimer = setTimeout(() => { box.hidden = true; }, seconds * 1000);
}

// ------------------------------------------------------------------ cells
// A cell is code, or text: Markdown, sent as a `%md` cell and shown rendered
// (its editor comes back with Enter or a double click). Outside an editor,
// the page is in command mode, as in Jupyter: see COMMANDS.

const TEXT_MODE = /^%md[ \t]*(\n|$)/;
const PLACEHOLDER = "Type Sage code, e.g. factor(2^64+1), then Shift+Enter to run it";

function newId() { return "c" + Math.random().toString(36).slice(2, 10); }

function button(className, text, label, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.title = label;
  b.setAttribute("aria-label", label);
  b.onclick = (event) => { event.stopPropagation(); onclick(); };
  return b;
}

function addCell(afterId, code = "", id = newId(), before = false) {
  const el = document.createElement("section");
  el.className = "cell";
  el.dataset.cell = id;
  el.tabIndex = -1;   // command mode: the cell itself takes the keys
  const bar = document.createElement("div");
  bar.className = "bar";
  const badge = document.createElement("span");
  badge.className = "badge";
  const tools = document.createElement("span");
  tools.className = "tools";
  tools.append(
    button("up", "↑", "Move cell up", () => moveCell(id, -1)),
    button("down", "↓", "Move cell down", () => moveCell(id, 1)),
    button("kind", "Text", "Make this a text (Markdown) cell", () => toggleKind(id)),
    button("delete", "✕", "Delete cell (undo with Z)", () => deleteCell(id)));
  bar.append(button("run", "▶ Run", "Run this cell (Shift+Enter)", () => run(id)), badge, tools);
  const editorBox = document.createElement("div");
  editorBox.className = "editor";
  const placeholder = document.createElement("div");
  placeholder.className = "placeholder";
  placeholder.textContent = PLACEHOLDER;
  placeholder.setAttribute("aria-hidden", "true");
  editorBox.appendChild(placeholder);
  const out = document.createElement("div");
  out.className = "output";
  out.setAttribute("aria-live", "polite");
  el.append(bar, editorBox, out);
  const list = $("#cells");
  const anchor = afterId && state.cells.get(afterId);
  if (anchor && before) list.insertBefore(el, anchor.el);
  else if (anchor && anchor.el.nextSibling) list.insertBefore(el, anchor.el.nextSibling);
  else list.appendChild(el);
  const text = TEXT_MODE.test(code);
  const editor = CodeMirror(editorBox, {
    value: text ? code.replace(TEXT_MODE, "") : code, mode: text ? "text/plain" : "python",
    lineNumbers: false, matchBrackets: true, indentUnit: 4, viewportMargin: Infinity,
    lineWrapping: text, screenReaderLabel: "cell editor",
    extraKeys: {
      "Shift-Enter": () => { run(id); focusNext(id); },
      "Ctrl-Enter": () => run(id),
      "Alt-Enter": () => { edit(addCell(id)); },
      "Esc": () => select(id),
      "Tab": (cm) => {
        if (cm.somethingSelected()) return cm.indentSelection("add");
        const before = cm.getLine(cm.getCursor().line).slice(0, cm.getCursor().ch);
        if (!cell.text && /[\w.]$/.test(before)) return complete(cm, id);
        cm.replaceSelection("    ");
      },
      "Ctrl-Space": (cm) => complete(cm, id),
      "Backspace": (cm) => {
        // Backspace in an empty cell deletes it (not the only one), as people expect.
        if (cm.getValue() === "" && state.order.length > 1) {
          const index = state.order.indexOf(id);
          deleteCell(id);
          edit(state.order[Math.max(index - 1, 0)], true);
          return;
        }
        return CodeMirror.Pass;
      },
    },
  });
  editor.on("focus", () => { markSelected(id); cell.editing = true; });
  editor.on("blur", () => { cell.editing = false; });
  editor.on("change", () => {
    el.classList.toggle("empty", editor.getValue() === "");
    layoutChanged(1500);
  });
  el.addEventListener("dblclick", () => { if (cell.text && cell.rendered) edit(id); });
  el.addEventListener("mousedown", (event) => {
    if (!event.target.closest(".CodeMirror, button, input, select, a, iframe")) markSelected(id);
  });
  const cell = { id, el, editor, out, badge, text: false, rendered: false, execution: null,
                 latest: null, lastStream: null, editing: false };
  state.cells.set(id, cell);
  const index = afterId ? state.order.indexOf(afterId) + (before ? 0 : 1) : state.order.length;
  state.order.splice(index, 0, id);
  el.classList.toggle("empty", editor.getValue() === "");
  if (text) setKind(cell, true);
  layoutChanged();
  return id;
}

// The source a cell runs (and is saved as): a text cell's is its %md.
function codeOf(cell) {
  const value = cell.editor.getValue();
  return cell.text ? "%md\n" + value : value;
}

function setKind(cell, text) {
  cell.text = text;
  cell.el.classList.toggle("text", text);
  cell.editor.setOption("mode", text ? "text/plain" : "python");
  cell.editor.setOption("lineWrapping", text);
  const kind = cell.el.querySelector(".kind");
  kind.textContent = text ? "Code" : "Text";
  kind.title = text ? "Make this a code cell" : "Make this a text (Markdown) cell";
  kind.setAttribute("aria-label", kind.title);
  cell.el.querySelector(".run").textContent = text ? "▶ Show" : "▶ Run";
  if (!text) showEditor(cell);
}

function toggleKind(id, text) {
  const cell = state.cells.get(id);
  const wanted = text === undefined ? !cell.text : text;
  if (wanted === cell.text) return;
  setKind(cell, wanted);
  layoutChanged();
}

function showEditor(cell) {
  cell.rendered = false;
  cell.el.classList.remove("rendered");
}

function edit(id, atEnd = false) {
  const cell = state.cells.get(id);
  if (!cell) return;
  showEditor(cell);
  cell.editor.refresh();
  cell.editor.focus();
  if (atEnd) cell.editor.setCursor(cell.editor.lineCount(), 0);
  cell.el.scrollIntoView({ block: "nearest" });
}

function markSelected(id) {
  state.selected = id;
  document.querySelectorAll(".cell.focused").forEach((c) => c.classList.remove("focused"));
  const cell = state.cells.get(id);
  if (cell) cell.el.classList.add("focused");
}

// Command mode on this cell: the editor lets go, the cell takes the keys.
function select(id) {
  const cell = state.cells.get(id);
  if (!cell) return;
  markSelected(id);
  cell.editor.getInputField().blur();
  cell.el.focus({ preventScroll: true });
  cell.el.scrollIntoView({ block: "nearest" });
}

function focusNext(id) {
  const index = state.order.indexOf(id);
  const nextId = state.order[index + 1] || addCell(id);
  edit(nextId);
}

function moveCell(id, by) {
  const index = state.order.indexOf(id);
  const to = index + by;
  if (index < 0 || to < 0 || to >= state.order.length) return;
  state.order.splice(index, 1);
  state.order.splice(to, 0, id);
  const el = state.cells.get(id).el;
  const neighbour = state.cells.get(state.order[to + 1]);
  $("#cells").insertBefore(el, neighbour ? neighbour.el : null);
  el.scrollIntoView({ block: "nearest" });
  layoutChanged();
}

// Deleted cells can come back (Z, or the notice's Undo), where they were.
function deleteCell(id) {
  const cell = state.cells.get(id);
  if (!cell) return;
  const index = state.order.indexOf(id);
  state.deleted.push({ cell, index });
  state.order.splice(index, 1);
  state.cells.delete(id);
  cell.el.remove();
  if (!state.order.length) addCell(null);
  const next = state.order[Math.min(index, state.order.length - 1)];
  if (!cell.editing) select(next);
  notify("Cell deleted.", { action: "Undo", run: undoDelete });
  layoutChanged();
}

function undoDelete() {
  const last = state.deleted.pop();
  if (!last) return notify("Nothing to undo.");
  const { cell, index } = last;
  const at = Math.min(index, state.order.length);
  const neighbour = state.cells.get(state.order[at]);
  $("#cells").insertBefore(cell.el, neighbour ? neighbour.el : null);
  state.order.splice(at, 0, cell.id);
  state.cells.set(cell.id, cell);
  cell.editor.refresh();
  select(cell.id);
  notify("Cell restored.");
  layoutChanged();
}

// What each state looks like and says; the badge's title explains it.
const STATES = {
  queued: ["queued", "Waits for the cells before it to finish"],
  running: ["running", "Running now"],
  "done-ok": ["", ""],
  "done-error": ["error", "The code raised an error (see below)"],
  "done-interrupted": ["interrupted", "Stopped by Interrupt"],
  "done-timeout": ["time limit", "Stopped by the appliance's time limit for one execution"],
  "done-limit": ["limit", "Stopped by a limit of the appliance (output, memory or CPU time)"],
  "done-killed": ["killed", "The session's process ended or the run was refused (see below)"],
  "done-refused": ["not run", "Refused before it ran: too many runs for now (see below)"],
};

function setCellState(cell, kind) {
  cell.el.classList.remove(...Object.keys(STATES));
  if (kind) cell.el.classList.add(kind);
  const [label, why] = STATES[kind] || ["", ""];
  cell.badge.textContent = label;
  cell.badge.title = why;
  if (cell.text && kind === "done-ok") {
    cell.rendered = true;
    cell.el.classList.add("rendered");
  }
}

function run(id) {
  const cell = state.cells.get(id);
  const code = codeOf(cell);
  cell.out.innerHTML = "";
  cell.lastStream = null;
  cell.execution = null;
  cell.latest = null;
  delete cell.el.dataset.status;
  setCellState(cell, "queued");
  layoutChanged();
  send({ type: "execute", cell: id, code, typeset: $("#typeset").checked,
         language: $("#language").value, webgl: HAS_WEBGL });
}

function runAll() {
  for (const id of state.order) {
    const cell = state.cells.get(id);
    if (cell.editor.getValue().trim()) run(id);
  }
}

// The worksheet as arranged here goes to the session (on its worker), so a
// reload, on any frontend, shows it the same: soon after a change; after a
// pause in typing.
function layoutChanged(delay = 300) {
  clearTimeout(state.layoutTimer);
  state.layoutDirty = true;
  state.layoutTimer = setTimeout(sendLayout, delay);
}

function sendLayout() {
  clearTimeout(state.layoutTimer);
  if (!state.attachedOnce || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.layoutDirty = false;
  const cells = state.order.map((id) => ({ cell: id, code: codeOf(state.cells.get(id)) }));
  state.ws.send(JSON.stringify({ type: "layout", cells }));
}

// ------------------------------------------------------------------ command mode

const COMMANDS = {
  Enter: (id) => edit(id),
  ArrowUp: (id) => select(state.order[Math.max(state.order.indexOf(id) - 1, 0)]),
  ArrowDown: (id) => select(state.order[Math.min(state.order.indexOf(id) + 1,
                                                 state.order.length - 1)]),
  k: (id) => COMMANDS.ArrowUp(id),
  j: (id) => COMMANDS.ArrowDown(id),
  a: (id) => select(addCell(id, "", newId(), true)),
  b: (id) => select(addCell(id)),
  m: (id) => toggleKind(id, true),
  y: (id) => toggleKind(id, false),
  z: () => undoDelete(),
  "Shift+Enter": (id) => { run(id); focusNext(id); },
  "Ctrl+Enter": (id) => run(id),
  "Alt+ArrowUp": (id) => moveCell(id, -1),
  "Alt+ArrowDown": (id) => moveCell(id, 1),
};
const TWICE = { d: (id) => deleteCell(id), i: () => interrupt(), "0": () => restart() };

// Command mode is on when no editor or form field has the keys: the selected
// cell (or a button of it; Enter and Space stay the button's) takes them.
function commandTarget(event) {
  const active = document.activeElement;
  if (!active || active === document.body) return state.selected;
  if (active.closest(".CodeMirror, input, textarea, select, iframe, #help, #sharebar")) return null;
  if (active.tagName === "BUTTON" && (event.key === "Enter" || event.key === " ")) return null;
  const cellEl = active.closest(".cell");
  return cellEl ? cellEl.dataset.cell : null;
}

document.addEventListener("keydown", (event) => {
  const id = commandTarget(event);
  if (!id || !state.cells.has(id)) return;
  const key = (event.ctrlKey || event.metaKey ? "Ctrl+" : "") + (event.altKey ? "Alt+" : "")
              + (event.shiftKey && event.key.length > 1 ? "Shift+" : "") + event.key;
  if (TWICE[key]) {
    event.preventDefault();
    const now = Date.now();
    if (state.lastKey === key && now - state.lastKeyAt < 800) {
      state.lastKey = null;
      return TWICE[key](id);
    }
    state.lastKey = key;
    state.lastKeyAt = now;
    return;
  }
  if (COMMANDS[key]) {
    event.preventDefault();
    COMMANDS[key](id);
  }
});

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
      input.addEventListener("show", () => { shown.textContent = c.labels[input.value]; });
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
      if (message.values && message.seq <= state.attachSeq) showValues(it, message.values);
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

// A page that comes back: the controls as they were for the output shown.
function showValues(it, values) {
  for (const input of it.inputs) {
    const name = input.dataset.control;
    if (!(name in values)) continue;
    if (input.type === "checkbox") input.checked = !!values[name];
    else input.value = values[name];
    if (input.type === "range") input.dispatchEvent(new Event("show"));
    it.values[name] = values[name];
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
    if (message.state === "running") {
      setStatus("connected", "connected");
      return notify("The session is running again.");
    }
    if (message.state === "lost") {
      setStatus("lost", "session ended — the next run starts a new one");
      notify(message.reason, { seconds: 20 });
    } else if (message.state === "restarted") {
      notify("Session restarted: variables are cleared.");
    }
    disableInteracts();
    return;
  }
  const cell = message.cell && state.cells.get(message.cell);
  if (!cell) return;
  if (message.type === "interact") return buildInteract(cell, message);
  if (message.interact && state.interacts.has(message.interact)) {
    return interactMessage(state.interacts.get(message.interact), message);
  }
  // A page that comes back sees each cell's latest run only: the replay's
  // older runs are skipped.
  if (cell.latest && message.execution && message.execution !== cell.latest
      && message.seq !== undefined && message.seq <= state.attachSeq) return;
  if (message.execution && cell.execution && message.execution !== cell.execution
      && message.type !== "queued") {
    return;   // output of an older run of this cell
  }
  switch (message.type) {
    case "queued":
      if (statusLine.classList.contains("lost")) setStatus("connected", "connected");
      if (cell.execution && cell.execution !== message.execution) {
        cell.out.innerHTML = "";   // a newer run (from another page of this session)
        cell.lastStream = null;
      }
      cell.execution = message.execution;
      setCellState(cell, "queued");
      break;
    case "running":   // the worker started it
      setCellState(cell, "running");
      break;
    case "done":
      setCellState(cell, "done-" + message.status);
      cell.el.dataset.status = message.status;
      break;
    default:
      if (message.type === "stream") setCellState(cell, "running");
      render(cell, message);
  }
}

// A figure's alt text: what made it (its cell's code), for screen readers.
function figureLabel(target) {
  const cell = state.cells.get(target.cell || target.id);
  const code = cell ? cell.editor.getValue().trim() : "";
  const line = code.split("\n").find((l) => /plot|show|draw|imshow|\(/.test(l)) || code;
  return line ? `Figure from: ${line.slice(0, 120)}` : "Figure";
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
      img.alt = figureLabel(target);
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
      if (message.code === "quota" && message.sessions) return overLimit(message);
      if (message.code === "quota") return setStatus("lost", message.message);
      const refused = message.cell && state.cells.get(message.cell);
      if (refused) {   // not run (rate_limited): the cell says so, and why
        setCellState(refused, "done-refused");
        refused.el.dataset.status = "refused";
        render(refused, { type: "notice", text: message.message });
      }
      return notify(message.message, { seconds: 15 });
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

// Over the limit of worksheets per browser: say so, list them, and let this
// tab open one of them or close one to start afresh.
function overLimit(message) {
  setStatus("lost", "too many worksheets open");
  let box = $("#overlimit");
  if (!box) {
    box = document.createElement("section");
    box.id = "overlimit";
    box.setAttribute("aria-labelledby", "overlimit-title");
    $("#cells").before(box);
  }
  box.hidden = false;
  const title = document.createElement("h2");
  title.id = "overlimit-title";
  title.textContent = `This browser has ${message.sessions.length} worksheets open, `
    + `the limit of this appliance (${message.limit}).`;
  const advice = document.createElement("p");
  advice.textContent = "Open one of them in this tab, or close one to start a new worksheet "
    + "here. Closing a tab frees its worksheet within seconds.";
  const list = document.createElement("ul");
  for (const held of message.sessions) {
    const item = document.createElement("li");
    const what = document.createElement("span");
    const cells = held.cells === 1 ? "1 cell" : `${held.cells} cells`;
    const where = held.attached ? "open in another tab"
                                : `no tab has had it for ${held.idle} s`;
    what.textContent = `${cells}${held.first ? " — " + held.first.split("\n")[0] : ""} (${where})`;
    item.append(what,
      button("open", "Open here", "Open this worksheet in this tab", () => takeOver(held.session)),
      button("close", "Close it", "End this worksheet and start a new one here",
             () => closeAndStart(held.session)));
    list.append(item);
  }
  box.replaceChildren(title, advice, list);
}

function leaveOverLimit() {
  const box = $("#overlimit");
  if (box) box.hidden = true;
  setStatus("connecting", "connecting…");
}

function takeOver(session) {
  leaveOverLimit();
  state.session = session;
  sessionStorage.setItem(SESSION_KEY, session);
  state.ws.send(JSON.stringify({ type: "open", session, last_seq: 0 }));
}

function closeAndStart(session) {
  leaveOverLimit();
  state.session = null;
  state.ws.send(JSON.stringify({ type: "close", session }));
  state.ws.send(JSON.stringify({ type: "open", last_seq: 0 }));
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
    // The live frontends (this one first), or the doors (haproxies) pages come
    // in by: go on with the one in use, the next one after a drop.
    const using = state.ws ? state.ws.url.replace(/^ws/, "http").replace(/ws$/, "") : "";
    state.frontends = message.frontends;
    state.frontendIndex = Math.max(0, message.frontends.indexOf(using));
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
    // A fresh page: rebuild the worksheet the session knows (as its page
    // arranged it, else in the order of runs), then the replay fills in each
    // cell's latest run.
    state.attachSeq = message.seq;
    const runs = new Map(message.cells.map((saved) => [saved.cell, saved]));
    const cells = message.layout || message.cells;
    for (const saved of cells) {
      if (state.cells.has(saved.cell)) continue;
      addCell(null, saved.code, saved.cell);
      const cell = state.cells.get(saved.cell);
      const latest = runs.get(saved.cell);
      if (!latest) continue;
      cell.execution = cell.latest = latest.execution;
      if (latest.state === "done") setCellState(cell, "done-" + latest.status);
      else setCellState(cell, latest.state === "queued" ? "queued" : "running");
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
    if (!state.order.length && state.saved) {
      // A saved worksheet (/w/<id>): its cells with the outputs they had.
      for (const saved of state.saved.content.cells) {
        const code = saved.type === "markdown" ? "%md\n" + saved.code : saved.code;
        const cell = state.cells.get(addCell(null, code));
        for (const output of saved.outputs) render(cell, output);
        if (cell.text && saved.outputs.length) setCellState(cell, "done-ok");  // shown rendered
      }
      // A fresh cell to write in, as the page had after its last run (editing
      // the last saved one would show a text cell as its Markdown source).
      if (state.order.length) addCell(null);
    }
    if (!state.order.length) {
      addCell(null);
      if (!localStorage.getItem("salvus.helpSeen")) toggleHelp(true);   // a first visit
    }
    edit(state.order[state.order.length - 1]);
  }
  state.attachedOnce = true;
  for (const queued of state.queue || []) state.ws.send(JSON.stringify(queued));
  state.queue = [];
  if (state.layoutDirty && !message.layout) sendLayout();
  else if (state.layoutDirty) layoutChanged();
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
    catch (e) {
      notify("This link is damaged: its cells could not be read. Ask for the link again, or "
             + "open the one made with our database (/s/…).", { seconds: 30 });
    }
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
  if (!cells.length) return notify("Nothing to share yet: write something in a cell first.");
  const response = await fetch("/api/share", { method: "POST", body: JSON.stringify({ cells }),
                                               headers: { "Content-Type": "application/json" } });
  const body = await response.json();
  if (!response.ok) return notify(body.error, { seconds: 15 });
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
function interrupt() {
  send({ type: "interrupt" });
  notify("Interrupt sent to the running cell.");
}

function restart() {
  if (!confirm("Restart the session? Every variable is cleared; the cells stay.")) return;
  send({ type: "restart" });
}

// ------------------------------------------------------------------ help

function toggleHelp(open) {
  const help = $("#help");
  help.hidden = open === undefined ? !help.hidden : !open;
  $("#helpbutton").setAttribute("aria-expanded", String(!help.hidden));
  if (!help.hidden) localStorage.setItem("salvus.helpSeen", "1");
}

// An example goes into the selected cell when that is empty, else below it.
function insertExample(code) {
  const selected = state.cells.get(state.selected);
  let id;
  if (selected && !selected.editor.getValue().trim()) {
    id = selected.id;
    toggleKind(id, TEXT_MODE.test(code));
    selected.editor.setValue(code.replace(TEXT_MODE, ""));
  } else {
    id = addCell(state.selected || state.order[state.order.length - 1], code);
  }
  edit(id, true);
}

$("#helpbutton").onclick = () => toggleHelp();
$("#helpclose").onclick = () => {
  toggleHelp(false);
  if (state.selected) edit(state.selected);   // back to typing where one was
};
$("#helplink").onclick = (event) => { event.preventDefault(); toggleHelp(true); };
for (const example of document.querySelectorAll("#help [data-example]")) {
  example.onclick = () => insertExample(example.dataset.example);
}

$("#interrupt").onclick = interrupt;
$("#restart").onclick = restart;
$("#runall").onclick = runAll;
setInterval(() => {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) send({ type: "ping" });
}, 20000);
// A closed tab frees its session's place within seconds; a reload comes back
// to it before then.
addEventListener("pagehide", () => {
  if (state.layoutDirty) sendLayout();   // a reload must find the worksheet as it is
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send('{"type":"leave"}');
});
const savedTag = document.getElementById("worksheet");
state.saved = savedTag ? JSON.parse(savedTag.textContent) : null;
sharedContent().then((shared) => { state.shared = shared; connect(); });
