// Large series: full detail for this viewer's own zoom (app/instance/series.py).
//
// The shared Bokeh document holds a min-max reduction of a long figure's whole series
// (its data source is tagged "fleet-reduced").  When the viewer zooms or pans such a
// plot, this script asks the instance (GET <bokeh prefix>/series, through nginx, with
// the page's Bokeh token in X-Fleet-Token) for the figure's rows in the visible x range
// at the plot's pixel width, and sets them into the data source in this browser only
// (setv with sync: false: nothing goes back to the server).  Requests are debounced;
// one is in flight per plot at a time.  After "reset" the reduced whole series comes
// back the same way.  While the viewer stays zoomed, new data from the server (a
// stream, a re-reduction) triggers a fresh request, at most once a second.
// A page script, not a CustomJS model (the pages' CSP has no 'unsafe-eval').
// window.__fleet_series counts requests, answers and errors (tests, benchmarks).
//
// Page memory under replace (see prune() below): BokehJS 3.10 forgets the models a
// server patch made unreachable (a replaced figure's plot, glyphs, tools, data
// source) only in a recomputation it throttles to once every 30 s; with a controller
// replacing figures every few seconds, ten figures' worth of models, their columns and
// the DOM their old views held stay alive.  After a patch that brought new models this
// script asks for the recomputation at once.
(function () {
  "use strict";
  const w = window;
  if (w.__fleet_series_hooked) return;
  w.__fleet_series_hooked = true;
  const TAG = "fleet-reduced";
  const DEBOUNCE_MS = 80, SERVER_CHANGE_MS = 1000, MAX_PX = 8192;
  const st = w.__fleet_series = {hooked: 0, requests: 0, applied: 0, errors: 0, last: null};
  const hooked = new WeakSet();
  const pruned = new WeakSet();

  // Drop unreachable models as soon as a patch has added models (a replace), not up to
  // 30 s later.  Document._recompute_all_models is BokehJS-internal (3.10): without it,
  // nothing is pruned early and BokehJS's own timer still does it.  A page that sets
  // window.__fleet_prune = false before this script runs opts out (the benchmark's baseline).
  function prune(doc) {
    if (w.__fleet_prune === false || pruned.has(doc) || typeof doc._recompute_all_models !== "function" || !(doc._all_models instanceof Map)) return;
    pruned.add(doc);
    let known = doc._all_models.size, pending = false;
    doc.on_change(() => {
      if (pending || doc._all_models.size <= known) return;
      pending = true;
      setTimeout(() => {  // after the whole patch is applied
        pending = false;
        doc._recompute_all_models();
        known = doc._all_models.size;
        st.pruned = (st.pruned || 0) + 1;
      }, 0);
    }, true);
  }

  // The token and the instance URL of this page's session: those of its autoload
  // request (app/web/embed.py fetches .../dashboard/autoload.js?...&bokeh-token=...).
  function session_info() {
    const entries = performance.getEntriesByType("resource");
    for (let i = entries.length - 1; i >= 0; i--) {
      const name = entries[i].name;
      if (name.indexOf("/autoload.js?") < 0) continue;
      try {
        const u = new URL(name);
        const token = u.searchParams.get("bokeh-token");
        if (!token) continue;
        const base = u.pathname.replace(/\/[^/]+\/autoload\.js$/, "");
        return {token: token, url: u.origin + base + "/series"};
      } catch (e) { /* not a URL: next entry */ }
    }
    return null;
  }

  function columns(raw) {
    const out = {};
    for (const name of Object.keys(raw)) {
      const vals = raw[name];
      const numeric = vals.every((v) => v === null || typeof v === "number");
      out[name] = numeric ? Float64Array.from(vals, (v) => (v === null ? NaN : v)) : vals;
    }
    return out;
  }

  function zoomed(h) {
    return h.plot.x_range.have_updated_interactively === true;
  }

  function schedule(h, delay) {
    if (h.timer != null) {
      if (delay > DEBOUNCE_MS) return;  // a server change never delays a zoom's request
      clearTimeout(h.timer);
    }
    h.timer = setTimeout(() => { h.timer = null; request(h); }, delay);
  }

  function request(h) {
    if (h.source.document == null) return;  // the figure was replaced: its hook is dead
    if (h.inflight) { h.again = true; return; }
    const info = session_info();
    if (info == null) return;
    const params = new URLSearchParams({figure: h.source.name});
    if (zoomed(h)) {
      params.set("x0", String(h.plot.x_range.start));
      params.set("x1", String(h.plot.x_range.end));
    } else if (!h.detailed) {
      return;  // showing the shared view already
    }
    const width = h.plot.inner_width || 800;
    params.set("px", String(Math.max(1, Math.min(MAX_PX, Math.round(width * (w.devicePixelRatio || 1))))));
    h.inflight = true;
    h.again = false;
    st.requests += 1;
    const t0 = performance.now();
    fetch(info.url + "?" + params.toString(), {credentials: "same-origin", cache: "no-store",
                                               headers: {"X-Fleet-Token": info.token}})
      .then((r) => {
        if (!r.ok) throw new Error(String(r.status));
        return r.json();
      })
      .then((body) => {
        const t1 = performance.now();
        if (h.source.document != null && !h.again) {
          h.mine = true;
          try {
            h.source.setv({data: columns(body.columns)}, {sync: false, check_eq: false});
          } finally {
            h.mine = false;
          }
          h.detailed = zoomed(h);
          st.applied += 1;
          st.last = {figure: body.figure, rows: body.columns[Object.keys(body.columns)[0]].length,
                     exact: body.exact, total: body.rows, fetch_ms: t1 - t0, apply_ms: performance.now() - t1,
                     at: performance.now()};
        }
      })
      .catch(() => { st.errors += 1; })
      .finally(() => {
        h.inflight = false;
        if (h.again) schedule(h, DEBOUNCE_MS);
      });
  }

  function hook(doc) {
    prune(doc);
    let models;
    try { models = Array.from(doc.all_models); } catch (e) { return; }
    for (const src of models) {
      if (hooked.has(src) || !Array.isArray(src.tags) || src.tags.indexOf(TAG) < 0) continue;
      for (const plot of models) {
        if (plot.x_range == null || !Array.isArray(plot.renderers)) continue;
        if (!plot.renderers.some((r) => r.data_source === src)) continue;
        hooked.add(src);
        const h = {source: src, plot: plot, timer: null, inflight: false, again: false, mine: false,
                   detailed: false};
        plot.x_range.change.connect(() => schedule(h, DEBOUNCE_MS));
        src.properties.data.change.connect(() => {
          if (h.mine) return;
          h.detailed = false;  // the server's view replaced ours
          if (zoomed(h)) schedule(h, SERVER_CHANGE_MS);
        });
        src.streaming.connect(() => { if (zoomed(h)) schedule(h, SERVER_CHANGE_MS); });
        st.hooked += 1;
        break;
      }
    }
  }

  function poll() {
    const docs = (w.Bokeh && w.Bokeh.documents) || [];
    for (const doc of docs) hook(doc);
    setTimeout(poll, docs.length ? 1000 : 100);
  }
  poll();
})();
