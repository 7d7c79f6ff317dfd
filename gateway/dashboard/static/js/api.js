// The gateway's JSON API as the dashboard uses it: the admin key lives in sessionStorage only
// and goes out as a bearer token; Server-Sent Events are read over fetch, because EventSource
// cannot send an Authorization header.

const KEY_ITEM = "mgw.adminKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function adminKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function setAdminKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
}

export function forgetAdminKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

function headers(extra = {}) {
  const key = adminKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

/** A JSON call; throws ApiError (with the gateway's own message) on a non-2xx answer. */
export async function call(method, path, body = undefined) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => call("GET", path);

/** A binary resource (a study's figure) as an object URL the page can show. */
export async function blobUrl(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return URL.createObjectURL(await response.blob());
}

/** Follow an SSE endpoint: calls onEvent(type, data, id) until the stream ends or
 * signal aborts. Resolves when the server closes the stream. */
export async function follow(path, onEvent, signal) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a comment: the server's keep-alive ping
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
      if (data.length) {
        let parsed = data.join("\n");
        try {
          parsed = JSON.parse(parsed);
        } catch (_) {
          // leave it as text
        }
        onEvent(type, parsed, id);
      }
    }
  }
}
