// Studies: the runs with their status, and a form to start one with a preset.

import { call, get } from "../api.js";
import { card, el, empty, errorBox, seconds, table, when } from "../ui.js";

function duration(s) {
  return s.finished_at && s.started_at ? seconds(s.finished_at - s.started_at) : "–";
}

function progressOf(s) {
  const p = s.progress || {};
  return p.total ? `${p.done}/${p.total}${p.message ? ` ${p.message}` : ""}` : "–";
}

export async function render(view, { refresh }) {
  const data = await get("/v1/studies");
  const message = el("div", { id: "study-started" });
  const form = el(
    "form",
    { class: "filters", id: "study-form" },
    el("label", {}, "study ", el("select", { name: "name" }, data.available.map((n) => el("option", { value: n }, n)))),
    el(
      "label",
      {},
      "preset ",
      el("select", { name: "preset" }, ["quick", "full"].map((p) => el("option", { value: p }, p))),
    ),
    el("button", { type: "submit" }, "Start study"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    try {
      const made = await call("POST", `/v1/studies/${fields.get("name")}`, { preset: fields.get("preset") });
      location.hash = `#/study/${encodeURIComponent(made.id)}`;
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  });
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Studies"), form), message);
  view.append(
    card(
      null,
      data.data.length
        ? table(
            [
              { label: "Study", value: (s) => el("a", { href: `#/study/${encodeURIComponent(s.id)}` }, s.id) },
              { label: "Name", value: (s) => s.name },
              { label: "Preset", value: (s) => s.params.preset || "–" },
              { label: "Status", value: (s) => el("span", { class: `badge ${s.status}` }, s.status) },
              { label: "Progress", value: progressOf },
              { label: "Created", value: (s) => when(s.created_at) },
              { label: "Took", value: duration, class: "num" },
            ],
            data.data,
            { id: "studies-table" },
          )
        : empty("No studies yet — start one above, or from the command line:", "minions-gw study gp --preset quick --out runs/gp"),
    ),
  );
  if (data.data.some((s) => s.status === "queued" || s.status === "running")) {
    const timer = setTimeout(refresh, 3000);
    return () => clearTimeout(timer);
  }
  return undefined;
}
