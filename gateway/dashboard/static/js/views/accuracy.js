// Accuracy: per protocol from tasks that carried a reference answer, from published bench runs,
// and the cost–accuracy frontier with 95% confidence intervals.

import { get } from "../api.js";
import { PALETTE, card, chart, count, el, empty, pct, table, usd, when } from "../ui.js";

// Draws each point's 95% interval (point.ci = [low, high]) as a vertical whisker.
const whiskers = {
  id: "ciWhiskers",
  afterDatasetsDraw(c) {
    const { ctx, scales } = c;
    ctx.save();
    c.data.datasets.forEach((dataset, i) => {
      if (!c.isDatasetVisible(i)) return;
      c.getDatasetMeta(i).data.forEach((point, j) => {
        const ci = dataset.data[j] && dataset.data[j].ci;
        if (!ci) return;
        const top = scales.y.getPixelForValue(ci[1]);
        const bottom = scales.y.getPixelForValue(ci[0]);
        ctx.strokeStyle = dataset.borderColor || "#333";
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(point.x, top);
        ctx.lineTo(point.x, bottom);
        ctx.moveTo(point.x - 4, top);
        ctx.lineTo(point.x + 4, top);
        ctx.moveTo(point.x - 4, bottom);
        ctx.lineTo(point.x + 4, bottom);
        ctx.stroke();
      });
    });
    ctx.restore();
  },
};

export async function render(view) {
  const data = await get("/v1/admin/summary/accuracy");
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Accuracy")));

  const graded = data.tasks.filter((row) => row.graded > 0);
  view.append(
    card(
      "From tasks with a reference answer",
      graded.length
        ? table(
            [
              { label: "Protocol", value: (r) => r.protocol },
              { label: "Graded tasks", value: (r) => count(r.graded), class: "num" },
              { label: "Exact match", value: (r) => pct(r.exact_match_rate), class: "num" },
              { label: "95% CI", value: (r) => `${pct(r.ci95[0])} – ${pct(r.ci95[1])}`, class: "num" },
              { label: "Mean F1", value: (r) => pct(r.mean_f1), class: "num" },
              { label: "Cost / task", value: (r) => usd(r.cost_usd_per_task), class: "num" },
            ],
            graded,
            { id: "accuracy-tasks" },
          )
        : empty(
            'No graded tasks yet — send "reference_answer" with a task to grade it:',
            '{"protocol": "minions", "question": "…", "documents": […], "reference_answer": "42"}',
          ),
    ),
  );

  const frontier = data.frontier;
  const sources = [...new Set(frontier.map((p) => p.source))];
  view.append(
    card(
      "Cost–accuracy frontier (95% CI)",
      frontier.length
        ? chart(
            "chart-frontier",
            {
              type: "scatter",
              data: {
                datasets: [
                  ...sources.map((source, i) => ({
                    label: source,
                    data: frontier
                      .filter((p) => p.source === source)
                      .map((p) => ({ x: p.cost_usd, y: p.accuracy, ci: p.ci95, protocol: p.protocol })),
                    borderColor: PALETTE[i % PALETTE.length],
                    backgroundColor: PALETTE[i % PALETTE.length],
                    pointRadius: 5,
                  })),
                  ...sources.map((source, i) => ({
                    label: `${source} frontier`,
                    type: "line",
                    data: frontier
                      .filter((p) => p.source === source && p.on_frontier)
                      .sort((a, b) => a.cost_usd - b.cost_usd)
                      .map((p) => ({ x: p.cost_usd, y: p.accuracy })),
                    borderColor: PALETTE[i % PALETTE.length],
                    borderDash: [4, 4],
                    pointRadius: 0,
                  })),
                ],
              },
              options: {
                plugins: {
                  tooltip: {
                    callbacks: {
                      label: (item) =>
                        `${item.raw.protocol || "frontier"}: ${pct(item.raw.y)} at ${usd(item.raw.x)}/task`,
                    },
                  },
                },
                scales: {
                  x: { title: { display: true, text: "remote USD per task" }, beginAtZero: true },
                  y: { title: { display: true, text: "accuracy" }, min: 0, max: 1 },
                },
              },
              plugins: [whiskers],
            },
            320,
          )
        : empty(
            "Nothing to plot yet — publish a bench run or grade tasks:",
            "minions-gw bench --dataset bench/dataset.jsonl --protocols minions,remote_only --publish",
          ),
      frontier.length
        ? table(
            [
              { label: "Source", value: (p) => p.source },
              { label: "Protocol", value: (p) => p.protocol },
              { label: "Accuracy", value: (p) => pct(p.accuracy), class: "num" },
              { label: "95% CI", value: (p) => `${pct(p.ci95[0])} – ${pct(p.ci95[1])}`, class: "num" },
              { label: "USD / task", value: (p) => usd(p.cost_usd), class: "num" },
              { label: "On frontier", value: (p) => (p.on_frontier ? "yes" : "no") },
            ],
            frontier,
            { id: "frontier-table" },
          )
        : null,
    ),
  );

  view.append(
    card(
      "Bench runs",
      data.bench_runs.length
        ? table(
            [
              { label: "Run", value: (r) => r.id },
              { label: "Published", value: (r) => when(r.created_at) },
              { label: "Dataset", value: (r) => r.dataset },
              { label: "Local", value: (r) => r.local_model },
              { label: "Remote", value: (r) => r.remote_model + (r.remote_stand_in ? " (stand-in)" : "") },
              { label: "Protocols", value: (r) => r.protocols.join(", ") },
              { label: "Tasks", value: (r) => count(r.tasks), class: "num" },
            ],
            data.bench_runs,
            { id: "bench-runs" },
          )
        : empty(
            "No bench runs published — run one with --publish:",
            "minions-gw bench --dataset bench/dataset.jsonl --publish --gateway-url http://127.0.0.1:8000",
          ),
    ),
  );
}
