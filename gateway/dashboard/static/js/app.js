// The dashboard's shell: sign-in, navigation by the URL's hash (#/view/arg?query), and the
// views, each a module with `render(container, ctx)` that may return a cleanup function.

import { ApiError, adminKey, forgetAdminKey, get, setAdminKey } from "./api.js";
import { destroyCharts, el, errorBox, mountCharts } from "./ui.js";
import * as accuracy from "./views/accuracy.js";
import * as information from "./views/information.js";
import * as keys from "./views/keys.js";
import * as overview from "./views/overview.js";
import * as studies from "./views/studies.js";
import * as study from "./views/study.js";
import * as task from "./views/task.js";
import * as tasks from "./views/tasks.js";
import * as workers from "./views/workers.js";

const VIEWS = { overview, accuracy, information, tasks, task, workers, studies, study, keys };
const NAV_OF = { task: "tasks", study: "studies" };

const $ = (selector) => document.querySelector(selector);
let cleanup = null;
let generation = 0;

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name = "overview", ...args] = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: VIEWS[name] ? name : "overview", args, query: new URLSearchParams(query) };
}

function showLogin(message = null) {
  $("#nav").hidden = true;
  $("#view").replaceChildren();
  $("#login").hidden = false;
  const error = $("#login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("#login-key").focus();
}

async function route() {
  if (cleanup) cleanup();
  cleanup = null;
  destroyCharts();
  if (!adminKey()) {
    showLogin();
    return;
  }
  $("#login").hidden = true;
  $("#nav").hidden = false;
  const { name, args, query } = parseHash();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === (NAV_OF[name] || name));
  }
  const container = $("#view");
  const mine = ++generation;
  container.replaceChildren(el("p", { class: "loading" }, "Loading…"));
  container.dataset.view = name;
  container.dataset.ready = "false";
  delete container.dataset.route;
  try {
    const view = el("div", { class: `view view-${name}` });
    const done = await VIEWS[name].render(view, { args, query, refresh: route });
    if (mine !== generation) {
      if (typeof done === "function") done();
      return;
    }
    cleanup = typeof done === "function" ? done : null;
    container.replaceChildren(view);
    mountCharts();
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      forgetAdminKey();
      showLogin(error.status === 403 ? "That key is not an admin key." : "That key was refused.");
      return;
    }
    container.replaceChildren(errorBox(error));
  }
  container.dataset.route = location.hash || "#/overview";
  container.dataset.ready = "true";
}

async function signIn(event) {
  event.preventDefault();
  const key = $("#login-key").value.trim();
  if (!key) return;
  setAdminKey(key);
  try {
    await get("/v1/admin/keys"); // an admin-only call: checks the key is valid and admin
  } catch (error) {
    forgetAdminKey();
    const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);
    showLogin(
      refused
        ? error.status === 403
          ? "That key is not an admin key."
          : "That key was refused."
        : error.message,
    );
    return;
  }
  $("#login-key").value = "";
  if (!location.hash || location.hash === "#") location.hash = "#/overview";
  else route();
}

function start() {
  $("#login-form").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", () => {
    forgetAdminKey();
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
