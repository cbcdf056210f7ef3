// Small formatting helpers shared by the pages.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

export function bytes(count) {
  if (count === null || count === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function number(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e7) return value.toLocaleString("en");
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e7)) return value.toExponential(3);
  return value.toPrecision(4).replace(/\.?0+$/, "");
}

export function percent(fraction) {
  return fraction === null || fraction === undefined ? "–" : `${(fraction * 100).toFixed(1)}%`;
}

export function when(isoTime) {
  if (!isoTime) return "–";
  const date = new Date(isoTime);
  return date.toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" });
}

export const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}`, text: status });
}

// "120 / 300 · 40.0% · ETA 1 min 02 s" and a <progress> bar, for a job's progress object.
export function progressCell(job) {
  const p = job.progress;
  const bar = el("progress", {
    max: "1",
    value: String(p.fraction ?? 0),
    "aria-label": `progress of ${job.id}`,
  });
  const parts = [`${p.iteration}${p.total ? ` / ${p.total}` : ""}`, percent(p.fraction)];
  if (!FINAL.has(job.status) && p.eta_seconds !== null) parts.push(`ETA ${duration(p.eta_seconds)}`);
  return el("div", { class: "progress" }, bar, el("span", { text: parts.join(" · ") }));
}

export function errorBox(error) {
  const text = error.code ? `${error.message} (${error.code})` : String(error.message || error);
  return el("p", { class: "error", role: "alert", text });
}

export function showError(container, error) {
  container.replaceChildren(errorBox(error));
}
