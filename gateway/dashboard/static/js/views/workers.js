// Workers and queues: the task queue, each local-model pool with its live workers, dead letters,
// and the study consumers.

import { get } from "../api.js";
import { card, count, el, empty, num, stat, stats, table, when } from "../ui.js";

function age(worker) {
  return worker.heartbeat_age_s == null ? "–" : `${num(worker.heartbeat_age_s, 1)} s ago`;
}

export async function render(view) {
  const data = await get("/v1/admin/workers");
  view.append(el("div", { class: "view-head" }, el("h1", {}, "Workers and queues")));
  const dead = data.pools.reduce((sum, p) => sum + p.dead_lettered, 0);
  view.append(
    stats(
      stat("Tasks waiting", count(data.tasks_waiting), "tasks-waiting"),
      stat("Pools", count(data.pools.length), "pools"),
      stat("Live workers", count(data.pools.reduce((sum, p) => sum + p.workers.length, 0)), "workers"),
      stat("Dead letters", count(dead), "dead-letters"),
      stat("Studies waiting", count(data.studies_waiting), "studies-waiting"),
    ),
  );
  if (!data.pools.length) {
    view.append(
      card(
        "Local-model pools",
        empty(
          "No worker pool: the gateway runs the local model in-process. To spread local jobs over machines, set MGW_LOCAL_POOL=POOL on the gateway and start workers:",
          "minions-gw worker --engine vllm --model smollm2-135m-instruct --pool POOL",
        ),
      ),
    );
  }
  for (const pool of data.pools) {
    view.append(
      card(
        `Pool ${pool.pool}${pool.pool === data.local_pool ? " (this gateway's)" : ""}`,
        stats(
          stat("Queued jobs", count(pool.queued), "queued"),
          stat("Held by workers", count(pool.held), "held"),
          stat("Waiting", count(pool.waiting), "waiting"),
          stat("Dead letters", count(pool.dead_lettered), "dead"),
        ),
        pool.workers.length
          ? table(
              [
                { label: "Worker", value: (w) => w.name },
                { label: "Engine", value: (w) => w.engine },
                { label: "Model", value: (w) => w.model },
                { label: "Batch", value: (w) => w.batch, class: "num" },
                { label: "Context", value: (w) => count(Number(w.context_window)), class: "num" },
                { label: "Host", value: (w) => `${w.host}:${w.pid}` },
                { label: "Heartbeat", value: age },
              ],
              pool.workers,
              { id: `workers-${pool.pool}` },
            )
          : empty("No live worker in this pool — start one:", `minions-gw worker --pool ${pool.pool}`),
      ),
    );
  }
  const consumers = data.study_consumers || [];
  view.append(
    card(
      "Study consumers",
      consumers.length
        ? table(
            [
              { label: "Consumer", value: (c) => c.name },
              { label: "Studies held", value: (c) => count(c.pending), class: "num" },
              { label: "Idle", value: (c) => `${num(c.idle_s, 1)} s`, class: "num" },
            ],
            consumers,
            { id: "study-consumers" },
          )
        : empty("No study consumer has read the study queue yet. Workers (and the gateway, without a local pool) run queued studies when idle."),
    ),
  );
  view.append(el("p", { class: "muted" }, `as of ${when(Date.now() / 1000)}`));
}
