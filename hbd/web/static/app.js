// hbd web page: the sweeps, each sweep's brackets and rungs, live learning curves.
//
// Plain JavaScript and SVG, no build step and nothing from elsewhere. A sweep's
// picture is built from its event stream (GET v1/sweeps/{id}/events, Server-Sent
// Events): the stream replays the sweep's whole log and then follows it live, so
// the page shows exactly what the daemon decided, as it decides. The sweep's plan
// (brackets, rungs, resources) comes from GET v1/sweeps/{id}. Everything from the
// daemon is inserted as text (textContent), never as HTML.
"use strict";

// Bounds on what the page keeps, so a long sweep cannot exhaust the tab.
const MAX_POINTS_PER_CURVE = 1000; // beyond this a curve keeps every other point
const MAX_CURVES = 400; // curves drawn: the best ones and every running one
const RECENT_ROWS = 12; // rows of the "latest results" table
const SWEEPS_POLL_MS = 5000; // how often the sweep list is refreshed
const DETAIL_MIN_INTERVAL_MS = 1000; // at most one status request a second
const RENDER_MIN_INTERVAL_MS = 200; // a replay of thousands of events renders a few times
const STREAM_RETRY_MS = 5000; // after the daemon refused the event stream

const EVENT_TYPES = [
  "sweep.submitted", "sweep.stop_requested", "sweep.early_stopped", "sweep.finished",
  "bracket.started", "rung.started", "rung.decided",
  "trial.scheduled", "trial.dispatched", "trial.running", "trial.metrics",
  "trial.succeeded", "trial.failed", "trial.lost", "trial.cancel_requested", "trial.cancelled",
];
const ENDED = new Set(["succeeded", "failed", "cancelled"]);
const BRACKET_COLORS = ["#2563eb", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#dc2626", "#475569"];
const STATUS_FILL = {
  scheduled: "#e2e8f0", dispatched: "#bfdbfe", running: "#3b82f6",
  succeeded: "#22a06b", failed: "#e5484d", cancelled: "#a1a1aa",
};
const SVG_NS = "http://www.w3.org/2000/svg";

let sweeps = [];
let current = null; // the sweep on screen: see newModel()

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

function fmtConfig(config) {
  return Object.entries(config || {}).map(([k, v]) => `${k}=${fmt(v)}`).join("  ");
}

function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (r.status === 401) { location.reload(); throw new Error("session expired"); }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function setConn(text, cls) {
  const el = document.getElementById("conn");
  el.textContent = text;
  el.className = "conn " + (cls || "");
}

// ---------------------------------------------------------------- sweeps list

async function loadSweeps() {
  try {
    sweeps = await api("v1/sweeps");
  } catch (e) {
    setConn("daemon unreachable", "down");
    return;
  }
  sweeps.sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  renderNav();
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (!current && sweeps.length) {
    const pick = sweeps.find((x) => x.id === wanted)
      || sweeps.find((x) => x.status === "running") || sweeps[0];
    selectSweep(pick.id);
  }
}

function renderNav() {
  const nav = document.getElementById("sweeps");
  if (!sweeps.length) { nav.replaceChildren(h("p", { class: "muted" }, "no sweeps")); return; }
  nav.replaceChildren(...sweeps.map((sw) => h("a", {
    href: "#" + encodeURIComponent(sw.id),
    class: current && current.id === sw.id ? "current" : "",
    "data-sweep-id": sw.id,
  },
  h("span", { class: "id" }, sw.id), " ", h("span", { class: "pill " + sw.status }, sw.status),
  h("span", { class: "meta" },
    (sw.name ? sw.name + " · " : "") + (sw.best_metric === null || sw.best_metric === undefined
      ? `${sw.metric.optimization} ${sw.metric.name}` : `best ${sw.metric.name} ${fmt(sw.best_metric)}`)))));
}

window.addEventListener("hashchange", () => {
  const id = decodeURIComponent(location.hash.slice(1));
  if (id && (!current || current.id !== id)) selectSweep(id);
});

// ---------------------------------------------------------------- one sweep's model

function newModel(id) {
  return {
    id,
    detail: null, // GET v1/sweeps/{id}: plan, metric, status
    trials: new Map(), // trial id -> {id, iteration, bracket, rung, index, config, resource, parent, status, metric, points, order}
    slots: new Map(), // "it/b/r/index" -> trial id of the latest attempt
    decided: new Map(), // "it/b/r" -> {promoted: Set, ranking: [ids], cutoff}
    recent: [], // trial ids in the order they ended (newest last)
    seen: new Set(), // recent rows already shown (to flash the new ones)
    lastSeq: 0,
    selected: null,
    es: null,
    order: 0,
    status: null,
  };
}

async function selectSweep(id) {
  if (current && current.es) current.es.close();
  const model = newModel(id);
  current = model;
  if (decodeURIComponent(location.hash.slice(1)) !== id) history.replaceState(null, "", "#" + encodeURIComponent(id));
  renderNav();
  try {
    model.detail = await api("v1/sweeps/" + encodeURIComponent(id));
  } catch (e) {
    document.getElementById("sweep").replaceChildren(h("p", { class: "muted" }, `cannot load sweep ${id}: ${e.message}`));
    return;
  }
  if (current === model) openStream(model);
}

// The sweep's status, counts and best as the daemon sees them: asked again after
// trials end and rungs are decided, at most once per DETAIL_MIN_INTERVAL_MS.
let detailTimer = null;
let detailAt = 0;
function refreshDetail() {
  const model = current;
  if (!model || detailTimer) return;
  const wait = Math.max(0, detailAt + DETAIL_MIN_INTERVAL_MS - Date.now());
  detailTimer = setTimeout(async () => {
    detailTimer = null;
    detailAt = Date.now();
    try {
      const d = await api("v1/sweeps/" + encodeURIComponent(model.id));
      if (current === model) { model.detail = d; scheduleRender(); }
    } catch (e) { /* the stream's picture still renders; the next event asks again */ }
  }, wait);
}

function openStream(model) {
  const es = new EventSource("v1/sweeps/" + encodeURIComponent(model.id) + "/events");
  model.es = es;
  es.onopen = () => setConn("live", "live");
  es.onerror = () => {
    if (current !== model) return;
    if (es.readyState !== EventSource.CLOSED) { setConn("reconnecting…", "down"); return; }
    if (model.status) { setConn("sweep " + model.status, ""); return; }
    // Refused (the daemon restarting, or too many streams): EventSource gives up
    // on a refusal, so start this sweep over after a pause (a fresh replay).
    setConn("stream refused; retrying", "down");
    setTimeout(() => { if (current === model) selectSweep(model.id); }, STREAM_RETRY_MS);
  };
  for (const type of EVENT_TYPES) {
    es.addEventListener(type, (msg) => {
      if (current !== model) return;
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      apply(model, ev);
      scheduleRender();
    });
  }
}

function apply(m, ev) {
  m.lastSeq = Math.max(m.lastSeq, ev.seq);
  const p = ev.payload || {};
  const t = ev.trial_id ? m.trials.get(ev.trial_id) : null;
  switch (ev.type) {
    case "trial.scheduled": {
      const trial = {
        id: p.trial_id, iteration: p.iteration || 0, bracket: p.bracket, rung: p.rung, index: p.index, config: p.config,
        resource: p.resource, parent: p.parent, status: "scheduled", metric: null, points: [],
        order: m.order++,
      };
      m.trials.set(trial.id, trial);
      m.slots.set(`${rungKey(trial)}/${trial.index}`, trial.id);
      break;
    }
    case "trial.dispatched": if (t) t.status = "dispatched"; break;
    case "trial.running": if (t) t.status = "running"; break;
    case "trial.metrics": {
      if (!t || !m.detail) break;
      const v = (p.metrics || {})[m.detail.metric.name];
      if (typeof v !== "number") break;
      const step = typeof p.metrics.step === "number" ? p.metrics.step : p.seq;
      addPoint(t, step, v);
      break;
    }
    case "trial.succeeded":
    case "trial.failed":
    case "trial.cancelled": {
      if (!t) break;
      t.status = ev.type.slice("trial.".length);
      if (ev.type === "trial.succeeded") {
        t.metric = typeof p.metric === "number" ? p.metric : null;
        if (!t.points.length && t.metric !== null) addPoint(t, t.resource, t.metric);
      }
      if (ev.type === "trial.failed") t.reason = p.reason;
      m.recent.push(t.id);
      if (m.recent.length > RECENT_ROWS * 4) m.recent.splice(0, m.recent.length - RECENT_ROWS);
      refreshDetail();
      break;
    }
    case "rung.decided":
      m.decided.set(rungKey(p), {
        promoted: new Set(p.promoted || []),
        ranking: (p.ranking || []).map((r) => r.trial_id),
        cutoff: p.cutoff,
      });
      refreshDetail();
      break;
    case "sweep.finished":
      m.status = p.status;
      if (m.es) m.es.close();
      setConn("sweep " + p.status, "");
      refreshDetail();
      loadSweeps();
      break;
    default:
      break;
  }
}

function addPoint(t, x, y) {
  t.points.push([x, y]);
  if (t.points.length > MAX_POINTS_PER_CURVE) t.points = t.points.filter((_, i) => i % 2 === 0);
}

// ---------------------------------------------------------------- rendering

let renderQueued = false;
let renderedAt = 0;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const wait = Math.max(0, renderedAt + RENDER_MIN_INTERVAL_MS - Date.now());
  setTimeout(() => requestAnimationFrame(() => {
    renderQueued = false;
    renderedAt = Date.now();
    render();
  }), wait);
}

// A rung is (iteration, bracket, rung): every Hyperband iteration repeats the brackets.
function rungKey(x) { return `${x.iteration || 0}/${x.bracket}/${x.rung}`; }

function sign(m) { return m.detail && m.detail.metric.optimization === "maximize" ? -1 : 1; }

function latestTrials(m) {
  return [...m.slots.values()].map((id) => m.trials.get(id));
}

// The best run at the highest resource reached (the sweep's rule, as the daemon
// reports it): a low-resource run's optimistic metric is not the winner.
function bestTrial(m) {
  let best = null;
  const k = sign(m);
  for (const t of m.trials.values()) {
    if (t.status !== "succeeded" || t.metric === null) continue;
    const better = !best || t.resource > best.resource
      || (t.resource === best.resource && k * t.metric < k * best.metric); // ties: the earlier trial
    if (better) best = t;
  }
  return best;
}

function render() {
  const m = current;
  const root = document.getElementById("sweep");
  if (!m || !m.detail) return;
  const best = bestTrial(m);
  root.replaceChildren(
    renderHead(m, best),
    h("div", { class: "grid" },
      h("div", { class: "card wide", id: "brackets-card" },
        h("h3", {}, "Brackets and rungs ", h("small", {}, "each bar a trial, best first once its rung is decided; promoted bars go on to the next rung")),
        renderBrackets(m, best), legend()),
      h("div", { class: "card", id: "curves-card" },
        h("h3", {}, "Learning curves ", h("small", {}, `${m.detail.metric.name} by step, live`)),
        renderCurves(m, best), bracketLegend(m)),
      h("div", { class: "card best", id: "best-card" }, renderBest(m, best)),
      h("div", { class: "card wide", id: "recent-card" },
        h("h3", {}, "Latest results"), renderRecent(m))));
  sizeBars();
  sizeSwatches();
}

function renderHead(m, best) {
  const d = m.detail;
  const trials = latestTrials(m);
  const all = [...m.trials.values()];
  const count = (st) => all.filter((t) => st.includes(t.status)).length;
  const ended = all.filter((t) => ENDED.has(t.status)).length;
  const status = m.status || d.status;
  document.title = `hbd · ${d.id} ${status}`;
  const pct = d.planned_trial_runs ? clamp(100 * trials.filter((t) => ENDED.has(t.status)).length / d.planned_trial_runs, 0, 100) : 0;
  const stat = (value, label, extra) => h("div", { class: "stat" }, h("b", {}, value), h("span", {}, label), extra || null);
  return h("div", { class: "head" },
    h("h2", {}, h("span", { class: "mono", id: "sweep-id" }, d.id), h("span", { class: "pill " + status, id: "sweep-status" }, status),
      d.name ? h("span", { class: "muted" }, d.name) : null),
    h("p", { class: "reason" }, d.reason || `${d.metric.optimization} ${d.metric.name} · ${d.resource.name} up to ${fmt(d.max_iterations)} · eta ${fmt(d.eta)} · seed ${d.seed}`),
    h("div", { class: "stats" },
      stat(`${ended} / ${d.planned_trial_runs}`, "trial runs ended",
        h("div", { class: "progress" }, h("i", { style: null, "data-pct": pct.toFixed(1) }))),
      stat(String(count(["running", "dispatched"])), "running"),
      stat(String(count(["scheduled"])), "queued"),
      stat(String(count(["failed"])), "failed"),
      stat(best ? fmt(best.metric) : "–", `best ${d.metric.name}`)));
}

// The progress bar's width is set here, not in a style attribute: the page's
// Content-Security-Policy allows no inline styles.
function sizeBars() {
  for (const bar of document.querySelectorAll(".progress i[data-pct]")) bar.style.width = bar.dataset.pct + "%";
}

const TILE_W = 74;
const GAP_X = 64;
const LEFT = 4;
const MAX_COLUMN_H = 170; // a rung of many trials gets thinner bars, not a taller picture
const HEADER_H = 32;
const TEXT_MIN_TILE_H = 12; // bars at least this tall show their metric

function rungOrder(m, key, trials) {
  const decided = m.decided.get(key);
  const k = sign(m);
  if (decided) {
    const rank = new Map(decided.ranking.map((id, i) => [id, i]));
    return trials.sort((x, y) => (rank.get(x.id) ?? 1e9) - (rank.get(y.id) ?? 1e9) || x.index - y.index);
  }
  const group = (t) => (t.status === "succeeded" && t.metric !== null ? 0 : t.status === "running" ? 1 : t.status === "dispatched" ? 2 : t.status === "scheduled" ? 3 : 4);
  return trials.sort((x, y) => group(x) - group(y)
    || (group(x) === 0 ? k * (x.metric - y.metric) : 0) || x.index - y.index);
}

// One picture per bracket, side by side as space allows: each rung a column of
// bars (one per trial, best first once the rung is decided), lines from each
// promoted trial to its run at the next rung, and the rung's cutoff.
function renderBrackets(m, best) {
  const byRung = new Map();
  for (const t of latestTrials(m)) {
    const key = rungKey(t);
    if (!byRung.has(key)) byRung.set(key, []);
    byRung.get(key).push(t);
  }
  return h("div", { id: "brackets", class: "brackets" },
    ...m.detail.brackets.map((b) => renderBracket(m, best, b, byRung)));
}

function renderBracket(m, best, b, byRung) {
  const n0 = b.rungs.length ? b.rungs[0].planned : 1;
  const tileH = clamp(Math.floor(MAX_COLUMN_H / n0), 2, 16);
  const width = LEFT + b.rungs.length * (TILE_W + GAP_X) - GAP_X + 60;
  const height = HEADER_H + n0 * tileH + 4;
  const body = s("g", {});
  const links = s("g", {});
  const pos = new Map(); // trial id -> [x, y]
  b.rungs.forEach((r, ri) => {
    const x = LEFT + ri * (TILE_W + GAP_X);
    const top = HEADER_H;
    const key = rungKey({ iteration: b.iteration, bracket: b.bracket, rung: r.rung });
    const trials = rungOrder(m, key, byRung.get(key) || []);
    const decided = m.decided.get(key);
    const done = trials.filter((t) => ENDED.has(t.status)).length;
    body.append(s("text", { x, y: 12, class: "label" }, `rung ${r.rung}` + (decided && decided.promoted.size ? ` · ${decided.promoted.size} promoted` : "")));
    body.append(s("text", { x, y: 26 }, `${m.detail.resource.name}=${fmt(r.resource)} · ${done}/${r.planned}`));
    const n = Math.max(r.planned, trials.length);
    for (let i = 0; i < n; i++) {
      const ty = top + i * tileH;
      const hgt = Math.max(1, tileH - 1);
      const t = trials[i];
      if (!t) {
        body.append(s("rect", { x, y: ty, width: TILE_W, height: hgt, fill: "none", stroke: "#cbd5e1", "stroke-dasharray": "2 2", class: "slot" }));
        continue;
      }
      const promoted = decided && decided.promoted.has(t.id);
      const stopped = decided && !promoted && decided.promoted.size > 0 && t.status === "succeeded";
      const cls = "tile " + t.status + (promoted ? " promoted" : "") + (m.selected === t.id ? " selected" : "");
      const fill = stopped ? "#a7dcc3" : STATUS_FILL[t.status] || "#e2e8f0";
      const metricText = t.metric === null ? "" : ` · ${m.detail.metric.name}=${fmt(t.metric)}`;
      body.append(s("rect", {
        x, y: ty, width: TILE_W, height: hgt, fill, class: cls,
        "data-trial": t.id, "data-status": t.status,
        onclick: () => { m.selected = m.selected === t.id ? null : t.id; scheduleRender(); },
      }, s("title", {}, `${t.id} · ${t.status}${metricText}${promoted ? " · promoted" : ""}\n${fmtConfig(t.config)}${t.reason ? "\n" + t.reason : ""}`)));
      if (tileH >= TEXT_MIN_TILE_H && t.metric !== null) {
        body.append(s("text", { x: x + 4, y: ty + hgt / 2 + 4, class: stopped ? "in dark" : "in" }, fmt(t.metric)));
      }
      if (best && best.id === t.id) body.append(s("text", { x: x + TILE_W + 3, y: ty + hgt / 2 + 4, class: "star" }, "★ best"));
      pos.set(t.id, [x, ty + hgt / 2]);
    }
    if (decided && decided.promoted.size && decided.promoted.size < trials.length) {
      const cy = top + decided.promoted.size * tileH - 0.5;
      body.append(s("line", { x1: x - 3, x2: x + TILE_W + 3, y1: cy, y2: cy, class: "cutoff" }));
      if (decided.cutoff !== null && decided.cutoff !== undefined) {
        body.append(s("text", { x: x + TILE_W + 5, y: cy + 11, class: "cut" }, `cutoff ${fmt(decided.cutoff)}`));
      }
    }
  });
  for (const t of m.trials.values()) {
    if (t.bracket !== b.bracket || (t.iteration || 0) !== (b.iteration || 0) || !t.parent || !pos.has(t.id) || !pos.has(t.parent)) continue;
    const [px, py] = pos.get(t.parent);
    const [cx, cy] = pos.get(t.id);
    const mid = (px + TILE_W + cx) / 2;
    links.append(s("path", { d: `M${px + TILE_W},${py} C${mid},${py} ${mid},${cy} ${cx},${cy}`, class: "link" }));
  }
  // Iterations count from 0, as the API, hbd status and the trial ids (-i1-) do.
  const name = (m.detail.iterations > 1 ? `iteration ${b.iteration || 0} · ` : "") + `bracket s=${b.bracket}`;
  return h("figure", { class: "bracket", "data-bracket": b.bracket, "data-iteration": b.iteration || 0 },
    h("figcaption", {}, h("b", {}, name), ` · ${b.rungs.reduce((a, r) => a + r.planned, 0)} runs`),
    s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": `bracket ${b.bracket}` }, links, body));
}

function legend() {
  const item = (color, text, border) => h("span", {}, h("i", { class: "sw", "data-color": color, "data-border": border || "" }), text);
  return h("div", { class: "legend" },
    item(STATUS_FILL.scheduled, "queued"), item(STATUS_FILL.running, "running"),
    item(STATUS_FILL.succeeded, "succeeded / promoted", "#0b5d3b"), item("#a7dcc3", "not promoted"),
    item(STATUS_FILL.failed, "failed"), item(STATUS_FILL.cancelled, "cancelled"),
    h("span", {}, "- - cutoff: the last promoted metric"), h("span", {}, "★ best"));
}

function bracketLegend(m) {
  return h("div", { class: "legend" }, ...m.detail.brackets.filter((b) => !b.iteration).map((b) =>
    h("span", {}, h("i", { class: "sw", "data-color": BRACKET_COLORS[b.bracket % BRACKET_COLORS.length] }), `bracket s=${b.bracket}`)),
  h("span", {}, "— best trial (black)"));
}

function sizeSwatches() {
  for (const sw of document.querySelectorAll(".legend i.sw")) {
    sw.style.background = sw.dataset.color;
    if (sw.dataset.border) sw.style.outline = `1.5px solid ${sw.dataset.border}`;
  }
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((v) => v >= step0) || mag * 10;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function renderCurves(m, best) {
  const W = 560, H = 270, L = 54, R = 12, T = 10, B = 30;
  const k = sign(m);
  let curves = [...m.trials.values()].filter((t) => t.points.length);
  if (curves.length > MAX_CURVES) {
    const last = (t) => k * t.points[t.points.length - 1][1];
    const running = curves.filter((t) => !ENDED.has(t.status));
    const rest = curves.filter((t) => ENDED.has(t.status)).sort((a, b) => last(a) - last(b));
    curves = [...running, ...rest].slice(0, MAX_CURVES);
  }
  const svg = s("svg", { id: "curves", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "learning curves" });
  if (!curves.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no metrics reported yet"));
    return svg;
  }
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const t of curves) for (const [x, y] of t.points) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const logY = y0 > 0 && y1 / y0 > 50;
  const fy = (v) => (logY ? Math.log10(v) : v);
  const [ly0, ly1] = [fy(y0), fy(y1)];
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => T + (1 - (fy(y) - ly0) / (ly1 - ly0)) * (H - T - B);
  const axis = s("g", { class: "axis" });
  axis.append(s("line", { x1: L, x2: L, y1: T, y2: H - B }), s("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }));
  for (const v of niceTicks(x0, x1, 6)) {
    axis.append(s("line", { x1: px(v), x2: px(v), y1: H - B, y2: H - B + 4 }));
    axis.append(s("text", { x: px(v), y: H - B + 16, "text-anchor": "middle" }, fmt(v)));
  }
  const yTicks = logY
    ? niceTicks(ly0, ly1, 5).filter((v) => Number.isInteger(v)).map((v) => 10 ** v)
    : niceTicks(y0, y1, 5);
  for (const v of yTicks) {
    axis.append(s("line", { x1: L - 4, x2: W - R, y1: py(v), y2: py(v), opacity: 0.35 }));
    axis.append(s("text", { x: L - 7, y: py(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  axis.append(s("text", { x: W - R, y: H - 3, "text-anchor": "end" }, "step"));
  svg.append(axis);
  const ordered = curves.filter((t) => !best || t.id !== best.id).concat(best && best.points.length ? [best] : []);
  for (const t of ordered) {
    const color = BRACKET_COLORS[t.bracket % BRACKET_COLORS.length];
    const d = t.points.map(([x, y], i) => `${i ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
    const cls = "curve" + (best && best.id === t.id ? " best" : "") + (m.selected === t.id ? " selected" : "");
    const title = s("title", {}, `${t.id} · ${t.status} · ${m.detail.metric.name}=${fmt(t.points[t.points.length - 1][1])}\n${fmtConfig(t.config)}`);
    svg.append(s("path", { d, stroke: color, class: cls, "data-trial": t.id }, title));
    const [lx, lyv] = t.points[t.points.length - 1];
    svg.append(s("circle", { cx: px(lx), cy: py(lyv), r: best && best.id === t.id ? 3.5 : 2, fill: best && best.id === t.id ? "#111827" : color, class: "end" }));
  }
  return svg;
}

function trialRows(m, t) {
  const d = m.detail;
  return [
    ["trial", t.id], ["status", t.status], [d.metric.name, fmt(t.metric)], [d.resource.name, fmt(t.resource)],
    ["bracket, rung", `s=${t.bracket}, rung ${t.rung}`],
    ...(t.parent ? [["promoted from", t.parent]] : []),
    ...(t.reason ? [["reason", t.reason]] : []),
    ...Object.entries(t.config || {}).map(([k, v]) => [k, fmt(v)]),
  ];
}

function details(id, rows) {
  return h("dl", { id }, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// The best trial, and below it the trial last clicked (a bar, a curve's row).
function renderBest(m, best) {
  const d = m.detail;
  const out = [h("h3", {}, "Best trial ", h("small", {}, `${d.metric.optimization} ${d.metric.name}`))];
  out.push(best ? details("best", trialRows(m, best).filter(([k]) => k !== "status"))
    : h("p", { class: "muted" }, "no trial has reported the metric yet"));
  const picked = m.selected && m.trials.get(m.selected);
  if (picked) {
    out.push(h("h3", { class: "picked" }, "Selected trial ",
      h("button", { type: "button", class: "clear", onclick: () => { m.selected = null; scheduleRender(); } }, "clear")));
    out.push(details("selected", trialRows(m, picked)));
  } else {
    out.push(h("p", { class: "muted hint" }, "Click a bar or a result to see its trial here."));
  }
  return out;
}

function renderRecent(m) {
  const ids = m.recent.slice(-RECENT_ROWS).reverse();
  if (!ids.length) return h("p", { class: "muted" }, "no trial has ended yet");
  const rows = ids.map((id) => {
    const t = m.trials.get(id);
    const fresh = !m.seen.has(id);
    m.seen.add(id);
    return h("tr", { "data-trial-id": id, class: fresh ? "new" : "", onclick: () => { m.selected = id; scheduleRender(); } },
      h("td", { class: "mono" }, id), h("td", {}, `s=${t.bracket}`), h("td", {}, t.rung),
      h("td", { class: "num" }, fmt(t.resource)), h("td", {}, h("span", { class: "pill " + t.status }, t.status)),
      h("td", { class: "num" }, fmt(t.metric)), h("td", { class: "mono" }, fmtConfig(t.config)));
  });
  return h("table", { id: "recent" },
    h("thead", {}, h("tr", {}, ...["trial", "bracket", "rung", m.detail.resource.name, "status", m.detail.metric.name, "config"].map((c) => h("th", {}, c)))),
    h("tbody", {}, ...rows));
}

// ---------------------------------------------------------------- start

loadSweeps();
setInterval(loadSweeps, SWEEPS_POLL_MS);
