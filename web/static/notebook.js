// Jupyter notebooks on the worksheet page: download the cells with their
// outputs as .ipynb (or the cells as a .sage/.py script), and open an .ipynb
// by upload or by ?ipynb=<a URL of this appliance>. The server builds and
// reads the files (web/notebooks.py); this file only gathers what the page
// shows and adds cells. Of app.js it uses state.order, state.cells (each
// cell's editor and output element) and addCell(afterId, code), nothing else.
"use strict";

(() => {
  const MAX_BYTES = 16 << 20;   // web/notebooks.py's MAX_BYTES: refused here before sending
  const byId = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- messages

  // One line under the header: errors stay until dismissed, good news fades.
  function say(text, ok = false) {
    let bar = byId("notebook-message");
    if (!bar) {
      bar = document.createElement("div");
      bar.id = "notebook-message";
      bar.innerHTML = '<span class="text"></span><button type="button" aria-label="dismiss">✕</button>';
      bar.querySelector("button").onclick = () => { bar.hidden = true; };
      document.querySelector("header").after(bar);
    }
    bar.className = ok ? "ok" : "error";
    bar.setAttribute("role", ok ? "status" : "alert");
    bar.querySelector(".text").textContent = text;
    bar.hidden = false;
    clearTimeout(say.timer);
    if (ok) say.timer = setTimeout(() => { bar.hidden = true; }, 8000);
  }

  async function errorOf(response) {
    try { return (await response.json()).error || response.statusText; }
    catch (e) { return `the server answered ${response.status} ${response.statusText}`; }
  }

  // ---------------------------------------------------------------- export

  // Each cell's code and the outputs it shows, in the shapes web/notebooks.py
  // reads. A text cell's editor holds its Markdown without the %md line.
  function gather() {
    return state.order.map((id) => {
      const cell = state.cells.get(id);
      return { type: cell.text ? "markdown" : "code", code: cell.editor.getValue(),
               outputs: outputsOf(cell.out) };
    });
  }

  function outputsOf(root) {
    const outputs = [];
    for (const node of root.children) {
      if (node.matches("pre.stdout, pre.stderr")) {
        const name = node.classList.contains("stderr") ? "stderr" : "stdout";
        outputs.push({ type: "stream", name, text: node.textContent });
      } else if (node.matches("pre.error")) {
        outputs.push({ type: "error", traceback: node.textContent });
      } else if (node.matches(".notice")) {
        outputs.push({ type: "notice", text: node.textContent });
      } else if (node.matches("img")) {
        outputs.push({ type: "image", url: node.getAttribute("src"),
                       width: parseInt(node.style.width, 10) || null });
      } else if (node.matches(".result")) {
        outputs.push({ type: "result", data: resultOf(node) });
      } else if (node.matches(".interact")) {   // its latest output; controls have no file form
        const shown = node.querySelector(".interact-output");
        if (shown) outputs.push(...outputsOf(shown));
      }
    }
    return outputs;
  }

  // The result's mime bundle, read back from what the page drew: KaTeX keeps
  // each formula's TeX in an annotation.
  function resultOf(div) {
    const data = { "text/plain": div.dataset.plain || "" };
    const tex = div.classList.contains("latex") && texOf(div);
    if (tex) data["text/latex"] = `$$${tex}$$`;
    if (div.classList.contains("html")) data["text/html"] = htmlOf(div);
    if (!data["text/plain"] && !tex && !data["text/html"]) data["text/plain"] = div.textContent;
    return data;
  }

  function texOf(el) {
    const annotation = el.querySelector('annotation[encoding="application/x-tex"]');
    return annotation ? annotation.textContent : "";
  }

  // HTML as it came, its typeset formulas back to $...$ and $$...$$.
  function htmlOf(div) {
    const copy = div.cloneNode(true);
    for (let math = copy.querySelector(".katex"); math; math = copy.querySelector(".katex")) {
      const display = math.closest(".katex-display");
      const tex = texOf(math);
      (display || math).replaceWith(display ? `$$${tex}$$` : `$${tex}$`);
    }
    return copy.innerHTML;
  }

  async function download(format) {
    const shared = location.pathname.match(/^\/s\/([A-Za-z]+)$/);
    const body = { format, language: byId("language").value, cells: gather(),
                   name: shared ? shared[1] : "worksheet" };
    let response;
    try {
      response = await fetch("/api/notebook/export", {
        method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
    } catch (e) {
      return say("could not reach the server to build the file; try again when connected");
    }
    if (!response.ok) return say(await errorOf(response));
    const disposition = response.headers.get("Content-Disposition") || "";
    save(await response.blob(), (disposition.match(/filename="([^"]+)"/) || [])[1] || "worksheet");
  }

  function save(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    // Revoked once the browser has surely taken the file.
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  }

  // ---------------------------------------------------------------- import

  // Resolves once the page has its cells (app.js adds at least one when it
  // attaches to its session): imported cells then go after them.
  function pageReady() {
    if (state.order.length) return Promise.resolve();
    return new Promise((resolve) => {
      const watch = new MutationObserver(() => {
        if (state.order.length) { watch.disconnect(); resolve(); }
      });
      watch.observe(byId("cells"), { childList: true });
    });
  }

  // The notebook's cells go below the page's own; an empty last code cell
  // takes the first of them when that is code too (addCell makes a text cell
  // of a %md one). Nothing on the page is changed otherwise.
  function addCells(cells) {
    let last = state.order[state.order.length - 1];
    let first = null;
    cells.forEach((imported, i) => {
      const blank = state.cells.get(last);
      if (i === 0 && imported.type === "code" && !blank.text && blank.editor.getValue() === "") {
        blank.editor.setValue(imported.code);
      } else {
        last = addCell(last, imported.code);
      }
      first = first || last;
    });
    if (first) state.cells.get(first).el.scrollIntoView({ block: "nearest" });
  }

  // A notebook's language becomes the page's when the page holds no code yet.
  function followLanguage(language) {
    const select = byId("language");
    const blank = state.order.every((id) => !state.cells.get(id).editor.getValue().trim());
    if (!language || !blank || select.value === language) return "";
    select.value = language;
    select.dispatchEvent(new Event("change"));
    return `; the language is now ${select.selectedOptions[0].textContent}, as the notebook's`;
  }

  async function open(blob, name) {
    let response;
    try {
      response = await fetch("/api/notebook/import", {
        method: "POST", body: blob, headers: { "Content-Type": "application/x-ipynb+json" } });
    } catch (e) {
      say(`${name}: could not reach the server to read it; try again when connected`);
      return false;
    }
    if (!response.ok) {
      say(`${name}: ${await errorOf(response)}`);
      return false;
    }
    const notebook = await response.json();
    await pageReady();
    const language = followLanguage(notebook.language);
    addCells(notebook.cells);
    const count = notebook.cells.length;
    say(`opened ${name}: ${count} cell${count === 1 ? "" : "s"} added${language}`, true);
    return true;
  }

  async function openUpload(input) {
    const file = input.files[0];
    input.value = "";   // the same file may be chosen again
    if (!file) return;
    if (file.size > MAX_BYTES) {
      return say(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB; notebooks are at ` +
                 `most ${MAX_BYTES >> 20} MB here: clear its outputs in Jupyter first`);
    }
    await open(file, file.name);
  }

  // ?ipynb=<url>: the page itself fetches it, and only from this appliance,
  // so no one can make the appliance or this page fetch from elsewhere.
  async function openFromAddress(address) {
    let url;
    try { url = new URL(address, location.href); } catch (e) { url = null; }
    if (!url || url.origin !== location.origin) {
      const where = url && url.host ? url.host : address.slice(0, 80);
      return say(`?ipynb= opens notebooks of this appliance only, not ${where}: ` +
                 "download the file and use Open .ipynb");
    }
    const name = decodeURIComponent(url.pathname.split("/").pop()) || url.pathname;
    let response;
    try {
      response = await fetch(url, { mode: "same-origin", credentials: "same-origin" });
    } catch (e) {
      return say(`${name}: could not be fetched from ${url.pathname}; check the address`);
    }
    if (!response.ok) return say(`${name}: ${url.pathname} answered ${response.status}; check the address`);
    if (await open(await response.blob(), name)) {
      // Opened once: a reload must not add the cells a second time.
      const search = new URLSearchParams(location.search);
      search.delete("ipynb");
      const rest = search.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    }
  }

  // ---------------------------------------------------------------- wiring

  // The saved worksheets (saving.js) keep what a download would hold.
  window.worksheetCells = gather;

  byId("nb-download").onclick = () => download("ipynb");
  byId("nb-script").onclick = () => download("script");
  byId("nb-open").onclick = () => byId("nb-file").click();
  byId("nb-file").onchange = () => openUpload(byId("nb-file"));
  const address = new URLSearchParams(location.search).get("ipynb");
  if (address !== null) openFromAddress(address);
})();
