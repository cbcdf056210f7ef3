// "/datasets": the tenant's labelled sets in cursor pages, and the upload form.
import { postForm } from "./api.js";
import { bytes, el, number, showError, when } from "./format.js";
import { layout } from "./layout.js";
import { pagedTable } from "./paged.js";

layout("/datasets");
const main = document.getElementById("main");
const message = el("div", { "aria-live": "polite" });
const list = pagedTable({
  path: "/v1/datasets",
  caption: "Datasets, newest first",
  headings: ["Name", "Id", "Examples", "Image", "Pixels", "Classes", "Size", "Created"],
  row: (d) => [
    d.name, el("code", { text: d.id }), number(d.num_examples), d.image_shape.join("×"), d.pixel_dtype,
    String(Object.keys(d.class_counts).length), bytes(d.size_bytes), when(d.created_at),
  ],
  onError: (error) => showError(message, error),
});
const result = el("div", { id: "dataset-result", "aria-live": "polite" });
const form = el("form", { id: "upload-dataset", class: "card" },
  el("h2", { text: "Upload a labelled set" }),
  el("p", { class: "note", text: "For evaluation reports and few-shot fine-tuning only; data-free training never reads it." }),
  el("div", { class: "field" }, el("label", { for: "dataset-file", text: "File (npz or safetensors: images, labels)" }),
    el("input", { id: "dataset-file", name: "file", type: "file", required: true, accept: ".npz,.safetensors" }),
    el("small", { text: "uint8 images are pixels (scaled, then normalised with the teacher's mean/std); float images are used as given" })),
  el("div", { class: "field" }, el("label", { for: "dataset-name", text: "Name" }),
    el("input", { id: "dataset-name", name: "name", maxlength: "200" }), el("small", { text: "defaults to the file name" })),
  el("button", { type: "submit", text: "Upload dataset" }), result);
main.append(el("h1", { text: "Datasets" }), message, list.element, form);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  if (!String(data.get("name") || "").trim()) data.delete("name");
  result.replaceChildren(el("p", { text: "Uploading and checking…" }));
  try {
    const dataset = await postForm("/v1/datasets", data);
    result.replaceChildren(el("p", { role: "status", text: `Stored ${dataset.name} as ${dataset.id} (${dataset.num_examples} examples).` }));
    form.reset();
    await list.load();
  } catch (error) {
    showError(result, error);
  }
});
list.load();
