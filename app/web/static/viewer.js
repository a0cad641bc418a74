// Per-viewer things of a dashboard page, done in the browser: the instance's document
// is shared by every viewer of the dashboard and ignores what a browser sends back, so
// nothing here is sent to it (every model change uses setv(..., {sync: false})).
//
//   login renewal  while the page's websocket is up, GET data-renew-url every
//                  data-renew-every seconds: a wall display stays logged in for weeks;
//   dark theme     <body class="theme-dark">: Bokeh's plots, axes, legends, tables are
//                  recoloured as they appear (replaced figures too);
//   zoom kept      a plot zoomed or panned by the viewer is saved in sessionStorage
//                  (per dashboard and figure) and put back after a reload or
//                  reconnect; the Reset tool forgets it;
//   CSV            the "Download CSV" menu lists the figures with data and builds the
//                  file from the ColumnDataSource the page holds.
// A page script (the pages' CSP allows no inline script and no eval).  Every text is
// set with textContent; CSV cells that a spreadsheet would run as a formula get a
// leading apostrophe.
(function () {
  "use strict";
  const w = window;
  const root = document.getElementById("fleet-viewer");
  if (root == null || w.__fleet_viewer) return;
  w.__fleet_viewer = true;
  const dashboard = root.dataset.dashboard || "dashboard";
  const dark = document.body.classList.contains("theme-dark");
  const ZOOM_KEY = "fleet-zoom:" + dashboard;

  function docs() { return (w.Bokeh && w.Bokeh.documents) || []; }
  function models() {
    const out = [];
    for (const d of docs()) for (const m of d.all_models) out.push(m);
    return out;
  }
  function has(m, prop) { return m.properties != null && prop in m.properties; }
  function set(m, attrs) {
    const own = {};
    for (const k in attrs) if (has(m, k)) own[k] = attrs[k];
    try { m.setv(own, {sync: false}); } catch (e) { /* a model that refuses: leave it */ }
  }

  // --- login renewal ------------------------------------------------------------------
  const renewUrl = root.dataset.renewUrl;
  const renewEvery = Math.max(1, parseFloat(root.dataset.renewEvery) || 300) * 1000;
  function renew() {
    const st = w.__fleet_status;
    const up = docs().length > 0 && (st == null || st.ws === "up");
    if (renewUrl && up) {
      fetch(renewUrl, {credentials: "same-origin", cache: "no-store"})
        .then((r) => { root.dataset.renewed = String(r.status); })
        .catch(() => { root.dataset.renewed = "error"; });
    }
    setTimeout(renew, renewEvery);
  }
  setTimeout(renew, renewEvery);

  // --- dark theme -----------------------------------------------------------------------
  const C = {bg: "#15191e", plot: "#1b2027", fg: "#e3e3e3", muted: "#a0a7b0", grid: "#2f363f",
             line: "#3a424c"};
  const TABLE_CSS =
    ".slick-header,.slick-header-columns,.slick-header-column{background:" + C.plot + " !important;" +
    "color:" + C.fg + " !important;border-color:" + C.line + " !important}" +
    ".slick-viewport,.grid-canvas,.slick-row,.slick-row.odd,.slick-row.even,.slick-cell{background:" +
    C.bg + " !important;color:" + C.fg + " !important;border-color:" + C.line + " !important}";
  const themed = new WeakSet();
  function theme(m) {
    if (themed.has(m)) return;
    themed.add(m);
    if (has(m, "border_fill_color") && has(m, "background_fill_color") && has(m, "outline_line_color")) {
      set(m, {background_fill_color: C.plot, border_fill_color: C.bg, outline_line_color: C.line});
    } else if (has(m, "major_label_text_color")) {  // axes
      set(m, {axis_line_color: C.muted, major_tick_line_color: C.muted, minor_tick_line_color: C.muted,
              major_label_text_color: C.fg, axis_label_text_color: C.fg});
    } else if (has(m, "grid_line_color")) {
      if (m.grid_line_color != null) set(m, {grid_line_color: C.grid});
    } else if (has(m, "label_text_color") && has(m, "items")) {  // legends
      set(m, {background_fill_color: C.plot, border_line_color: C.line, label_text_color: C.fg,
              inactive_fill_color: C.bg});
    } else if (String(m.type).endsWith("Title") && has(m, "text_color")) {
      set(m, {text_color: C.fg});
    } else if (String(m.type).endsWith("DataTable") && has(m, "stylesheets")) {
      set(m, {stylesheets: [...m.stylesheets, TABLE_CSS]});
    }
  }

  // --- zoom kept across reloads and reconnects -------------------------------------------
  function isPlot(m) { return has(m, "x_range") && has(m, "y_range") && has(m, "renderers"); }
  function plotKey(p, i) {
    for (const r of p.renderers || []) {
      const src = r.data_source;
      if (src != null && src.name) return "src:" + src.name;
    }
    return "plot:" + i;  // figures without a named source: their order on the page
  }
  function loadZoom() {
    try { return JSON.parse(sessionStorage.getItem(ZOOM_KEY) || "{}") || {}; } catch (e) { return {}; }
  }
  function saveZoom(z) {
    try { sessionStorage.setItem(ZOOM_KEY, JSON.stringify(z)); } catch (e) { /* full or off */ }
  }
  function finite(a) { return Array.isArray(a) && a.length === 2 && a.every((v) => typeof v === "number" && isFinite(v)); }
  function zoomed(rng) {
    // DataRange1d: the viewer's zoom/pan (or ours) sets have_updated_interactively and
    // Reset clears it; Range1d: different from where it started.
    if ("have_updated_interactively" in rng) return rng.have_updated_interactively === true;
    if (has(rng, "reset_start")) {
      const s0 = rng.reset_start != null ? rng.reset_start : rng._initial_start;
      const e0 = rng.reset_end != null ? rng.reset_end : rng._initial_end;
      return s0 != null && e0 != null && (rng.start !== s0 || rng.end !== e0);
    }
    return false;
  }
  function numeric(rng) { return typeof rng.start === "number" && typeof rng.end === "number"; }
  const adopted = new WeakMap();  // plot -> {key, tries}: restored (or nothing to restore)
  function zoomTick() {
    const saved = loadZoom();
    let changed = false;
    let i = 0;
    for (const m of models()) {
      if (!isPlot(m)) continue;
      const key = plotKey(m, i++);
      const xr = m.x_range, yr = m.y_range;
      if (xr == null || yr == null || !numeric(xr) || !numeric(yr)) continue;  // categorical: not kept
      let a = adopted.get(m);
      if (a == null) { a = {key: key, tries: 0, done: false}; adopted.set(m, a); }
      if (!a.done) {
        const z = saved[key];
        if (z == null || !finite(z.x) || !finite(z.y)) { a.done = true; continue; }
        // an auto-range takes an explicit start/end only once it has measured the data
        const ready = !(xr._plot_bounds instanceof Map) || xr._plot_bounds.size > 0;
        if (!ready && a.tries++ < 20) continue;
        set(xr, {start: z.x[0], end: z.x[1]});
        set(yr, {start: z.y[0], end: z.y[1]});
        if ("have_updated_interactively" in xr) xr.have_updated_interactively = true;
        if ("have_updated_interactively" in yr) yr.have_updated_interactively = true;
        a.done = true;
        root.dataset.zoomRestored = String((+root.dataset.zoomRestored || 0) + 1);
        continue;
      }
      if (zoomed(xr) || zoomed(yr)) {
        const z = {x: [xr.start, xr.end], y: [yr.start, yr.end]};
        const old = saved[key];
        if (old == null || JSON.stringify(old) !== JSON.stringify(z)) { saved[key] = z; changed = true; }
      } else if (saved[key] != null) {
        delete saved[key];  // reset by the viewer
        changed = true;
      }
    }
    if (changed) saveZoom(saved);
  }

  // --- CSV download ------------------------------------------------------------------------
  const menu = document.getElementById("fleet-csv");
  function sources() {
    const out = new Map();
    for (const m of models()) {
      if (String(m.type).endsWith("ColumnDataSource") && m.name && !out.has(m.name)) out.set(m.name, m);
    }
    return out;
  }
  function datetimeColumns(src) {
    // columns drawn on a datetime x axis: ISO text in the CSV, not epoch milliseconds
    const cols = new Set();
    for (const m of models()) {
      if (!isPlot(m)) continue;
      const axes = [...(m.below || []), ...(m.above || [])];
      if (!axes.some((a) => String(a.type).endsWith("DatetimeAxis"))) continue;
      for (const r of m.renderers || []) {
        if (r.data_source !== src || r.glyph == null) continue;
        for (const p of ["x", "x0", "x1"]) {
          const spec = r.glyph[p];
          if (spec != null && typeof spec.field === "string") cols.add(spec.field);
        }
      }
    }
    return cols;
  }
  function cell(v, iso) {
    if (v == null || (typeof v === "number" && !isFinite(v))) return "";
    if (iso && typeof v === "number") return new Date(v).toISOString();
    let s = String(v);
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;  // no spreadsheet formulas
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csv(src) {
    const data = src.data instanceof Map ? src.data : new Map(Object.entries(src.data || {}));
    const names = [...data.keys()];
    const iso = datetimeColumns(src);
    const n = names.length ? data.get(names[0]).length : 0;
    const lines = [names.map((c) => cell(c, false)).join(",")];
    for (let i = 0; i < n; i++) lines.push(names.map((c) => cell(data.get(c)[i], iso.has(c))).join(","));
    return lines.join("\r\n") + "\r\n";
  }
  function download(name) {
    const src = sources().get(name);
    if (src == null) return;
    const blob = new Blob([csv(src)], {type: "text/csv;charset=utf-8"});
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = (dashboard + "-" + name).replace(/[^A-Za-z0-9_.-]+/g, "_") + ".csv";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
  function fillMenu() {
    if (menu == null) return;
    const names = [...sources().keys()].sort();
    const have = [...menu.options].slice(1).map((o) => o.value);
    if (names.join("\n") === have.join("\n")) return;
    while (menu.options.length > 1) menu.remove(1);
    for (const n of names) {
      const o = document.createElement("option");
      o.value = n;
      o.textContent = n;
      menu.appendChild(o);
    }
    menu.hidden = names.length === 0;
  }
  if (menu != null) {
    menu.addEventListener("change", () => {
      if (menu.value) download(menu.value);
      menu.value = "";
    });
  }
  w.__fleet_csv = (name) => { const s = sources().get(name); return s == null ? null : csv(s); };

  // --- one timer ---------------------------------------------------------------------------
  function tick() {
    try {
      if (dark) for (const m of models()) theme(m);
      zoomTick();
      fillMenu();
    } catch (e) {
      if (w.console) w.console.warn("fleet viewer:", e);
    }
  }
  setInterval(tick, 250);
})();
