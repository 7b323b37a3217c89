// termshare's lane panel: one lane per terminal, each share's badge kept live from
// the daemon's event stream (/api/events), actions sent with the session's CSRF token.
"use strict";

// The page token: handed over once, in the page that took the secret, then kept in
// this tab (sessionStorage is per origin, port included). Every data and action
// request carries it; the cookie alone opens nothing.
const TOKEN_KEY = "termshare-page-token";
let token = "";
const lanes = new Map(); // terminal -> its <section>

const $ = (sel, root = document) => root.querySelector(sel);

function say(text) {
  $("#message").textContent = text;
}

function connection(state, text) {
  const el = $("#link-state");
  el.className = "conn conn-" + state;
  el.textContent = text;
}

// "4m 59s" until an RFC 3339 time; "expired" once past.
function countdown(at) {
  const left = Math.floor((Date.parse(at) - Date.now()) / 1000);
  if (!(left > 0)) return "expired";
  const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
}

function tick() {
  for (const el of document.querySelectorAll(".countdown[data-expires]")) {
    el.textContent = countdown(el.dataset.expires);
  }
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Termshare-Token": token },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error ? answer.error.message : r.statusText);
  return answer;
}

async function action(what, path, body) {
  try {
    await post(path, body);
    say(what + ": done");
  } catch (e) {
    say(what + " refused: " + e.message);
  }
}

function badge(share) {
  const el = $("#share-template").content.firstElementChild.cloneNode(true);
  el.dataset.share = share.share_id;
  $(".extend", el).addEventListener("click", () =>
    action("extend", "/api/extend", { share_id: share.share_id, by: "5m" }));
  $(".rotate", el).addEventListener("click", () =>
    action("new link", "/api/rotate", { share_id: share.share_id }));
  $(".revoke", el).addEventListener("click", () =>
    action("revoke", "/api/revoke", { share_id: share.share_id }));
  $(".copy", el).addEventListener("click", async () => {
    try {
      const r = await fetch("/api/link/" + encodeURIComponent(share.share_id), {
        credentials: "same-origin", headers: { "X-Termshare-Token": token },
      });
      const l = await r.json();
      if (!r.ok) throw new Error(l.error ? l.error.message : r.statusText);
      await navigator.clipboard.writeText(l.link);
      say("link copied");
    } catch (e) {
      say("cannot copy the link: " + e.message);
    }
  });
  return el;
}

function fillBadge(el, share) {
  el.className = "badge " + share.state;
  el.setAttribute("aria-label", "share " + share.share_id + ", " + share.state);
  $(".state", el).textContent = share.state;
  $(".backend", el).textContent = share.backend;
  $(".access", el).textContent = share.access;
  $(".principal", el).textContent = share.principal;
  $(".participants", el).textContent = share.participants === null ? "unknown" : String(share.participants);
  const c = $(".countdown", el);
  c.dataset.expires = share.expires_at;
  c.textContent = countdown(share.expires_at);
  // Only its owner may act on a share, and only the owner copies its link.
  for (const b of el.querySelectorAll(".actions button")) b.hidden = !share.mine;
}

function handoffView(h) {
  const box = document.createElement("div");
  if (!h) return box;
  const p = document.createElement("p");
  let text = "Handoff " + h.from + " → " + h.to + ": " + h.state;
  if (h.step !== undefined && h.step !== null) {
    text += " (step " + h.step + " of " + h.of + ", waiting for " + (h.waiting_for || "?") + ")";
  }
  p.textContent = text;
  box.appendChild(p);
  if (h.state === "pending") {
    for (const [label, path] of [["Approve", "/api/handoff/approve"], ["Deny", "/api/handoff/deny"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.addEventListener("click", () => action(label.toLowerCase(), path, { handoff_id: h.handoff_id }));
      box.appendChild(b);
    }
  }
  return box;
}

function lane(terminal) {
  let el = lanes.get(terminal);
  if (el) return el;
  el = $("#lane-template").content.firstElementChild.cloneNode(true);
  el.dataset.terminal = terminal;
  $(".lane-name", el).textContent = terminal;
  el.setAttribute("aria-label", "terminal " + terminal);
  $(".share-form", el).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    action("share " + terminal, "/api/share", {
      terminal, backend: f.backend.value, access: f.access.value, ttl: f.ttl.value,
    });
  });
  lanes.set(terminal, el);
  return el;
}

function render(view) {
  $("#who").textContent = "signed in as " + (view.principal || "?") + (view.operator ? " (operator)" : "");
  const audit = $("#audit");
  audit.hidden = !view.audit || view.audit.healthy !== false;
  audit.textContent = audit.hidden ? "" : "The audit log is failing: " + view.audit.error + " (new shares are refused)";
  const main = $("#lanes");
  const seen = new Set();
  for (const l of view.lanes) {
    seen.add(l.terminal);
    const el = lane(l.terminal);
    if (el.parentNode !== main) main.appendChild(el);
    const box = $(".shares", el);
    const keep = new Set(l.shares.map((s) => s.share_id));
    for (const old of [...box.children]) if (!keep.has(old.dataset.share)) old.remove();
    if (l.shares.length === 0) {
      box.innerHTML = "";
      const none = document.createElement("p");
      none.className = "none";
      none.textContent = "not shared";
      box.appendChild(none);
    } else {
      for (const n of box.querySelectorAll(".none")) n.remove();
    }
    for (const s of l.shares) {
      let b = box.querySelector('[data-share="' + CSS.escape(s.share_id) + '"]');
      if (!b) { b = badge(s); box.appendChild(b); }
      fillBadge(b, s);
    }
    $(".handoff", el).replaceChildren(handoffView(l.handoff));
  }
  for (const [terminal, el] of lanes) {
    if (!seen.has(terminal)) { el.remove(); lanes.delete(terminal); }
  }
}

function listen() {
  const events = new EventSource("/api/events?t=" + encodeURIComponent(token));
  events.addEventListener("open", () => connection("live", "live"));
  events.addEventListener("view", (e) => render(JSON.parse(e.data)));
  events.addEventListener("error", () => {
    connection("down", "disconnected — reconnecting…");
    if (events.readyState === EventSource.CLOSED) {
      // The browser gave up (the daemon answered with an error): try again shortly.
      setTimeout(listen, 2000);
    }
  });
}

async function start() {
  const handed = document.querySelector('meta[name="termshare-page-token"]').content;
  if (handed) sessionStorage.setItem(TOKEN_KEY, handed);
  token = sessionStorage.getItem(TOKEN_KEY) || "";
  // The one-time secret has done its work: out of the address bar and the history.
  if (location.search) history.replaceState(null, "", "/");
  try {
    const r = await fetch("/api/state", { credentials: "same-origin", headers: { "X-Termshare-Token": token } });
    if (!r.ok) throw new Error((await r.json()).error.message);
    const view = await r.json();
    render(view);
  } catch (e) {
    connection("down", "not signed in: " + e.message);
    return;
  }
  listen();
  setInterval(tick, 1000);
}

document.addEventListener("DOMContentLoaded", start);
