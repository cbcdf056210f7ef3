// "/teachers/{id}": one teacher, its jobs, and "distil this teacher".
import { allPages, getJson, postJson } from "./api.js";
import { bytes, el, number, progressCell, showError, statusBadge, when } from "./format.js";
import { jobForm } from "./job_form.js";
import { layout } from "./layout.js";
import { pagedTable } from "./paged.js";

layout("/teachers");
const teacherId = decodeURIComponent(location.pathname.split("/")[2] || "");
const main = document.getElementById("main");
const message = el("div", { "aria-live": "polite" });
main.append(el("h1", {}, "Teacher ", el("code", { text: teacherId })), message);

function details(t) {
  const rows = [
    ["name", t.name], ["architecture", `${t.architecture} ${JSON.stringify(t.architecture_kwargs)}`], ["format", t.format],
    ["input", t.input_shape.join("×")], ["classes", String(t.num_classes)], ["task", t.task_type], ["parameters", number(t.parameter_count)],
    ["input mean / std", `${JSON.stringify(t.input_mean)} / ${JSON.stringify(t.input_std)}`], ["size", bytes(t.size_bytes)],
    ["sha256", t.sha256], ["activation record", t.metadata ? JSON.stringify(t.metadata) : "none"], ["created", when(t.created_at)],
  ];
  return el("table", { class: "pairs" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: v })))));
}

async function submit(body, result) {
  result.replaceChildren(el("p", { text: "Starting…" }));
  try {
    const job = await postJson("/v1/jobs", body);
    location.href = `/jobs/${job.id}`;
  } catch (error) {
    showError(result, error);
  }
}

async function start() {
  try {
    const teacher = await getJson(`/v1/teachers/${encodeURIComponent(teacherId)}`);
    document.title = `${teacher.name} · dfkd`;
    const [methods, architectures, datasets] = await Promise.all([
      getJson("/v1/methods"), getJson("/v1/architectures"), allPages("/v1/datasets"),
    ]);
    const jobs = pagedTable({
      path: "/v1/jobs", query: { teacher_id: teacher.id }, caption: "This teacher's jobs",
      headings: ["Job", "Status", "Method", "Student", "Progress"],
      row: (j) => [el("a", { href: `/jobs/${j.id}`, text: j.id }), statusBadge(j.status), j.method, j.student.architecture, progressCell(j)],
      onError: (error) => showError(message, error),
    });
    main.append(details(teacher),
      jobForm({ teacher, methods, architectures: architectures.items, datasets, submit }),
      el("h2", { text: "Jobs of this teacher" }), jobs.element);
    await jobs.load();
  } catch (error) {
    showError(message, error);
  }
}
start();
