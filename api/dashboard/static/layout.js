// What every page shares: the navigation, the key dialog, and the key's status.
import { forgetKey, storedKey } from "./api.js";
import { el } from "./format.js";

const LINKS = [
  ["/", "Jobs"],
  ["/teachers", "Teachers"],
  ["/datasets", "Datasets"],
  ["/compare", "Compare"],
  ["/docs", "API docs"],
];

function keyStatus() {
  const key = storedKey();
  if (!key) return el("span", { class: "key-status", text: "no API key" });
  return el(
    "span",
    { class: "key-status" },
    `key …${key.slice(-4)} `,
    el("button", {
      type: "button",
      class: "link",
      text: "Forget key",
      onclick: () => {
        forgetKey();
        location.reload();
      },
    }),
  );
}

function keyDialog() {
  return el(
    "dialog",
    { id: "key-dialog", "aria-labelledby": "key-title" },
    el(
      "form",
      { method: "dialog" },
      el("h2", { id: "key-title", text: "API key needed" }),
      el("p", { id: "key-message", class: "error", role: "alert" }),
      el("label", { for: "key-input", text: "API key (kept for this browser session only)" }),
      el("input", { id: "key-input", type: "password", autocomplete: "off", required: true }),
      el("button", { type: "submit", text: "Use this key" }),
    ),
  );
}

export function layout(current) {
  const nav = el(
    "nav",
    { "aria-label": "dashboard" },
    LINKS.map(([href, text]) =>
      el("a", { href, text, "aria-current": href === current ? "page" : null }),
    ),
  );
  const status = el("div", { id: "key-area" }, keyStatus());
  document.addEventListener("dfkd-key-changed", () => status.replaceChildren(keyStatus()));
  const header = el("header", { class: "top" }, el("a", { href: "/", class: "brand", text: "dfkd" }), nav, status);
  const dialog = keyDialog();
  // without a key nothing can be shown: Escape does not dismiss the dialog
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  const skip = document.querySelector(".skip");
  if (skip) skip.after(header);
  else document.body.prepend(header);
  document.body.append(dialog);
}

// Calls fn every `seconds` (skipped while the tab is hidden) until it returns false.
export function every(seconds, fn) {
  const tick = async () => {
    let again = true;
    try {
      if (!document.hidden) again = await fn();
    } finally {
      if (again !== false) setTimeout(tick, seconds * 1000);
    }
  };
  setTimeout(tick, seconds * 1000);
}
