// One task: its answer, cost against remote-only, rounds and job plans, jobs kept and dropped,
// what crossed to the remote, every remote call, timings, MI; live progress while it runs.

import { call, follow, get } from "../api.js";
import { card, count, el, empty, factor, num, seconds, stat, stats, table, usd, when } from "../ui.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

function pre(value) {
  return el("pre", { class: "json" }, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

function rounds(result) {
  return result.rounds.map((round) => {
    const jobs = round.jobs;
    const dropped = jobs ? Object.entries(jobs.dropped || {}) : [];
    return el(
      "details",
      { class: "round", open: true, "data-round": round.round },
      el("summary", {}, `Round ${round.round}`, round.decision ? ` — ${round.decision}` : ""),
      round.plan ? el("div", {}, el("h4", {}, `Job plan (${round.plan_source || "remote"})`), pre(round.plan)) : null,
      jobs
        ? stats(
            stat("Planned", count(jobs.planned), "jobs-planned"),
            stat("Run", count(jobs.run), "jobs-run"),
            stat("Kept", count(jobs.kept), "jobs-kept"),
            stat("Skipped (over limit)", count(jobs.skipped), "jobs-skipped"),
            stat(
              "Dropped",
              count(dropped.reduce((sum, [, n]) => sum + n, 0)),
              "jobs-dropped",
              dropped.length ? dropped.map(([why, n]) => `${why}: ${n}`).join(", ") : "none",
            ),
          )
        : null,
      round.local_outputs.length
        ? table(
            [
              { label: "Job", value: (o) => (o.task_index === null ? "–" : String(o.task_index)) },
              { label: "Chunk", value: (o) => (o.chunk_id === null ? "–" : String(o.chunk_id)) },
              { label: "Answer", value: (o) => o.answer ?? "–" },
              { label: "Explanation", value: (o) => o.explanation },
            ],
            round.local_outputs,
          )
        : null,
      (round.crossed || []).length
        ? el(
            "div",
            { class: "crossed" },
            el("h4", {}, "Crossed to the remote this round"),
            table(
              [
                { label: "Chunk", value: (c) => (c.chunk_id === null ? "documents" : String(c.chunk_id)) },
                { label: "Answering", value: (c) => c.query },
                { label: "Text sent", value: (c) => c.text },
              ],
              round.crossed,
            ),
          )
        : null,
      round.remote_messages.map((m) => el("div", {}, el("h4", {}, `Remote: ${m.purpose}`), pre(m.text))),
      round.feedback ? el("p", {}, el("strong", {}, "Feedback: "), round.feedback) : null,
    );
  });
}

function calls(list, side) {
  if (!list.length) return empty(`No ${side} calls.`);
  return table(
    [
      { label: "Round", value: (c) => String(c.round) },
      { label: "Purpose", value: (c) => c.purpose },
      { label: "Model", value: (c) => c.model },
      { label: "Requests", value: (c) => count(c.requests), class: "num" },
      { label: "Prompt tok.", value: (c) => count(c.usage.prompt_tokens), class: "num" },
      { label: "Completion tok.", value: (c) => count(c.usage.completion_tokens), class: "num" },
      { label: "Time", value: (c) => seconds(c.seconds), class: "num" },
      { label: "Cost", value: (c) => usd(c.cost_usd), class: "num" },
    ],
    list,
    { id: `${side}-calls` },
  );
}

function finished(view, task) {
  const result = task.result;
  const baseline = result && result.baseline;
  const usage = result ? result.usage : task.partial_usage;
  const latency = task.finished_at && task.started_at ? task.finished_at - task.started_at : null;
  const cost = result ? result.cost_usd.total : usage ? usage.cost_usd : null;
  view.append(
    stats(
      stat("Latency", seconds(latency), "latency"),
      stat("Spent", usd(cost), "cost"),
      stat("Remote-only would cost", baseline ? usd(baseline.usd) : "–", "baseline", baseline && baseline.exceeds_context ? "would not fit the remote's context" : baseline ? `${count(baseline.remote_prompt_tokens)} prompt tokens` : null),
      stat("Savings factor", baseline ? factor(baseline.savings_factor) : "–", "savings"),
      stat("Local tokens", usage ? count(usage.local.prompt_tokens + usage.local.completion_tokens) : "–", "local-tokens"),
      stat("Remote tokens", usage ? count(usage.remote.prompt_tokens + usage.remote.completion_tokens) : "–", "remote-tokens"),
      stat("I(X;Z)", task.mi && task.mi.mi_bits != null ? `${num(task.mi.mi_bits)} bits` : task.mi ? task.mi.status : "–", "mi", task.mi && task.mi.bits_per_token != null ? `${num(task.mi.bits_per_token, 4)} bits/token` : null),
      task.accuracy ? stat("Accuracy (F1)", num(task.accuracy.f1, 3), "accuracy", task.accuracy.exact_match ? "exact match" : "not an exact match") : null,
    ),
  );
  if (task.error) view.append(card("Error", el("p", { class: "error", id: "task-error" }, `${task.error.type}: ${task.error.message}`)));
  if (!result) return;
  view.append(
    card("Answer", el("p", { class: "answer", id: "task-answer" }, result.answer)),
    card(
      "Timings",
      stats(
        stat("Local", seconds(result.timings.local_s), "local-s"),
        stat("Remote", seconds(result.timings.remote_s), "remote-s"),
        stat("Total", seconds(result.timings.total_s), "total-s"),
      ),
    ),
    card("Rounds", ...rounds(result)),
    card(
      "What crossed to the remote",
      result.compressions.length
        ? el("ol", { class: "compressions" }, result.compressions.map((c) => el("li", {}, pre(c))))
        : empty(result.protocol === "remote_only" ? "remote_only sends the documents themselves." : "Nothing crossed."),
    ),
    card("Remote calls", calls(result.usage.remote_calls, "remote")),
    card("Local batches", calls(result.usage.local_calls, "local")),
  );
  if (result.warnings.length) {
    view.append(card("Warnings", el("ul", {}, result.warnings.map((w) => el("li", {}, w)))));
  }
}

export async function render(view, { args, refresh }) {
  const id = args[0];
  const task = await get(`/v1/tasks/${encodeURIComponent(id)}`);
  const running = !TERMINAL.has(task.status);
  const status = el("span", { class: `badge ${task.status}`, id: "task-status" }, task.status);
  const head = el(
    "div",
    { class: "view-head" },
    el("h1", {}, el("a", { href: "#/tasks" }, "Tasks"), " / ", id),
    status,
  );
  view.append(
    head,
    el(
      "p",
      { class: "muted" },
      `${task.protocol} · created ${when(task.created_at)}`,
      task.started_at ? ` · started ${when(task.started_at)}` : "",
      task.finished_at ? ` · finished ${when(task.finished_at)}` : "",
    ),
  );
  if (!running) {
    finished(view, task);
    return undefined;
  }

  // Live: follow the task's events; reload the page when it ends.
  const abort = new AbortController();
  const log = el("ol", { class: "events", id: "task-events" });
  const progress = el("progress", { id: "jobs-progress", max: 1, value: 0 });
  let remoteCalls = 0;
  let remoteCost = 0;
  const spent = el("span", { id: "live-cost" }, usd(0));
  const callsSoFar = el("span", { id: "live-calls" }, "0");
  const cancel = el("button", { type: "button", id: "cancel-task", class: "danger" }, "Cancel task");
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await call("DELETE", `/v1/tasks/${encodeURIComponent(id)}`);
    } catch (error) {
      cancel.disabled = false;
      log.append(el("li", { class: "error" }, error.message));
    }
  });
  head.append(cancel);
  view.append(
    card(
      "Live progress",
      el("p", {}, "Remote calls so far: ", callsSoFar, " · spent so far: ", spent),
      el("label", {}, "Local jobs ", progress),
      log,
    ),
  );
  const onEvent = (type, data) => {
    let text = type;
    if (type === "round_started") text = `round ${data.round} started`;
    else if (type === "plan") text = `round ${data.round}: job plan (${data.source})`;
    else if (type === "jobs_progress") {
      progress.max = data.total || 1;
      progress.value = data.done;
      text = `round ${data.round}: ${data.done}/${data.total} local jobs`;
    } else if (type === "remote_call") {
      remoteCalls += 1;
      remoteCost += data.cost_usd || 0;
      callsSoFar.textContent = String(remoteCalls);
      spent.textContent = usd(remoteCost);
      text = `remote call: ${data.purpose} (${count(data.usage.prompt_tokens)} prompt tokens, ${usd(data.cost_usd)})`;
    } else if (type === "final") text = "finished";
    else if (type === "error") text = `error: ${data.message}`;
    status.textContent = TERMINAL.has(type) ? type : "running";
    log.append(el("li", { "data-event": type }, text));
  };
  follow(`/v1/tasks/${encodeURIComponent(id)}/events`, onEvent, abort.signal)
    .then(() => {
      if (!abort.signal.aborted) refresh();
    })
    .catch((error) => {
      if (!abort.signal.aborted) log.append(el("li", { class: "error" }, error.message));
    });
  return () => abort.abort();
}
