// The workbench's shared pieces. Every call goes to the public API on this origin with the
// visitor's own key (the console's HttpOnly cookie, which the browser sends on same-origin
// requests), so a page can do nothing the key could not do itself. Text from the server is always
// written as text (textContent), never as HTML.

export async function api(method, url, body) {
  const init = {method, credentials: "same-origin", headers: {}};
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText || "HTTP " + response.status;
    const error = new Error(response.status === 401 ? message + " (log in again at /console/login)" : message);
    error.status = response.status;
    throw error;
  }
  return data;
}

// Every item of a cursor-paged list (the files and jobs APIs), newest first.
export async function listAll(url) {
  const items = [];
  let after = null;
  for (;;) {
    const page = await api("GET", url + (url.includes("?") ? "&" : "?") + "limit=100" +
                                  (after ? "&after=" + encodeURIComponent(after) : ""));
    items.push(...page.data);
    if (!page.has_more || !page.data.length) return items;
    after = page.last_id;
  }
}

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function setStatus(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

export function option(value, label, selected) {
  const node = element("option", null, label);
  node.value = value;
  node.selected = Boolean(selected);
  return node;
}

export function fileLabel(file) {
  return `${file.filename} (${file.id}, ${bytes(file.bytes)})`;
}

export function bytes(count) {
  if (count === null || count === undefined) return "";
  const units = ["bytes", "KB", "MB", "GB"];
  let value = count;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit ? `${value.toFixed(1)} ${units[unit]}` : `${value} bytes`;
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

export function number(value, digits = 4) {
  return typeof value === "number" ? Number(value.toPrecision(digits)).toString() : String(value);
}

export function query(name) {
  return new URLSearchParams(window.location.search).get(name);
}

export function ready(start) {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}
