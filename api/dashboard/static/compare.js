// "/compare?jobs=a,b,c": every metric of several jobs, overlaid (methods, seeds side by side).
import { getJson } from "./api.js";
import { lineChart, metricPoints } from "./chart.js";
import { el, errorBox, percent, statusBadge } from "./format.js";
import { layout } from "./layout.js";
import { MetricStore } from "./metrics.js";

layout("/compare");
const main = document.getElementById("main");
const ids = (new URLSearchParams(location.search).get("jobs") || "").split(",").map((s) => s.trim()).filter(Boolean);
const input = el("input", { id: "compare-jobs", name: "jobs", value: ids.join(","), placeholder: "job_…,job_…", "aria-describedby": "compare-jobs-help" });
const form = el("form", { class: "filters", method: "get", action: "/compare" },
  el("label", { for: "compare-jobs", text: "Jobs (comma-separated ids)" }), input,
  el("button", { type: "submit", text: "Compare" }),
  el("small", { id: "compare-jobs-help", text: "or tick jobs on the Jobs page and press “Compare selected”" }));
const xToggle = el("fieldset", { class: "toggle" }, el("legend", { text: "x axis" }),
  el("input", { type: "radio", name: "x-axis", id: "x-step", value: "step", checked: true }), el("label", { for: "x-step", text: "step" }),
  el("input", { type: "radio", name: "x-axis", id: "x-wall", value: "wall" }), el("label", { for: "x-wall", text: "wall time (s)" }));
const summary = el("div", { class: "table-wrap" });
const charts = el("div", { class: "charts", id: "charts" });
const problems = el("div", { "aria-live": "polite" });
main.append(el("h1", { text: "Compare jobs" }), form, problems, summary, xToggle, charts);

let loaded = []; // [{job, store}]

function label(job) {
  return `${job.id} (${job.method}, seed ${job.seed})`;
}

function render() {
  const wall = document.getElementById("x-wall").checked;
  const names = [...new Set(loaded.flatMap(({ store }) => [...store.series.keys()]))].sort();
  charts.replaceChildren(...names.map((name) => lineChart({
    title: name,
    xLabel: wall ? "seconds since each job's first point" : "step",
    series: loaded.map(({ job, store }) => ({ label: label(job), points: metricPoints(store.series.get(name) || [], wall, store.start()) })),
  })));
  const row = ({ job }) => el("tr", {}, el("td", {}, el("a", { href: `/jobs/${job.id}`, text: job.id })), el("td", {}, statusBadge(job.status)),
    el("td", { text: job.method }), el("td", { text: job.student.architecture }), el("td", { text: String(job.seed) }),
    el("td", { text: job.report ? percent(job.report.student_accuracy ?? job.report.student_miou) : "–" }));
  summary.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ["Job", "Status", "Method", "Student", "Seed", "Student accuracy / mIoU"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, loaded.map(row))));
}

async function start() {
  if (!ids.length) {
    charts.replaceChildren(el("p", { text: "Name two or more jobs to overlay their curves." }));
    return;
  }
  const results = await Promise.all(ids.map(async (id) => {
    try {
      const job = await getJson(`/v1/jobs/${encodeURIComponent(id)}`);
      const store = new MetricStore(id);
      await store.update();
      return { job, store };
    } catch (error) {
      problems.append(errorBox({ code: error.code, message: `${id}: ${error.message}` }));
      return null;
    }
  }));
  loaded = results.filter(Boolean);
  render();
}
document.querySelectorAll('input[name="x-axis"]').forEach((radio) => radio.addEventListener("change", render));
start();
