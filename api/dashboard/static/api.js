// Calls to the dfkd API from the dashboard: the key, errors, and files fetched with the key.
//
// Where the deployment requires keys, the first 401 opens the key dialog (the API's own message
// shown), the key is kept in sessionStorage for this browser session and sent as a bearer token,
// and the request is made again. Everything a page shows comes through here, so a tenant sees
// exactly what its key sees.

const KEY_ITEM = "dfkd-api-key";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

let pendingKey = null; // one dialog for every request that met a 401 at the same time

function askForKey(message) {
  if (pendingKey) return pendingKey;
  const dialog = document.getElementById("key-dialog");
  const form = dialog.querySelector("form");
  const input = dialog.querySelector("#key-input");
  dialog.querySelector("#key-message").textContent = message;
  input.value = "";
  pendingKey = new Promise((resolve) => {
    form.addEventListener(
      "submit",
      (event) => {
        event.preventDefault();
        sessionStorage.setItem(KEY_ITEM, input.value.trim());
        dialog.close();
        pendingKey = null;
        document.dispatchEvent(new CustomEvent("dfkd-key-changed"));
        resolve();
      },
      { once: true },
    );
  });
  dialog.showModal();
  input.focus();
  return pendingKey;
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not the API's JSON error (a proxy's page): keep the status line
  }
  return new ApiError(response.status, code, message);
}

// fetch() with the key; a 401 asks for a key and tries again; other errors throw ApiError.
export async function request(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = storedKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) {
      const error = await errorOf(response);
      await askForKey(`${error.message} (${error.code})`);
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path, body) {
  const response = await request(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

export async function postForm(path, form) {
  return (await request(path, { method: "POST", body: form })).json();
}

// An object URL for a file behind the key (an <img> cannot send a bearer token).
export async function objectUrl(path) {
  const response = await request(path);
  return URL.createObjectURL(await response.blob());
}

function attachmentName(response, fallback) {
  const header = response.headers.get("content-disposition") || "";
  const match = header.match(/filename="([^"]+)"/);
  return match ? match[1] : fallback;
}

// Saves a file behind the key under the name the API gives it.
export async function download(path, fallbackName) {
  const response = await request(path);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = attachmentName(response, fallbackName);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return link.download;
}

// Every item of a cursor-paged list (used for small lists: architectures' pickers, datasets).
export async function allPages(path, limit = 200) {
  const items = [];
  let after = null;
  do {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after) query.set("after", after);
    const page = await getJson(`${path}?${query}`);
    items.push(...page.items);
    after = page.has_more ? page.next_cursor : null;
  } while (after);
  return items;
}
