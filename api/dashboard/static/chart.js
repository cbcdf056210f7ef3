// A small SVG line chart: several series on shared axes, nice ticks, a legend. No library.

const SVG = "http://www.w3.org/2000/svg";
// Okabe & Ito's colour-blind-safe palette
export const COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
const WIDTH = 480;
const HEIGHT = 220;
const MARGIN = { top: 12, right: 14, bottom: 34, left: 58 };

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

// About `count` round tick values covering [low, high].
export function ticks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const values = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) {
    values.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return values;
}

// A tick's text with as many digits as the tick spacing needs (0.00196 and 0.00198 stay apart).
function label(value, step) {
  const magnitude = Math.abs(value);
  if (magnitude >= 1e5 || (magnitude !== 0 && step < 1e-4)) {
    const digits = Math.floor(Math.log10(magnitude)) - Math.floor(Math.log10(step));
    return value.toExponential(Math.min(6, Math.max(1, digits)));
  }
  return value.toFixed(Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)));
}

function spacing(values) {
  return values.length > 1 ? values[1] - values[0] : Math.abs(values[0]) || 1;
}

function extent(values) {
  let low = Infinity;
  let high = -Infinity;
  for (const v of values) {
    if (v < low) low = v;
    if (v > high) high = v;
  }
  if (low === high) return [low - (Math.abs(low) || 1) * 0.05, high + (Math.abs(high) || 1) * 0.05];
  return [low, high];
}

// series: [{label, points: [[x, y], ...]}]; returns a <figure> with the SVG and a legend.
export function lineChart({ title, series, xLabel }) {
  const finite = series.map((s) => ({
    ...s,
    points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)),
  }));
  const all = finite.flatMap((s) => s.points);
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": `${title}: ${finite.map((s) => `${s.label}, ${s.points.length} points`).join("; ")}`,
  });
  figure.append(caption, root);
  if (!all.length) {
    root.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "empty" }, "no points yet"));
    return figure;
  }
  const [x0, x1] = extent(all.map((p) => p[0]));
  const [y0, y1] = extent(all.map((p) => p[1]));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * plotW;
  const sy = (y) => MARGIN.top + plotH - ((y - y0) / (y1 - y0)) * plotH;

  const axes = svg("g", { class: "axes" });
  const yTicks = ticks(y0, y1, 4);
  for (const t of yTicks) {
    axes.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: sy(t), y2: sy(t), class: "grid" }));
    axes.append(svg("text", { x: MARGIN.left - 6, y: sy(t) + 4, "text-anchor": "end" }, label(t, spacing(yTicks))));
  }
  const xTicks = ticks(x0, x1, 5);
  for (const t of xTicks) {
    axes.append(svg("line", { x1: sx(t), x2: sx(t), y1: HEIGHT - MARGIN.bottom, y2: HEIGHT - MARGIN.bottom + 4, class: "tick" }));
    axes.append(svg("text", { x: sx(t), y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" }, label(t, spacing(xTicks))));
  }
  axes.append(svg("text", { x: MARGIN.left + plotW / 2, y: HEIGHT - 4, "text-anchor": "middle", class: "axis-label" }, xLabel));
  axes.append(svg("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "frame" }));
  root.append(axes);

  finite.forEach((s, index) => {
    const colour = COLOURS[index % COLOURS.length];
    const group = svg("g", { class: "series" });
    group.append(svg("title", {}, s.label));
    if (s.points.length === 1) {
      const [[x, y]] = s.points;
      group.append(svg("circle", { cx: sx(x), cy: sy(y), r: 3, fill: colour }));
    } else {
      const d = s.points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
      group.append(svg("path", { d, stroke: colour, fill: "none", "stroke-width": 1.8 }));
    }
    root.append(group);
  });

  if (finite.length > 1 || finite[0].label !== title) {
    const legend = document.createElement("ul");
    legend.className = "legend";
    finite.forEach((s, index) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLOURS[index % COLOURS.length];
      item.append(swatch, s.label);
      legend.append(item);
    });
    figure.append(legend);
  }
  return figure;
}

// One metric's points as [x, y]: by step, or by seconds since `start` (ms) when wall is true
// (the time a point was stored: workers store them in batches, so wall time climbs in stairs).
export function metricPoints(points, wall, start) {
  if (!wall) return points.map((p) => [p.step, p.value]);
  return points.map((p) => [(Date.parse(p.time) - start) / 1000, p.value]).sort((a, b) => a[0] - b[0]);
}
