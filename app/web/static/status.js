// Fleet page status mark and re-authentication.  A page script, not a CustomJS model:
// the pages' Content-Security-Policy has no 'unsafe-eval', which CustomJS needs.  The
// dashboard page loads it from /static/status.js and /embed/<name>.js appends it, so
// embedded dashboards get it too.  It hooks every Bokeh document of the page.
//
// A small fixed mark shows "live", "reconnecting..." or "stale since HH:MM:SS".
// When BokehJS gives up reconnecting, or its token has expired (a reconnect would be
// refused), the page reloads itself after a random delay so that it goes back
// through Flask for a fresh token without a stampede after an instance restart.
function fleet_status(ev, kind) {
  const w = window;
  const st = w.__fleet_status || (w.__fleet_status = {stale_since: null, reload_at: null});
  const RELOAD_MIN_MS = 1000, RELOAD_JITTER_MS = 9000;

  function mark() {
    let el = document.getElementById("fleet-status");
    if (el == null) {
      el = document.createElement("div");
      el.id = "fleet-status";
      el.setAttribute("role", "status");
      el.style.cssText = "position:fixed;right:8px;bottom:8px;z-index:1000;padding:2px 8px;" +
        "border-radius:10px;font:12px sans-serif;color:#fff;background:#2e7d32;opacity:.85";
      document.body.appendChild(el);
    }
    return el;
  }
  function show(text, color) {
    const el = mark();
    el.textContent = text;
    el.style.background = color;
    el.dataset.state = text.split(" ")[0];
  }
  function hhmmss(t) {
    const d = new Date(t), p = (n) => String(n).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  function token_expired(conn) {
    try {
      let part = conn.token.split(".")[0];
      part += "=".repeat((4 - part.length % 4) % 4);
      const payload = JSON.parse(atob(part.replace(/_/g, "/").replace(/-/g, "+")));
      return payload.session_expiry != null && Date.now() / 1000 >= payload.session_expiry - 2;
    } catch (e) {
      return false;
    }
  }
  // Reload only once the page itself answers again (after a whole-stack restart the
  // site may be down for longer than BokehJS's reconnect attempts): a reload into a
  // 502 page would leave the viewer with a dead page and no script to recover it.
  function reload_when_up() {
    fetch(w.location.href, {method: "GET", credentials: "same-origin", cache: "no-store",
                            redirect: "follow"})
      .then((r) => {
        if (r.ok) { w.location.reload(); } else { throw new Error(String(r.status)); }
      })
      .catch(() => {
        setTimeout(reload_when_up, RELOAD_MIN_MS + Math.floor(Math.random() * RELOAD_JITTER_MS / 2));
      });
  }
  function reload_soon(why) {
    if (st.reload_at != null) return;
    const delay = RELOAD_MIN_MS + Math.floor(Math.random() * RELOAD_JITTER_MS);
    st.reload_at = Date.now() + delay;
    show("stale since " + hhmmss(st.stale_since || Date.now()) + " - reloading (" + why + ")", "#b71c1c");
    setTimeout(reload_when_up, delay);
  }

  if (kind === "ready" || kind === "reconnected") {
    st.stale_since = null;
    show("live", "#2e7d32");
    return;
  }
  // connection_lost: ev.timeout is null when BokehJS will not try again.
  if (st.stale_since == null) st.stale_since = ev.timestamp || Date.now();
  const conn = ev.connection && ev.connection.deref ? ev.connection.deref() : null;
  if (conn != null && token_expired(conn)) {
    reload_soon("session expired");
  } else if (ev.timeout == null) {
    reload_soon("server unreachable");
  } else if (ev.attempts >= 2) {
    show("stale since " + hhmmss(st.stale_since), "#e65100");
  } else {
    show("reconnecting...", "#f9a825");
  }
}

(function () {
  "use strict";
  const w = window;
  if (w.__fleet_status_hooked) return;
  w.__fleet_status_hooked = true;
  function hook(doc) {
    if (doc.__fleet_hooked) return;
    doc.__fleet_hooked = true;
    doc.on_event("connection_lost", (_, ev) => fleet_status(ev, "lost"));
    doc.on_event("client_reconnected", (_, ev) => fleet_status(ev, "reconnected"));
    fleet_status({}, "ready");
  }
  function poll() {
    const docs = (w.Bokeh && w.Bokeh.documents) || [];
    for (const doc of docs) hook(doc);
    setTimeout(poll, docs.length ? 1000 : 100);
  }
  poll();
})();
