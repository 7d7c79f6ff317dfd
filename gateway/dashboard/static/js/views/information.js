// Information: how much of the documents each protocol and local model carries to the remote
// (I(X;Z) in bits, and bits per compression token), and how that relates to accuracy.

import { get } from "../api.js";
import { PALETTE, card, chart, count, el, empty, num, table } from "../ui.js";

export async function render(view) {
  const data = await get("/v1/admin/summary/information");
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Information")));
  if (!data.rows.length) {
    view.append(
      card(
        null,
        empty(
          "No mutual-information estimates yet. The gateway scores what crossed to the remote after a minion or minions task succeeds (MGW_MI_ENABLED=true), and bench runs score it too:",
          "minions-gw bench --dataset bench/dataset.jsonl --protocols minion,minions --mi --publish",
        ),
      ),
    );
    return;
  }
  const labels = data.rows.map((r) => `${r.protocol} · ${r.local_model}`);
  view.append(
    el(
      "div",
      { class: "grid" },
      card(
        "Mean I(X;Z), bits",
        chart("chart-mi-bits", {
          type: "bar",
          data: { labels, datasets: [{ label: "bits", data: data.rows.map((r) => r.mi_bits), backgroundColor: PALETTE[3] }] },
          options: { indexAxis: "y", scales: { x: { beginAtZero: true } } },
        }),
      ),
      card(
        "Bits per compression token",
        chart("chart-bits-per-token", {
          type: "bar",
          data: { labels, datasets: [{ label: "bits/token", data: data.rows.map((r) => r.bits_per_token), backgroundColor: PALETTE[4] }] },
          options: { indexAxis: "y", scales: { x: { beginAtZero: true } } },
        }),
      ),
    ),
    card(
      "By protocol and local model",
      table(
        [
          { label: "Protocol", value: (r) => r.protocol },
          { label: "Local model", value: (r) => r.local_model },
          { label: "Scored tasks", value: (r) => count(r.tasks), class: "num" },
          { label: "Mean bits", value: (r) => num(r.mi_bits), class: "num" },
          { label: "Bits / token", value: (r) => num(r.bits_per_token, 4), class: "num" },
        ],
        data.rows,
        { id: "information-table" },
      ),
    ),
  );
  const groups = [...new Set(data.points.map((p) => p.protocol))].sort();
  view.append(
    card(
      "I(X;Z) vs accuracy (graded tasks)",
      data.points.length
        ? chart(
            "chart-mi-accuracy",
            {
              type: "scatter",
              data: {
                datasets: groups.map((g, i) => ({
                  label: g,
                  data: data.points.filter((p) => p.protocol === g).map((p) => ({ x: p.mi_bits, y: p.f1 })),
                  backgroundColor: PALETTE[i % PALETTE.length],
                })),
              },
              options: {
                scales: {
                  x: { title: { display: true, text: "I(X;Z), bits" } },
                  y: { title: { display: true, text: "token F1" }, min: 0, max: 1 },
                },
              },
            },
            300,
          )
        : empty("No task has both an MI estimate and a reference answer yet."),
    ),
  );
}
