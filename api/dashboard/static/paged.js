// A table over one of the API's cursor-paged lists, with Newer / Older buttons.
import { getJson } from "./api.js";
import { el } from "./format.js";

export function pagedTable({ path, caption, headings, row, onError, query = {}, limit = 20 }) {
  const body = el("tbody");
  const newer = el("button", { type: "button", text: "← Newer" });
  const older = el("button", { type: "button", text: "Older →" });
  const element = el("div", {},
    el("div", { class: "table-wrap" }, el("table", {},
      el("caption", { class: "visually-hidden", text: caption }),
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col", text: h })))),
      body)),
    el("div", { class: "pager" }, newer, older));
  const cursors = [];
  let page = null;

  async function load() {
    const params = new URLSearchParams({ ...query, limit: String(limit) });
    if (cursors.length) params.set("after", cursors.at(-1));
    try {
      page = await getJson(`${path}?${params}`);
    } catch (error) {
      onError(error);
      return;
    }
    body.replaceChildren(...page.items.map((item) => el("tr", {}, row(item).map((cell) => el("td", {}, cell)))));
    if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: String(headings.length), text: "None yet." })));
    newer.disabled = cursors.length === 0;
    older.disabled = !page.has_more;
  }
  older.addEventListener("click", () => {
    cursors.push(page.next_cursor);
    load();
  });
  newer.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  return { element, load };
}
