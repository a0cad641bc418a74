// Fleet page status mark and re-authentication.  A page script, not a CustomJS model:
// the pages' Content-Security-Policy has no 'unsafe-eval', which CustomJS needs.  The
// dashboard page loads it from /static/status.js and /embed/<name>.js appends it, so
// embedded dashboards get it too.  It hooks every Bokeh document of the page.
//
// A small fixed mark (data-state live / quiet / stale / reconnecting) shows:
//   "live · updated 3 s ago"      the instance is caught up and data arrived lately;
//   "quiet · updated 2 min ago"   caught up, but nothing new for the dashboard's quiet
//                                 threshold (the controller is silent);
//   "stale · <why> · updated ..." the instance is not caught up with Redis, or has not
//                                 said anything for three keepalives;
//   "reconnecting..." / "stale since HH:MM:SS" while the websocket is down.
// The instance keeps a JSON status in the tags of a hidden model named
// "fleet-status-data" in each document (app/instance/pagestatus.py); a timer reads it
// from every Bokeh document of the page once a second and extrapolates the age.
// When BokehJS gives up reconnecting, or its token has expired (a reconnect would be
// refused), the page reloads itself after a random delay so that it goes back
// through Flask for a fresh token without a stampede after an instance restart.
// Every text is set with textContent.
function fleet_status(ev, kind) {
  const w = window;
  const st = w.__fleet_status || (w.__fleet_status = {stale_since: null, reload_at: null, ws: "up",
                                                      timer: null});
  const RELOAD_MIN_MS = 1000, RELOAD_JITTER_MS = 9000;
  const STATUS_MODEL = "fleet-status-data";
  const GREEN = "#2e7d32", AMBER = "#e65100", RED = "#b71c1c", YELLOW = "#f9a825";

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
  function show(state, text, color) {
    const el = mark();
    el.textContent = text;
    el.style.background = color;
    el.dataset.state = state;
  }
  function ago(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }
  // The status of every Bokeh document on the page, with when each value arrived.
  function collect() {
    const out = [];
    const docs = (w.Bokeh && w.Bokeh.documents) || [];
    for (const doc of docs) {
      let m = null;
      try { m = doc.get_model_by_name(STATUS_MODEL); } catch (e) { m = null; }
      const text = m != null && m.tags ? m.tags[0] : null;
      if (typeof text !== "string" || text === "") continue;
      if (m.__fleet_seen == null || m.__fleet_seen.text !== text) {
        try {
          m.__fleet_seen = {text: text, info: JSON.parse(text), at: Date.now()};
        } catch (e) { continue; }  // a malformed value is ignored; the next one replaces it
      }
      out.push(m.__fleet_seen);
    }
    return out;
  }
  // The worst of the page's dashboards: [rank, state, text, color].
  function judge(seen) {
    const info = seen.info;
    const since = (Date.now() - seen.at) / 1000;
    const age = info.age == null ? null : info.age + since;
    const updated = age == null ? "no data yet" : "updated " + ago(age) + " ago";
    if (!info.ok) return [2, "stale", "stale · " + String(info.reason || "server not caught up") + " · " + updated, RED];
    if (since > 3 * (info.keepalive || 10)) return [2, "stale", "stale · no word from the server for " + ago(since) + " · " + updated, RED];
    if (age != null && age > (info.quiet || 60)) return [1, "quiet", "quiet · " + updated, AMBER];
    return [0, "live", "live · " + updated, GREEN];
  }
  function render() {
    if (st.ws !== "up") return;  // the connection states own the mark
    let worst = null;
    for (const seen of collect()) {
      const j = judge(seen);
      if (worst == null || j[0] > worst[0]) worst = j;
    }
    if (worst == null) worst = [0, "live", "live", GREEN];
    show(worst[1], worst[2], worst[3]);
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
    show("stale", "stale since " + hhmmss(st.stale_since || Date.now()) + " - reloading (" + why + ")", RED);
    setTimeout(reload_when_up, delay);
  }

  w.__fleet_render = render;  // the latest definition serves the timer
  if (st.timer == null) st.timer = setInterval(() => { if (w.__fleet_render) w.__fleet_render(); }, 1000);
  if (kind === "ready" || kind === "reconnected") {
    st.stale_since = null;
    st.ws = "up";
    render();
    return;
  }
  // connection_lost: ev.timeout is null when BokehJS will not try again.
  st.ws = "lost";
  if (st.stale_since == null) st.stale_since = ev.timestamp || Date.now();
  const conn = ev.connection && ev.connection.deref ? ev.connection.deref() : null;
  if (conn != null && token_expired(conn)) {
    reload_soon("session expired");
  } else if (ev.timeout == null) {
    reload_soon("server unreachable");
  } else if (ev.attempts >= 2) {
    show("stale", "stale since " + hhmmss(st.stale_since), AMBER);
  } else {
    show("reconnecting", "reconnecting...", YELLOW);
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
