// Overview: is the gateway saving money, how busy is it, how fast, is the queue keeping up.

import { get } from "../api.js";
import { PALETTE, card, chart, count, el, empty, factor, seconds, stat, stats, usd } from "../ui.js";

function label(start, bucket) {
  const iso = new Date(start * 1000).toISOString();
  return bucket === "day" ? iso.slice(0, 10) : `${iso.slice(5, 10)} ${iso.slice(11, 13)}h`;
}

export async function render(view, { query }) {
  const bucket = query.get("bucket") === "day" ? "day" : "hour";
  const data = await get(`/v1/admin/summary/overview?bucket=${bucket}`);
  const t = data.totals;

  const switcher = el(
    "div",
    { class: "switch", role: "group", "aria-label": "bucket" },
    ["hour", "day"].map((b) =>
      el("a", { href: `#/overview?bucket=${b}`, class: b === bucket ? "active" : null }, `per ${b}`),
    ),
  );
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Overview"), switcher));

  if (!t.tasks) {
    view.append(
      card(
        null,
        empty(
          "No tasks yet — submit one with:",
          'curl -s localhost:8000/v1/tasks -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \\\n' +
            '  -d \'{"protocol": "minions", "question": "…", "documents": [{"text": "…"}]}\'',
        ),
      ),
    );
  }

  const saved = t.savings_factor;
  // Like with like: the spend of the tasks that have a remote-only baseline against it.
  view.append(
    t.baseline_tasks
      ? el(
          "p",
          { class: "headline", "data-metric": "headline" },
          "Spent ",
          el("strong", {}, usd(t.baseline_cost_usd)),
          " instead of ",
          el("strong", {}, usd(t.baseline_usd)),
          saved ? ` (${factor(saved)} less)` : "",
          el(
            "span",
            { class: "muted" },
            ` on ${count(t.baseline_tasks)} tasks, where remote-only would have sent ${count(t.baseline_remote_prompt_tokens)} prompt tokens`,
          ),
        )
      : el(
          "p",
          { class: "headline muted", "data-metric": "headline" },
          "No task has a remote-only baseline yet: savings appear as tasks settle.",
        ),
    stats(
      stat("Tasks", count(t.tasks), "tasks"),
      stat("Succeeded", count(t.succeeded), "succeeded"),
      stat("Failed", count(t.failed), "failed"),
      stat("Cancelled", count(t.cancelled), "cancelled"),
      stat("Remote spend", usd(t.cost_usd), "cost"),
      stat("Remote-only would cost", usd(t.baseline_usd), "baseline"),
      stat("Savings factor", factor(saved), "savings"),
      stat("p50 latency", seconds(data.latency.p50_s), "p50"),
      stat("p95 latency", seconds(data.latency.p95_s), "p95"),
      stat("Local tokens", count(t.local_tokens), "local-tokens"),
      stat("Remote tokens", count(t.remote_tokens), "remote-tokens"),
      stat("Queue depth", count(data.queue.tasks_waiting), "queue", `${count(data.queue.jobs_waiting)} local jobs waiting · ${count(data.queue.dead_lettered)} dead letters`),
    ),
  );

  const labels = data.series.map((s) => label(s.start, bucket));
  const protocols = [...new Set(data.series.flatMap((s) => Object.keys(s.by_protocol)))].sort();
  view.append(
    el(
      "div",
      { class: "grid" },
      card(
        `Tasks per ${bucket} by protocol`,
        chart("chart-tasks", {
          type: "bar",
          data: {
            labels,
            datasets: protocols.map((p, i) => ({
              label: p,
              data: data.series.map((s) => s.by_protocol[p] || 0),
              backgroundColor: PALETTE[i % PALETTE.length],
            })),
          },
          options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
        }),
      ),
      card(
        `Tasks per ${bucket} by status`,
        chart("chart-status", {
          type: "bar",
          data: {
            labels,
            datasets: ["succeeded", "failed", "cancelled"].map((s, i) => ({
              label: s,
              data: data.series.map((row) => row.by_status[s] || 0),
              backgroundColor: [PALETTE[1], PALETTE[5], PALETTE[7]][i],
            })),
          },
          options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
        }),
      ),
      card(
        "Remote spend vs remote-only (USD)",
        chart("chart-spend", {
          type: "line",
          data: {
            labels,
            datasets: [
              { label: "spent", data: data.series.map((s) => s.cost_usd), borderColor: PALETTE[0], yAxisID: "y" },
              { label: "remote-only would cost", data: data.series.map((s) => s.baseline_usd), borderColor: PALETTE[2], borderDash: [6, 4], yAxisID: "y" },
              { label: "savings factor", data: data.series.map((s) => (s.cost_usd > 0 && s.baseline_usd ? s.baseline_usd / s.cost_usd : null)), borderColor: PALETTE[1], yAxisID: "factor" },
            ],
          },
          options: {
            scales: {
              y: { beginAtZero: true, title: { display: true, text: "USD" } },
              factor: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "×" } },
            },
          },
        }),
      ),
      card(
        "Local vs remote tokens",
        chart("chart-tokens", {
          type: "bar",
          data: {
            labels,
            datasets: [
              { label: "local", data: data.series.map((s) => s.local_tokens), backgroundColor: PALETTE[1] },
              { label: "remote", data: data.series.map((s) => s.remote_tokens), backgroundColor: PALETTE[0] },
            ],
          },
          options: { scales: { y: { beginAtZero: true } } },
        }),
      ),
    ),
  );
}
