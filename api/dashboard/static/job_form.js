// The "distil this teacher" form, generated from GET /v1/methods: one field per hyperparameter,
// its default filled in and its description as help text. Nothing here names a method.
import { el } from "./format.js";

function field(id, text, input, help) {
  if (help) input.setAttribute("aria-describedby", `${id}-help`);
  return el("div", { class: "field" }, el("label", { for: id, text }), input,
    help ? el("small", { id: `${id}-help`, text: help }) : null);
}

function boundsText(bounds) {
  const signs = { ge: "≥", gt: ">", le: "≤", lt: "<" };
  return Object.entries(bounds || {}).map(([k, v]) => `${signs[k]} ${v}`).join(", ");
}

// An input for one hyperparameter (or iterations / batch_size) of GET /v1/methods.
function hyperparameterInput(hp, id, value) {
  const base = hp.type.split("|")[0];
  const shown = value === undefined ? hp.default : value;
  if (hp.choices) {
    const select = el("select", { id, name: hp.name });
    if (hp.type.includes("null")) select.append(el("option", { value: "", text: "auto" }));
    for (const choice of hp.choices) select.append(el("option", { value: choice, text: choice, selected: choice === shown }));
    return select;
  }
  if (base === "boolean") return el("input", { id, name: hp.name, type: "checkbox", checked: shown === true });
  if (Array.isArray(hp.default) || base === "array") {
    return el("input", { id, name: hp.name, "data-json": "true", value: shown === null ? "" : JSON.stringify(shown) });
  }
  if (base === "integer" || base === "number") {
    const input = el("input", { id, name: hp.name, type: "number", step: base === "integer" ? "1" : "any" });
    if (hp.bounds.ge !== undefined) input.min = String(hp.bounds.ge);
    if (hp.bounds.le !== undefined) input.max = String(hp.bounds.le);
    if (shown !== null) input.value = String(shown);
    return input;
  }
  return el("input", { id, name: hp.name, value: shown === null ? "" : String(shown) });
}

function helpOf(hp) {
  const parts = [hp.description];
  const bounds = boundsText(hp.bounds);
  if (bounds) parts.push(`(${bounds}).`);
  if (hp.default === null) {
    const auto = [hp.default_cpu !== null ? `CPU ${JSON.stringify(hp.default_cpu)}` : "", hp.default_gpu !== null ? `GPU ${JSON.stringify(hp.default_gpu)}` : ""].filter(Boolean);
    parts.push(auto.length ? `Blank: chosen by the worker (${auto.join(", ")}).` : "Blank: derived when the job starts.");
  }
  return parts.join(" ");
}

// The value an input holds, or undefined for a blank field (left out of the body).
function valueOf(input, hp) {
  if (input.type === "checkbox") return input.checked;
  const text = input.value.trim();
  if (text === "") return undefined;
  if (input.dataset.json) return JSON.parse(text);
  const base = hp.type.split("|")[0];
  if (base === "integer") return Number.parseInt(text, 10);
  if (base === "number") return Number(text);
  return text;
}

// Builds the form; `submit(body)` gets the job body when the user starts the job.
export function jobForm({ teacher, methods, architectures, datasets, submit }) {
  const method = el("select", { id: "method", name: "method" },
    methods.items.map((m) => el("option", { value: m.name, text: `${m.name}: ${m.title}`, selected: m.name === methods.default })));
  const about = el("p", { id: "method-help", class: "note" });
  method.setAttribute("aria-describedby", "method-help");
  // a halved teacher where the registry has one, else the teacher's own architecture
  const halved = architectures.find((a) => a.name === `${teacher.architecture}_half`);
  const wanted = halved ? halved.name : teacher.architecture;
  const student = el("select", { id: "student-architecture", name: "student" },
    architectures.map((a) => el("option", { value: a.name, text: a.name, selected: a.name === wanted })));
  const studentKwargs = el("input", { id: "student-kwargs", placeholder: "{}" });
  const iterations = el("input", { id: "iterations", type: "number", min: "1", step: "1" });
  const budget = el("input", { id: "budget-seconds", type: "number", min: "1", step: "any" });
  const batch = el("input", { id: "batch-size", type: "number", min: "2", step: "1" });
  const seed = el("input", { id: "seed", type: "number", min: "0", step: "1", value: "0" });
  const evaluation = el("select", { id: "evaluation-dataset" }, el("option", { value: "", text: "none" }),
    datasets.map((d) => el("option", { value: d.id, text: `${d.name} (${d.id}, ${d.num_examples} examples)` })));
  const sampleEvery = el("input", { id: "sample-every", type: "number", min: "0", step: "1", placeholder: "service default" });
  const mteImages = el("input", { id: "mte-images", type: "number", min: "0", step: "1", placeholder: "service default" });
  const mteSteps = el("input", { id: "mte-steps", type: "number", min: "1", step: "1", placeholder: "service default" });
  const timeLimit = el("input", { id: "time-limit", type: "number", min: "1", step: "any", placeholder: "the deployment's" });
  const hyperparameters = el("fieldset", { id: "hyperparameters" });
  const iterationsHelp = el("small", { id: "iterations-help" });
  iterations.setAttribute("aria-describedby", "iterations-help");
  const result = el("div", { id: "job-result", "aria-live": "polite" });
  let inputs = [];

  function methodChanged() {
    const spec = methods.items.find((m) => m.name === method.value);
    const needs = spec.requirements.map((r) => r.summary).join("; ");
    about.textContent = `${spec.summary}. ${spec.paper}.${needs ? ` Needs: ${needs}.` : ""}`;
    // the paper's run is long; the method's example runs in about a minute on a CPU
    iterations.value = String(spec.example.iterations ?? spec.iterations.default ?? "");
    iterationsHelp.textContent = `${spec.iterations.description}. Give iterations, a time budget or both.`;
    batch.value = String(spec.batch_size.default);
    inputs = spec.hyperparameters.map((hp) => [hp, hyperparameterInput(hp, `hp-${hp.name}`)]);
    hyperparameters.replaceChildren(el("legend", { text: `${spec.name} hyperparameters (defaults filled in)` }),
      ...inputs.map(([hp, input]) => field(input.id, hp.name, input, helpOf(hp))));
  }
  method.addEventListener("change", methodChanged);

  const form = el("form", { id: "job-form", class: "card" },
    el("h2", { text: "Distil this teacher" }),
    field("method", "Method", method), about,
    el("div", { class: "grid" },
      field("student-architecture", "Student architecture", student, "num_classes, in_channels and image_size default to the teacher's"),
      field("student-kwargs", "Student arguments (JSON)", studentKwargs, "optional, e.g. {\"width\": 8}"),
      field("iterations", "Iterations", iterations),
      field("budget-seconds", "Time budget (s)", budget, "optional: ends the job succeeded when spent; schedules follow the budget"),
      field("batch-size", "Batch size", batch, "pseudo inputs per step"),
      field("seed", "Seed", seed),
      field("evaluation-dataset", "Evaluation dataset", evaluation, "a labelled set for the report: accuracy, agreement, MTE (masks: mIoU, per-class IoU)"),
      field("sample-every", "Sample grid every (iterations)", sampleEvery, "0: none"),
      field("mte-images", "MTE images", mteImages, "0 skips MTE"),
      field("mte-steps", "MTE steps", mteSteps),
      field("time-limit", "Time limit (s)", timeLimit, "past it the job fails with time_limit at its next checkpoint")),
    hyperparameters,
    el("button", { type: "submit", id: "start-job", text: "Start job" }),
    result);
  iterations.after(iterationsHelp);
  methodChanged();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { teacher_id: teacher.id, method: method.value, student: { architecture: student.value } };
    const optional = [["iterations", iterations, Number.parseInt], ["budget_seconds", budget, Number], ["batch_size", batch, Number.parseInt],
      ["seed", seed, Number.parseInt], ["sample_every", sampleEvery, Number.parseInt], ["mte_images", mteImages, Number.parseInt], ["mte_steps", mteSteps, Number.parseInt], ["time_limit_seconds", timeLimit, Number]];
    for (const [name, input, parse] of optional) if (input.value.trim() !== "") body[name] = parse(input.value, 10);
    if (evaluation.value) body.evaluation_dataset_id = evaluation.value;
    try {
      if (studentKwargs.value.trim()) body.student.kwargs = JSON.parse(studentKwargs.value);
      body.hyperparameters = {};
      for (const [hp, input] of inputs) {
        const value = valueOf(input, hp);
        if (value !== undefined) body.hyperparameters[hp.name] = value;
      }
    } catch (error) {
      result.replaceChildren(el("p", { class: "error", role: "alert", text: `Not JSON: ${error.message}` }));
      return;
    }
    await submit(body, result);
  });
  return form;
}
