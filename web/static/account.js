// Who is signed in, in the header: "Sign in" (to /signin, back to this page),
// or the account's name and "Sign out". State-changing requests carry the
// sign-in's CSRF token (X-CSRF-Token), which /api/me gives to our own pages
// only (another site cannot read it). Where the admin allows no anonymous
// use, a page that is not signed in goes to the sign-in page.
"use strict";

const account = {
  csrf: null,
  me: null,

  async load() {
    const box = document.getElementById("account");
    let me;
    try {
      const response = await fetch("/api/me", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error(response.statusText);
      me = await response.json();
    } catch (e) {
      box.textContent = "";
      return;
    }
    account.me = me;
    account.csrf = me.csrf;
    const back = location.pathname + location.search + location.hash;
    box.replaceChildren();
    if (!me.account) {
      if (!me.anonymous) {
        location.assign("/signin?next=" + encodeURIComponent(back));
        return;
      }
      if (!me.providers.length) return;
      const link = document.createElement("a");
      link.href = "/signin?next=" + encodeURIComponent(back);
      link.textContent = "Sign in";
      link.title = "Sign in to keep your worksheets, with their history";
      box.append(link);
      return;
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = me.account.name || me.account.email || "signed in";
    name.title = `${me.account.email} (${me.account.provider})`;
    const out = document.createElement("button");
    out.type = "button";
    out.id = "signout";
    out.textContent = "Sign out";
    out.onclick = account.signOut;
    const sheets = document.createElement("a");
    sheets.href = "/worksheets";
    sheets.className = "sheets";
    sheets.textContent = "Worksheets";
    sheets.title = "Your saved worksheets and their versions";
    box.append(name, sheets, out);
  },

  async signOut() {
    await fetch("/signout", {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": account.csrf || "", "Content-Type": "application/json" },
      body: "{}",
    });
    await account.load();
  },
};

account.load();
