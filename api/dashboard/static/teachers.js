// "/teachers": the tenant's teachers in cursor pages, and the upload form.
import { getJson, postForm } from "./api.js";
import { bytes, el, number, showError, when } from "./format.js";
import { layout } from "./layout.js";
import { pagedTable } from "./paged.js";

layout("/teachers");
const main = document.getElementById("main");
const message = el("div", { "aria-live": "polite" });

const field = (id, text, input, help) =>
  el("div", { class: "field" }, el("label", { for: id, text }), input,
    help ? el("small", { id: `${id}-help`, text: help }) : null);
const architecture = el("select", { id: "architecture", name: "architecture", required: true, "aria-describedby": "architecture-help" });
const form = el("form", { id: "upload-teacher", class: "card" },
  el("h2", { text: "Upload a teacher" }),
  field("teacher-file", "Weights (safetensors)", el("input", { id: "teacher-file", name: "file", type: "file", required: true, accept: ".safetensors" }),
    "a state_dict saved with safetensors.torch.save_file; pickles are refused"),
  field("architecture", "Architecture", architecture, " "),
  field("architecture-kwargs", "Architecture arguments (JSON)", el("input", { id: "architecture-kwargs", name: "architecture_kwargs", placeholder: "{}", "aria-describedby": "architecture-kwargs-help" }),
    "constructor arguments; left out: the defaults shown above"),
  field("teacher-name", "Name", el("input", { id: "teacher-name", name: "name", maxlength: "200" }), "defaults to the file name"),
  field("input-mean", "Input mean per channel", el("input", { id: "input-mean", name: "input_mean", placeholder: "[0.1307]" }), "what the teacher was trained with, e.g. [0.1307]"),
  field("input-std", "Input std per channel", el("input", { id: "input-std", name: "input_std", placeholder: "[0.3081]" }), "e.g. [0.3081]"),
  field("teacher-metadata", "Activation record (optional)", el("input", { id: "teacher-metadata", name: "metadata", type: "file" }),
    "made by `dfkd record-metadata`, for the methods that need one"),
  el("button", { type: "submit", text: "Upload teacher" }),
  el("div", { id: "upload-result", "aria-live": "polite" }));

const list = pagedTable({
  path: "/v1/teachers",
  caption: "Teachers, newest first",
  headings: ["Name", "Id", "Architecture", "Input", "Classes", "Parameters", "Size", "Created"],
  row: (t) => [
    el("a", { href: `/teachers/${t.id}`, text: t.name }), el("code", { text: t.id }), t.architecture,
    t.input_shape.join("×"), String(t.num_classes), number(t.parameter_count), bytes(t.size_bytes), when(t.created_at),
  ],
  onError: (error) => showError(message, error),
});
main.append(el("h1", { text: "Teachers" }), message, list.element, form);

let architectures = [];
function describeArchitecture() {
  const spec = architectures.find((a) => a.name === architecture.value);
  if (spec) document.getElementById("architecture-help").textContent = `${spec.description} Defaults: ${JSON.stringify(spec.kwargs)}; input ${spec.input_shape.join("×")}.`;
}
architecture.addEventListener("change", describeArchitecture);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = document.getElementById("upload-result");
  const data = new FormData(form);
  for (const name of ["architecture_kwargs", "name", "input_mean", "input_std"]) {
    if (!String(data.get(name) || "").trim()) data.delete(name);
  }
  if (!document.getElementById("teacher-metadata").files.length) data.delete("metadata");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  result.replaceChildren(el("p", { text: "Uploading and checking…" }));
  try {
    const teacher = await postForm("/v1/teachers", data);
    location.href = `/teachers/${teacher.id}`;
  } catch (error) {
    showError(result, error);
  } finally {
    button.disabled = false;
  }
});

async function start() {
  try {
    architectures = (await getJson("/v1/architectures")).items;
    architecture.replaceChildren(...architectures.map((a) => el("option", { value: a.name, text: a.name })));
    describeArchitecture();
  } catch (error) {
    showError(message, error);
  }
  await list.load();
}
start();
