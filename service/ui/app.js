// plastic-brain dashboard: plain JavaScript and SVG, no build step. It reads the v1 API with the
// key typed in the header (kept in localStorage) and refreshes itself: every 1.5 s while one of
// the brain's jobs is queued or running, every 6 s otherwise.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const state = { key: localStorage.getItem("plastic-brain-key") || "", brain: null, timer: null };

// -- the API -----------------------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    const body = await response.json().catch(() => ({ detail: response.statusText }));
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.status === 204 ? null : response.json();
}

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// -- small DOM and SVG helpers ----------------------------------------------------------------------
function svgEl(tag, attrs, parent, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function tip(node, text) { svgEl("title", {}, node, text); return node; }

function reset(svg, width, height) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return svg;
}

function empty(svg, message) {
  reset(svg, 480, 120);
  svgEl("text", { x: 240, y: 64, "text-anchor": "middle", class: "empty" }, svg, message);
}

const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);

// Viridis, sampled: accuracy 0 is dark purple, 1 is yellow; readable for colour-blind people.
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
function colour(v) {
  const x = Math.max(0, Math.min(1, v)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]].map((h) => [1, 3, 5].map((j) => parseInt(h.slice(j, j + 2), 16)));
  const t = x - i;
  return `rgb(${a.map((c, k) => Math.round(c + (b[k] - c) * t)).join(",")})`;
}
const SERIES = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#f08c00", "#5c940d", "#862e9c", "#495057"];

// -- plots -------------------------------------------------------------------------------------
function heatmap(svg, rows, cols, values) {
  if (!rows.length || !cols.length) return empty(svg, "No evaluations yet: POST /v1/brains/{name}/evaluate, or run `brain demo`.");
  const left = 56, top = 26, cell = Math.max(22, Math.min(60, Math.floor(420 / cols.length)));
  const height = Math.max(22, Math.min(36, Math.floor(300 / rows.length)));
  reset(svg, left + cols.length * cell + 8, top + rows.length * height + 8);
  cols.forEach((c, j) => svgEl("text", { x: left + j * cell + cell / 2, y: top - 8, "text-anchor": "middle" }, svg, c));
  rows.forEach((r, i) => {
    svgEl("text", { x: left - 6, y: top + i * height + height / 2 + 4, "text-anchor": "end" }, svg, r);
    cols.forEach((c, j) => {
      const v = values[i][j];
      const x = left + j * cell, y = top + i * height;
      const rect = svgEl("rect", { x, y, width: cell - 1, height: height - 1, class: "cell",
        fill: v === null ? "#f1f3f5" : colour(v), "data-value": v === null ? "" : v }, svg);
      tip(rect, `${r}, ${c}: ${pct(v)}`);
      if (v !== null && cell >= 30) {
        svgEl("text", { x: x + cell / 2, y: y + height / 2 + 4, "text-anchor": "middle",
          style: `fill:${v > 0.6 ? "#1d2330" : "#fff"}` }, svg, (100 * v).toFixed(0));
      }
    });
  });
}

function lineChart(svg, xLabels, series, note = "No evaluations yet.") {
  if (!xLabels.length || !series.length) return empty(svg, note);
  const W = 520, H = 240, left = 40, right = 110, top = 12, bottom = 28;
  reset(svg, W, H);
  const plotW = W - left - right, plotH = H - top - bottom;
  const x = (i) => left + (xLabels.length === 1 ? plotW / 2 : (i * plotW) / (xLabels.length - 1));
  const y = (v) => top + plotH * (1 - v);
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svgEl("line", { x1: left, x2: left + plotW, y1: y(v), y2: y(v), class: "grid" }, svg);
    svgEl("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, svg, `${v * 100}`);
  }
  svgEl("line", { x1: left, x2: left, y1: top, y2: top + plotH, class: "axis" }, svg);
  const step = Math.ceil(xLabels.length / 12);
  xLabels.forEach((label, i) => {
    if (i % step === 0) svgEl("text", { x: x(i), y: H - 8, "text-anchor": "middle" }, svg, label);
  });
  series.forEach((s, k) => {
    const colourOf = SERIES[k % SERIES.length];
    const points = s.values.map((v, i) => (v === null ? null : [x(i), y(v), v, i])).filter(Boolean);
    if (!points.length) return;
    const line = svgEl("polyline", { points: points.map((p) => `${p[0]},${p[1]}`).join(" "), fill: "none",
      stroke: colourOf, "stroke-width": 2, class: "series", "data-name": s.name }, svg);
    tip(line, s.name);
    for (const [px, py, v, i] of points) tip(svgEl("circle", { cx: px, cy: py, r: 3, fill: colourOf }, svg), `${s.name}, ${xLabels[i]}: ${pct(v)}`);
    svgEl("rect", { x: W - right + 10, y: top + k * 16, width: 10, height: 10, fill: colourOf }, svg);
    svgEl("text", { x: W - right + 24, y: top + k * 16 + 9 }, svg, s.name.length > 13 ? `${s.name.slice(0, 12)}…` : s.name);
  });
}

function barChart(svg, labels, values, { format = (v) => `${v}`, colours = SERIES, note = "", floor = 1e-9 } = {}) {
  if (!labels.length) return empty(svg, note || "Nothing yet.");
  const W = 520, H = 240, left = 54, top = 14, bottom = 46;
  reset(svg, W, H);
  const max = Math.max(...values, floor), plotW = W - left - 10, plotH = H - top - bottom;
  const slot = plotW / labels.length, width = Math.max(2, Math.min(48, slot * 0.75));
  svgEl("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, class: "axis" }, svg);
  svgEl("text", { x: left - 6, y: top + 4, "text-anchor": "end" }, svg, format(max));
  labels.forEach((label, i) => {
    const h = (plotH * values[i]) / max, cx = left + slot * i + slot / 2;
    tip(svgEl("rect", { x: cx - width / 2, y: top + plotH - h, width, height: Math.max(h, 0.5), class: "bar",
      fill: colours[i % colours.length], "data-value": values[i] }, svg), `${label}: ${format(values[i])}`);
    if (labels.length <= 24) {
      const text = label.length > 10 ? `${label.slice(0, 9)}…` : label;
      svgEl("text", { x: cx, y: top + plotH + 14, "text-anchor": "middle", transform: labels.length > 8 ? `rotate(30 ${cx} ${top + plotH + 14})` : "" }, svg, text);
    }
  });
  if (note) svgEl("text", { x: W - 10, y: H - 4, "text-anchor": "end", class: "empty" }, svg, note);
}

// -- views ------------------------------------------------------------------------------------------
async function loadBrains() {
  const { brains } = await api("/v1/brains");
  const list = document.getElementById("brains");
  list.replaceChildren();
  for (const b of brains) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `#brain=${encodeURIComponent(b.name)}`;
    a.textContent = b.name;
    a.classList.toggle("active", b.name === state.brain);
    const small = document.createElement("small");
    small.textContent = `${b.strategy} · v${b.current_version ?? "–"} · ${b.samples_learned} learned`;
    a.appendChild(small);
    li.appendChild(a);
    list.appendChild(li);
  }
  document.getElementById("no-brains").hidden = brains.length > 0;
  return brains;
}

function row(cells, className) {
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    tr.appendChild(td);
  }
  return tr;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const seconds = (job) => (job.started_at && job.finished_at ? (new Date(job.finished_at) - new Date(job.started_at)) / 1000 : null);

function summary(brain, metrics, replay) {
  const items = [
    ["strategy", brain.strategy], ["input", `${brain.input.kind} [${brain.input.shape.join("×")}]`],
    ["labels", brain.labels.length], ["current version", brain.current_version ?? "–"],
    ["learned", brain.samples_learned], ["pending", brain.samples_pending],
    ["average accuracy", pct(metrics.average_accuracy)], ["forgetting", pct(metrics.forgetting)],
    ["replay", `${replay.size} / ${replay.capacity}`],
    ["prequential accuracy", metrics.prequential?.labelled ? `${pct(metrics.prequential.accuracy)} of ${metrics.prequential.labelled}` : "–"],
  ];
  const dl = document.getElementById("summary");
  dl.replaceChildren();
  for (const [k, v] of items) {
    const div = document.createElement("div");
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v; dd.dataset.field = k;
    div.append(dt, dd);
    dl.appendChild(div);
  }
}

function jobsTable(jobs) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const job of jobs.slice(0, 15)) {
    const bar = document.createElement("progress");
    bar.max = 1; bar.value = job.progress;
    const state = document.createElement("span");
    state.textContent = job.attempts > 1 ? `${job.state} (attempt ${job.attempts})` : job.state;
    state.className = `state-${job.state}`;
    state.title = (job.events || []).map((e) => `${when(e.at)}  ${e.event}  ${e.by}${e.attempt ? `  attempt ${e.attempt}` : ""}${e.error ? `  ${e.error}` : ""}`).join("\n");
    const result = job.error || (job.result ? Object.entries(job.result).map(([k, v]) => `${k} ${typeof v === "number" ? +v.toFixed(3) : v}`).join(", ") : "");
    body.appendChild(row([job.kind, state, bar, job.phase || "", when(job.created_at), result]));
  }
}

function versionsTable(name, versions) {
  const body = document.querySelector("#versions tbody");
  body.replaceChildren();
  for (const v of versions.versions) {
    const button = document.createElement("button");
    button.className = "secondary";
    button.textContent = v.current ? "current" : v.number < versions.current ? "roll back" : "promote";
    button.disabled = v.current;
    button.dataset.version = v.number;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/v1/brains/${encodeURIComponent(name)}/versions/${v.number}/promote`, { method: "POST" });
        setStatus(`version ${v.number} is current`);
      } catch (error) { setStatus(error.message, true); }
      refresh();
    });
    body.appendChild(row([`v${v.number}`, v.kind, v.samples_learned, v.tasks_seen, when(v.created_at), button], v.current ? "current" : ""));
  }
}

function driftTable(drift) {
  const body = document.querySelector("#drift tbody");
  body.replaceChildren();
  for (const e of drift.events.slice(0, 15)) {
    const st = e.statistic;
    const change = st.before === undefined ? "" : `${st.before.toFixed(3)} → ${st.after.toFixed(3)}`;
    body.appendChild(row([when(e.created_at), e.signal, e.detector, `v${e.version}`, change, e.sleep_job ? "sleep started" : ""]));
  }
  document.getElementById("no-drift").hidden = drift.events.length > 0;
  document.getElementById("no-drift").textContent =
    `No drift seen (watched: ${Object.entries(drift.watched).map(([k, v]) => `${k} ${v}`).join(", ")}).`;
}

function tasksTable(tasks) {
  const body = document.querySelector("#tasks tbody");
  body.replaceChildren();
  for (const t of tasks) body.appendChild(row([t.ordinal + 1, t.name, t.labels.join(", "), t.samples]));
}

async function showBrain(name) {
  const base = `/v1/brains/${encodeURIComponent(name)}`;
  const [brain, metrics, versions, tasks, jobs, sleeps, replay, drift] = await Promise.all([
    api(base), api(`${base}/metrics`), api(`${base}/versions`), api(`${base}/tasks`),
    api(`${base}/jobs?limit=30`), api(`${base}/jobs?kind=sleep&limit=100`), api(`${base}/replay`),
    api(`${base}/drift?limit=15`),
  ]);
  document.getElementById("pick").hidden = true;
  document.getElementById("brain").hidden = false;
  document.getElementById("brain-name").textContent = brain.name;
  summary(brain, metrics, replay);
  const rows = metrics.versions.map((v) => `v${v}`);
  heatmap(document.getElementById("matrix"), rows, metrics.tasks, metrics.accuracy_matrix);
  lineChart(document.getElementById("curves"), rows,
    metrics.tasks.map((t, j) => ({ name: t, values: metrics.accuracy_matrix.map((r) => r[j]) })));
  const preq = metrics.prequential ?? { over_time: [] };
  lineChart(document.getElementById("prequential"),
    preq.over_time.map((p) => new Date(p.at).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })),
    preq.over_time.length ? [{ name: "prequential", values: preq.over_time.map((p) => p.accuracy) }] : [],
    "No feedback yet: POST .../feedback labels served predictions.");
  barChart(document.getElementById("replay"), Object.keys(replay.per_label), Object.values(replay.per_label),
    { note: replay.size ? `${replay.size} of ${replay.capacity} (${replay.policy})` : "The replay buffer is empty." });
  const done = sleeps.jobs.filter((j) => j.state === "succeeded").reverse();
  barChart(document.getElementById("sleeps"), done.map((j) => `v${j.result?.version ?? "?"}`), done.map((j) => j.result?.seconds ?? seconds(j) ?? 0),
    { format: (v) => `${v < 0.1 ? v.toFixed(3) : v.toFixed(2)} s`, colours: ["#7048e8"], floor: 0.05,
      note: done.length ? `${done.length} sleeps, ${done.reduce((n, j) => n + (j.result?.replayed ?? 0), 0)} samples replayed` : "No sleep yet." });
  jobsTable(jobs.jobs);
  versionsTable(name, versions);
  tasksTable(tasks.tasks);
  driftTable(drift);
  return jobs.jobs.some((j) => j.state === "queued" || j.state === "running");
}

async function refresh() {
  clearTimeout(state.timer);
  let busy = false;
  try {
    const brains = await loadBrains();
    const wanted = new URLSearchParams(location.hash.slice(1)).get("brain");
    state.brain = wanted && brains.some((b) => b.name === wanted) ? wanted : null;
    if (state.brain) busy = await showBrain(state.brain);
    else { document.getElementById("brain").hidden = true; document.getElementById("pick").hidden = false; }
    document.body.dataset.loaded = String(Date.now());
    if (!document.getElementById("status").classList.contains("error")) setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    setStatus(error.message, true);
  }
  state.timer = setTimeout(() => { document.getElementById("status").classList.remove("error"); refresh(); }, busy ? 1500 : 6000);
}

document.getElementById("key").value = state.key;
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = document.getElementById("key").value.trim();
  localStorage.setItem("plastic-brain-key", state.key);
  refresh();
});
window.addEventListener("hashchange", refresh);
refresh();
