// A job's metric series, fetched page by page (GET /v1/jobs/{id}/metrics) and kept by name.
import { getJson } from "./api.js";

export class MetricStore {
  constructor(jobId) {
    this.jobId = jobId;
    this.series = new Map(); // name -> [{step, value, time}] in step order
    this.afterStep = -1;
  }

  // Fetches what is new since the last call; true when anything arrived.
  async update() {
    let grew = false;
    for (;;) {
      const query = new URLSearchParams({ after_step: String(this.afterStep), limit: "5000" });
      const page = await getJson(`/v1/jobs/${encodeURIComponent(this.jobId)}/metrics?${query}`);
      for (const point of page.items) {
        if (!this.series.has(point.name)) this.series.set(point.name, []);
        this.series.get(point.name).push(point);
        this.afterStep = Math.max(this.afterStep, point.step);
        grew = true;
      }
      if (page.next_after_step === null) return grew;
      this.afterStep = page.next_after_step;
    }
  }

  // Everything again from the start (once a job ended: points written late at a step already
  // read would otherwise be missed).
  async reload() {
    this.series = new Map();
    this.afterStep = -1;
    await this.update();
  }

  start() {
    let first = Infinity;
    for (const points of this.series.values()) {
      if (points.length) first = Math.min(first, Date.parse(points[0].time));
    }
    return first;
  }
}
