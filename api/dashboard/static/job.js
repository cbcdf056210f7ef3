// "/jobs/{id}": one job, live: progress, curves, sample grids, report, events, settings.
import { download, getJson, objectUrl, request } from "./api.js";
import { lineChart, metricPoints } from "./chart.js";
import { el, errorBox, FINAL, number, percent, progressCell, showError, statusBadge, when } from "./format.js";
import { every, layout } from "./layout.js";
import { MetricStore } from "./metrics.js";

layout(null);
const jobId = decodeURIComponent(location.pathname.split("/")[2] || "");
const jobPath = `/v1/jobs/${encodeURIComponent(jobId)}`;
const main = document.getElementById("main");
const section = (id, title, ...children) =>
  el("section", { id, "aria-labelledby": `${id}-title` }, el("h2", { id: `${id}-title`, text: title }), ...children);

const header = el("div", { class: "job-header" });
const problem = el("div", { "aria-live": "polite" });
const actions = el("div", { class: "actions" });
const xToggle = el("fieldset", { class: "toggle" },
  el("legend", { text: "x axis" }),
  el("input", { type: "radio", name: "x-axis", id: "x-step", value: "step", checked: true }),
  el("label", { for: "x-step", text: "step" }),
  el("input", { type: "radio", name: "x-axis", id: "x-wall", value: "wall" }),
  el("label", { for: "x-wall", text: "wall time (s)" }));
const charts = el("div", { class: "charts", id: "charts" });
const slider = el("input", { type: "range", id: "sample-step", min: "0", max: "0", value: "0", disabled: true });
const sliderLabel = el("output", { for: "sample-step", id: "sample-step-value", text: "no grids yet" });
const sampleImage = el("img", { id: "sample-grid", alt: "generator samples", hidden: true });
const report = el("div", { id: "report" }, el("p", { text: "No report yet." }));
const eventsBody = el("tbody");
const settings = el("div", { id: "settings" });
main.append(
  header, problem, actions,
  section("curves", "Curves", xToggle, charts),
  section("samples", "Generator samples",
    el("div", { class: "slider" }, el("label", { for: "sample-step", text: "Step" }), slider, sliderLabel),
    sampleImage),
  section("report-section", "Evaluation report", report),
  section("events", "Events", el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Time", "Kind", "Message"].map((h) => el("th", { scope: "col", text: h })))),
    eventsBody))),
  section("settings-section", "Effective hyperparameters and settings", settings));

const metrics = new MetricStore(jobId);
let job = null;
let samples = [];
let eventsAfter = 0;
const gridUrls = new Map(); // step -> object URL
let reportShown = false;

function renderHeader() {
  document.title = `${job.id} · dfkd`;
  header.replaceChildren(
    el("h1", {}, "Job ", el("code", { text: job.id }), " ", statusBadge(job.status)),
    el("p", { class: "meta" },
      `${job.method} · teacher `, el("a", { href: `/teachers/${job.teacher_id}`, text: job.teacher_id }),
      ` · student ${job.student.architecture} · created ${when(job.created_at)}`,
      job.finished_at ? ` · finished ${when(job.finished_at)}` : "",
      job.progress.samples_per_second ? ` · ${number(job.progress.samples_per_second)} pseudo-samples/s` : ""),
    progressCell(job));
  problem.replaceChildren(...(job.error ? [errorBox(job.error)] : []));
}

async function saveStudent(format, button) {
  button.disabled = true;
  try {
    const name = await download(`${jobPath}/student?format=${format}&delivery=stream`, `${jobId}.${format}`);
    button.after(el("span", { class: "note", role: "status", text: ` saved ${name}` }));
  } catch (error) {
    button.after(errorBox(error));
  } finally {
    button.disabled = false;
  }
}

// the job state the action buttons were drawn for: polls that change nothing keep the same
// buttons, so a click or the keyboard focus is not lost to a redraw every two seconds
let actionsDrawnFor = null;

function renderActions() {
  const state = `${FINAL.has(job.status) ? job.status : "live"}|${job.cancel_requested}`;
  if (state === actionsDrawnFor) return;
  actionsDrawnFor = state;
  const buttons = [];
  if (!FINAL.has(job.status)) {
    const cancel = el("button", { type: "button", id: "cancel", class: "danger", disabled: job.cancel_requested,
      text: job.cancel_requested ? "Cancelling…" : "Cancel job" });
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        job = await (await request(`${jobPath}/cancel`, { method: "POST" })).json();
        render();
      } catch (error) {
        cancel.disabled = false;
        showError(problem, error);
      }
    });
    buttons.push(cancel);
  }
  if (job.status === "succeeded") {
    for (const [format, text] of [["safetensors", "safetensors"], ["onnx", "ONNX"], ["torchscript", "TorchScript"]]) {
      const button = el("button", { type: "button", id: `download-${format}`, text: `Download ${text}` });
      button.addEventListener("click", () => saveStudent(format, button));
      buttons.push(button);
    }
  }
  buttons.push(el("a", { class: "button secondary", href: `/compare?jobs=${jobId}`, text: "Compare…" }));
  actions.replaceChildren(...buttons);
}

function renderCharts() {
  const wall = document.getElementById("x-wall").checked;
  const start = metrics.start();
  const figures = [...metrics.series.keys()].sort().map((name) =>
    lineChart({
      title: name,
      xLabel: wall ? "seconds since the first point" : "step",
      series: [{ label: name, points: metricPoints(metrics.series.get(name), wall, start) }],
    }));
  charts.replaceChildren(...(figures.length ? figures : [el("p", { text: "No metric points yet." })]));
}

async function showGrid() {
  const entry = samples[Number(slider.value)];
  if (!entry) return;
  sliderLabel.textContent = `step ${entry.step} (${Number(slider.value) + 1} of ${samples.length})`;
  if (!gridUrls.has(entry.step)) gridUrls.set(entry.step, await objectUrl(new URL(entry.url).pathname));
  sampleImage.src = gridUrls.get(entry.step);
  sampleImage.alt = `generator samples at step ${entry.step}`;
  sampleImage.hidden = false;
}

async function updateSamples() {
  const listed = (await getJson(`${jobPath}/samples`)).items;
  if (listed.length === samples.length) return;
  const followLatest = samples.length === 0 || Number(slider.value) === samples.length - 1;
  samples = listed;
  slider.max = String(samples.length - 1);
  slider.disabled = false;
  if (followLatest) slider.value = String(samples.length - 1);
  await showGrid();
}

async function updateEvents() {
  for (;;) {
    const page = await getJson(`${jobPath}/events?after=${eventsAfter}&limit=500`);
    for (const event of page.items) {
      eventsBody.append(el("tr", { class: `event-${event.kind}` },
        el("td", { text: when(event.time) }), el("td", { text: event.kind }), el("td", { text: event.message })));
      eventsAfter = event.id;
    }
    if (page.next_after === null) return;
  }
}

function table(rows) {
  return el("table", { class: "pairs" }, el("tbody", {},
    rows.map(([name, value]) => el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: value })))));
}

function renderSettings() {
  const shown = (v) => (v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
  settings.replaceChildren(
    el("h3", { text: `${job.method} hyperparameters` }),
    table(Object.entries(job.hyperparameters).map(([k, v]) => [k, shown(v)])),
    el("h3", { text: "Job" }),
    table([
      ["iterations", shown(job.iterations)], ["budget_seconds", shown(job.budget_seconds)],
      ["batch_size", shown(job.batch_size)], ["seed", shown(job.seed)],
      ["student kwargs", shown(job.student.kwargs)], ["evaluation_dataset_id", shown(job.evaluation_dataset_id)],
      ["few_shot_dataset_id", shown(job.few_shot_dataset_id)], ["sample_every", shown(job.sample_every)],
      ["checkpoint_every", shown(job.checkpoint_every)], ["time_limit_seconds", shown(job.time_limit_seconds)],
      ["attempts", shown(job.attempts)], ["metadata", shown(job.metadata)],
    ]));
}

async function renderReport() {
  if (!job.evaluation_dataset_id && !job.report) {
    report.replaceChildren(el("p", { text: "This job names no evaluation dataset, so it has no report." }));
    return;
  }
  if (!job.report || reportShown) return;
  reportShown = true;
  const numbers = Object.entries(job.report).filter(([, v]) => typeof v !== "object");
  const rows = numbers.map(([k, v]) => [k, k.includes("accuracy") || k === "agreement" || k.includes("iou") ? percent(v) : number(v)]);
  const mte = job.report.mte;
  if (mte) rows.push(["MTE (mean transition error)", number(mte.mte)], ["MTE pairs", number(mte.pairs)]);
  const parts = [table(rows)];
  const perClass = job.report.student_per_class_iou;
  if (perClass) {  // a segmentation report: IoU of each class, teacher beside student
    const teacherIou = job.report.teacher_per_class_iou || [];
    parts.push(el("table", { id: "per-class-iou" },
      el("thead", {}, el("tr", {}, ["class", "teacher IoU", "student IoU"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, perClass.map((iou, index) => el("tr", {},
        el("td", { text: String(index) }), el("td", { text: percent(teacherIou[index]) }), el("td", { text: percent(iou) }))))));
  }
  const plots = el("div", { class: "charts" });
  if (mte && mte.student_mean) {
    const curve = (values) => values.map((v, i) => [i, v]);
    plots.append(lineChart({
      title: "transition curves: probability of the target class",
      xLabel: "adversarial step",
      series: [{ label: "student", points: curve(mte.student_mean) }, { label: "teacher", points: curve(mte.teacher_mean) }],
    }));
    const plot = el("img", { id: "transition-plot", alt: "transition curves as the service plotted them" });
    plots.append(el("figure", { class: "chart" }, el("figcaption", { text: "the service's plot" }), plot));
    parts.push(plots);
    objectUrl(`${jobPath}/report/transition-curves.png`).then((url) => { plot.src = url; }, (error) => plot.replaceWith(errorBox(error)));
  }
  report.replaceChildren(...parts);
}

function render() {
  renderHeader();
  renderActions();
  renderSettings();
}

async function refresh() {
  job = await getJson(jobPath);
  const ended = FINAL.has(job.status);
  const grew = ended ? (await metrics.reload(), true) : await metrics.update();
  await Promise.all([updateSamples(), updateEvents()]);
  render();
  if (grew) renderCharts();
  await renderReport();
  return !ended;
}

document.querySelectorAll('input[name="x-axis"]').forEach((radio) => radio.addEventListener("change", renderCharts));
slider.addEventListener("input", () => showGrid().catch((error) => showError(problem, error)));

async function start() {
  try {
    const live = await refresh();
    renderCharts();
    if (live) {
      every(2, async () => {
        try {
          return await refresh();
        } catch (error) {
          showError(problem, error);
          return error.status !== 404; // deleted meanwhile: nothing more to watch
        }
      });
    }
  } catch (error) {
    header.replaceChildren(el("h1", { text: `Job ${jobId}` }));
    showError(problem, error);
  }
}
start();
