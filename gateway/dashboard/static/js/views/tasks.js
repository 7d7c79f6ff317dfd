// Tasks: a filterable, paginated table (newest first); each row links to the task's page.

import { get } from "../api.js";
import { card, el, empty, seconds, table, usd, when } from "../ui.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
const PROTOCOLS = ["", "minions", "minion", "remote_only", "local_only"];

function select(name, options, current) {
  return el(
    "label",
    {},
    `${name} `,
    el(
      "select",
      { name },
      options.map((o) => el("option", { value: o, selected: o === current }, o || "any")),
    ),
  );
}

export async function render(view, { query }) {
  const params = new URLSearchParams();
  for (const name of ["status", "protocol", "key_id", "cursor"]) {
    if (query.get(name)) params.set(name, query.get(name));
  }
  params.set("limit", "25");
  const page = await get(`/v1/admin/tasks?${params}`);

  const form = el(
    "form",
    { class: "filters", id: "task-filters" },
    select("status", STATUSES, query.get("status") || ""),
    select("protocol", PROTOCOLS, query.get("protocol") || ""),
    el("label", {}, "key ", el("input", { name: "key_id", value: query.get("key_id") || "", placeholder: "key id", size: 14 })),
    el("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) next.set(name, value);
    location.hash = `#/tasks?${next}`;
  });

  view.append(el("div", { class: "view-head" }, el("h1", {}, "Tasks"), form));
  if (!page.data.length) {
    view.append(
      card(
        null,
        query.toString()
          ? empty("No task matches these filters.")
          : empty("No tasks yet — submit one with POST /v1/tasks (see docs/gateway.md) or:", "minions-gw run --protocol minions --doc report.pdf --question \"…\""),
      ),
    );
    return;
  }
  view.append(
    card(
      null,
      table(
        [
          { label: "Task", value: (t) => el("a", { href: `#/task/${encodeURIComponent(t.id)}` }, t.id) },
          { label: "Status", value: (t) => el("span", { class: `badge ${t.status}` }, t.status) },
          { label: "Protocol", value: (t) => t.protocol },
          { label: "Key", value: (t) => t.key_id },
          { label: "Created", value: (t) => when(t.created_at) },
          { label: "Latency", value: (t) => seconds(t.latency_s), class: "num" },
          { label: "Spent", value: (t) => usd(t.cost_usd), class: "num" },
          { label: "Remote-only", value: (t) => usd(t.baseline_usd), class: "num" },
        ],
        page.data,
        { id: "tasks-table", rowAttrs: (t) => ({ "data-task": t.id }) },
      ),
      el(
        "div",
        { class: "pager" },
        query.get("cursor") ? el("a", { href: `#/tasks?${withCursor(query, null)}` }, "« newest") : null,
        page.next_cursor ? el("a", { href: `#/tasks?${withCursor(query, page.next_cursor)}`, id: "next-page" }, "older »") : null,
      ),
    ),
  );
}

function withCursor(query, cursor) {
  const next = new URLSearchParams(query);
  if (cursor) next.set("cursor", cursor);
  else next.delete("cursor");
  return next.toString();
}
