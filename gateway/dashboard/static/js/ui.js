// Small DOM helpers shared by the views: elements, number formats, stat tiles, tables, empty
// states and charts (Chart.js, vendored). Text always goes in as text, never as HTML: task
// answers and model outputs are untrusted.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function usd(value) {
  if (value === null || value === undefined) return "–";
  const abs = Math.abs(value);
  const digits = abs === 0 ? 2 : abs < 0.01 ? 6 : abs < 1 ? 4 : 2;
  return `$${value.toFixed(digits)}`;
}

export function count(value) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en-US");
}

export function pct(value) {
  if (value === null || value === undefined) return "–";
  return `${(value * 100).toFixed(1)}%`;
}

export function num(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits);
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

export function when(epochSeconds) {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function factor(value) {
  if (value === null || value === undefined) return "–";
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(1)}×`;
}

/** A labelled number; `metric` names it for tests and for people reading the markup. */
export function stat(label, value, metric, note = null) {
  return el(
    "div",
    { class: "stat", "data-metric": metric },
    el("div", { class: "stat-label" }, label),
    el("div", { class: "stat-value" }, value),
    note ? el("div", { class: "stat-note" }, note) : null,
  );
}

export function stats(...tiles) {
  return el("div", { class: "stats" }, ...tiles);
}

export function card(title, ...children) {
  return el("section", { class: "card" }, title ? el("h2", {}, title) : null, ...children);
}

/** An empty state that says what to do. */
export function empty(message, ...how) {
  return el("div", { class: "empty" }, el("p", {}, message), ...how.map((h) => el("pre", {}, h)));
}

/** A table from column specs [{label, value: row => text|Node, class?}] and rows. */
export function table(columns, rows, { id = null, rowAttrs = null } = {}) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.class }, c.label)));
  const body = rows.map((row) =>
    el(
      "tr",
      rowAttrs ? rowAttrs(row) : {},
      columns.map((c) => el("td", { class: c.class, "data-label": c.label }, c.value(row))),
    ),
  );
  return el("div", { class: "table-wrap" }, el("table", { id }, el("thead", {}, head), el("tbody", {}, body)));
}

export function errorBox(error) {
  return el("p", { class: "error", role: "alert" }, error.message || String(error));
}

// -- charts -------------------------------------------------------------------------------
const live = new Set();
let pending = [];
export const PALETTE = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#dc2626", "#ca8a04", "#4b5563"];

/** A Chart.js chart in a fixed-height box; drawn by mountCharts once the view is in the
 * document (Chart.js measures its canvas), destroyed when the view changes. */
export function chart(id, config, height = 260) {
  const canvas = el("canvas", { id, role: "img", "aria-label": id });
  const box = el("div", { class: "chart", style: `height:${height}px` }, canvas);
  config.options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    ...config.options,
  };
  pending.push([canvas, config]);
  return box;
}

export function mountCharts() {
  for (const [canvas, config] of pending) {
    if (canvas.isConnected) live.add(new window.Chart(canvas, config));
  }
  pending = [];
}

export function destroyCharts() {
  for (const c of live) c.destroy();
  live.clear();
  pending = [];
}
