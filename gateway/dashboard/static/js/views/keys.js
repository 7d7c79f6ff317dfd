// API keys: list with budget and spend, create (the secret is shown once), revoke.

import { call, get } from "../api.js";
import { card, el, empty, errorBox, table, usd, when } from "../ui.js";

export async function render(view, { refresh }) {
  const data = await get("/v1/admin/keys");
  const notice = el("div", { id: "key-notice" });
  const form = el(
    "form",
    { class: "filters", id: "key-form" },
    el("label", {}, "name ", el("input", { name: "name", required: true, maxlength: 64, size: 14 })),
    el("label", {}, "budget USD ", el("input", { name: "budget_usd", type: "number", min: 0, step: "0.01", size: 8 })),
    el("label", {}, el("input", { name: "admin", type: "checkbox" }), " admin"),
    el("button", { type: "submit" }, "Create key"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const body = { name: fields.get("name"), admin: fields.get("admin") === "on" };
    if (fields.get("budget_usd")) body.budget_usd = Number(fields.get("budget_usd"));
    try {
      const made = await call("POST", "/v1/admin/keys", body);
      // The secret exists in this response only: show it once, then it is gone.
      await refresh();
      document.querySelector("#key-notice").replaceChildren(
        el(
          "div",
          { class: "secret", role: "status" },
          el("p", {}, `Key ${made.id} (${made.name}) created. Copy the secret now — it is not shown again:`),
          el("code", { id: "new-key-secret" }, made.key),
        ),
      );
    } catch (error) {
      notice.replaceChildren(errorBox(error));
    }
  });
  view.append(el("div", { class: "view-head" }, el("h1", {}, "API keys"), form), notice);
  const revoke = (key) =>
    el(
      "button",
      {
        type: "button",
        class: "danger small",
        "data-revoke": key.id,
        onclick: async () => {
          if (!confirm(`Revoke key ${key.id} (${key.name})? Applications using it stop working.`)) return;
          try {
            await call("DELETE", `/v1/admin/keys/${encodeURIComponent(key.id)}`);
            refresh();
          } catch (error) {
            notice.replaceChildren(errorBox(error));
          }
        },
      },
      "Revoke",
    );
  view.append(
    card(
      null,
      data.data.length
        ? table(
            [
              { label: "Key", value: (k) => k.id },
              { label: "Name", value: (k) => k.name },
              { label: "Admin", value: (k) => (k.admin ? "yes" : "no") },
              { label: "Budget", value: (k) => (k.budget_usd == null ? "unlimited" : usd(k.budget_usd)), class: "num" },
              { label: "Spent", value: (k) => usd(k.spent_usd), class: "num" },
              { label: "Reserved", value: (k) => usd(k.reserved_usd), class: "num" },
              { label: "Rate / min", value: (k) => String(k.rate_limit_per_minute), class: "num" },
              { label: "Created", value: (k) => when(k.created_at) },
              { label: "", value: revoke },
            ],
            data.data,
            { id: "keys-table", rowAttrs: (k) => ({ "data-key": k.id }) },
          )
        : empty("No keys — create one above or with: minions-gw keys create --name app --budget-usd 5"),
    ),
  );
}
