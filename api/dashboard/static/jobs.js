// "/": the tenant's jobs, newest first, live, filtered by status and method, in cursor pages.
import { getJson } from "./api.js";
import { el, FINAL, progressCell, showError, statusBadge, when } from "./format.js";
import { every, layout } from "./layout.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const PAGE = 20;

layout("/");
const main = document.getElementById("main");
const params = new URLSearchParams(location.search);
const state = { status: params.get("status") || "", method: params.get("method") || "", cursors: [] };

const statusSelect = el("select", { id: "filter-status", name: "status" },
  el("option", { value: "", text: "any" }),
  STATUSES.map((s) => el("option", { value: s, text: s, selected: s === state.status })));
const methodSelect = el("select", { id: "filter-method", name: "method" }, el("option", { value: "", text: "any" }));
const filters = el("form", { class: "filters", role: "search" },
  el("label", { for: "filter-status", text: "Status" }), statusSelect,
  el("label", { for: "filter-method", text: "Method" }), methodSelect);
const compareButton = el("button", { type: "button", id: "compare-selected", disabled: true, text: "Compare selected" });
const body = el("tbody");
const table = el("table", { class: "jobs" },
  el("caption", { class: "visually-hidden", text: "Jobs, newest first" }),
  el("thead", {}, el("tr", {}, ["", "Job", "Status", "Method", "Teacher", "Student", "Progress", "Created"].map(
    (h, i) => el("th", { scope: "col" }, i === 0 ? el("span", { class: "visually-hidden", text: "select" }) : h)))),
  body);
const newer = el("button", { type: "button", id: "newer", text: "← Newer" });
const older = el("button", { type: "button", id: "older", text: "Older →" });
const message = el("div", { "aria-live": "polite" });
main.append(
  el("div", { class: "title-row" }, el("h1", { text: "Jobs" }), el("a", { class: "button", href: "/teachers", text: "New job: pick a teacher" })),
  filters, message, el("div", { class: "table-wrap" }, table),
  el("div", { class: "pager" }, newer, older, compareButton));

const selected = new Set();
let current = null; // the page shown
let shown = ""; // what the rows were drawn from: redrawn only when it changed (keeps focus)
const teacherNames = new Map(); // id -> name, fetched once per teacher

async function nameTeachers(jobs) {
  const missing = [...new Set(jobs.map((job) => job.teacher_id))].filter((id) => !teacherNames.has(id));
  await Promise.all(missing.map(async (id) => {
    const teacher = await getJson(`/v1/teachers/${encodeURIComponent(id)}`);
    teacherNames.set(id, teacher.name);
  }));
}

function row(job) {
  const box = el("input", { type: "checkbox", "aria-label": `select ${job.id} to compare`, checked: selected.has(job.id) });
  box.addEventListener("change", () => {
    if (box.checked) selected.add(job.id);
    else selected.delete(job.id);
    compareButton.disabled = selected.size < 1;
  });
  return el("tr", { "data-job": job.id },
    el("td", {}, box),
    el("td", {}, el("a", { href: `/jobs/${job.id}`, text: job.id })),
    el("td", {}, statusBadge(job.status)),
    el("td", { text: job.method }),
    el("td", {}, el("a", { href: `/teachers/${job.teacher_id}`, text: teacherNames.get(job.teacher_id) || job.teacher_id, title: job.teacher_id })),
    el("td", { text: job.student.architecture }),
    el("td", {}, progressCell(job)),
    el("td", { text: when(job.created_at) }));
}

async function load() {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (state.status) query.set("status", state.status);
  if (state.method) query.set("method", state.method);
  const after = state.cursors.at(-1);
  if (after) query.set("after", after);
  try {
    current = await getJson(`/v1/jobs?${query}`);
    await nameTeachers(current.items);
  } catch (error) {
    showError(message, error);
    return true;
  }
  message.replaceChildren();
  const drawn = JSON.stringify(current);
  if (drawn !== shown) {
    shown = drawn;
    body.replaceChildren(...current.items.map(row));
    if (!current.items.length) body.append(el("tr", {}, el("td", { colspan: "8", text: "No jobs here yet." })));
  }
  newer.disabled = state.cursors.length === 0;
  older.disabled = !current.has_more;
  return true;
}

function filtersChanged() {
  state.status = statusSelect.value;
  state.method = methodSelect.value;
  state.cursors = [];
  const shown = new URLSearchParams();
  if (state.status) shown.set("status", state.status);
  if (state.method) shown.set("method", state.method);
  history.replaceState(null, "", shown.size ? `/?${shown}` : "/");
  load();
}

statusSelect.addEventListener("change", filtersChanged);
methodSelect.addEventListener("change", filtersChanged);
filters.addEventListener("submit", (event) => event.preventDefault());
older.addEventListener("click", () => {
  state.cursors.push(current.next_cursor);
  load();
});
newer.addEventListener("click", () => {
  state.cursors.pop();
  load();
});
compareButton.addEventListener("click", () => {
  location.href = `/compare?jobs=${[...selected].join(",")}`;
});

async function start() {
  await load();
  try {
    const methods = await getJson("/v1/methods");
    for (const m of methods.items) {
      methodSelect.append(el("option", { value: m.name, text: m.name, selected: m.name === state.method }));
    }
  } catch (error) {
    showError(message, error);
  }
  // live: the page again every 3 s while it shows a job that can still move, or is the first
  every(3, async () => {
    const moving = current && current.items.some((job) => !FINAL.has(job.status));
    if (moving || state.cursors.length === 0) await load();
    return true;
  });
}
start();
