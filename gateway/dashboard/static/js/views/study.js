// One study run: status, key metrics (the scalar ones as tiles, the rest as JSON), figures.

import { blobUrl, get } from "../api.js";
import { card, el, empty, num, seconds, stat, stats, when } from "../ui.js";

function scalar(value) {
  return typeof value === "number" || typeof value === "string" || typeof value === "boolean";
}

export async function render(view, { args, refresh }) {
  const id = args[0];
  const study = await get(`/v1/studies/${encodeURIComponent(id)}`);
  view.append(
    el(
      "div",
      { class: "view-head" },
      el("h1", {}, el("a", { href: "#/studies" }, "Studies"), " / ", `${study.name} ${id}`),
      el("span", { class: `badge ${study.status}`, id: "study-status" }, study.status),
    ),
    el(
      "p",
      { class: "muted" },
      `preset ${study.params.preset || "–"} · created ${when(study.created_at)}`,
      study.worker ? ` · on ${study.worker}` : "",
    ),
  );
  if (study.error) view.append(card("Error", el("pre", { class: "error" }, study.error)));
  const urls = [];
  if (study.result) {
    const metrics = study.result.metrics || {};
    const simple = Object.entries(metrics).filter(([, v]) => scalar(v));
    const nested = Object.entries(metrics).filter(([, v]) => !scalar(v));
    view.append(
      card(
        "Key metrics",
        stats(
          ...simple.map(([name, v]) => stat(name, typeof v === "number" ? (Number.isInteger(v) ? String(v) : num(v, 4)) : String(v), `study-${name}`)),
          stat("Run time", seconds(study.result.seconds), "study-seconds"),
          stat("Device", study.result.device_name || "–", "study-device"),
        ),
        nested.map(([name, v]) => el("details", {}, el("summary", {}, name), el("pre", { class: "json" }, JSON.stringify(v, null, 2)))),
      ),
    );
    const figures = study.result.figures || [];
    const box = el("div", { class: "figures" });
    view.append(card("Figures", figures.length ? box : empty("This study saved no figures.")));
    for (const name of figures) {
      const url = await blobUrl(`/v1/studies/${encodeURIComponent(id)}/figures/${encodeURIComponent(name)}`);
      urls.push(url);
      box.append(el("figure", {}, el("img", { src: url, alt: name }), el("figcaption", {}, name)));
    }
  } else if (study.status === "queued" || study.status === "running") {
    const p = study.progress || {};
    view.append(
      card(
        "Progress",
        el("progress", { max: p.total || 1, value: p.done || 0 }),
        el("p", {}, p.total ? `${p.done}/${p.total} ${p.message || ""}` : "waiting for a consumer"),
      ),
    );
    const timer = setTimeout(refresh, 2000);
    return () => clearTimeout(timer);
  }
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
