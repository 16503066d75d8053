// Talking to the server: JSON calls and the agent's event stream, with the API key when one is needed.
// The key lives in sessionStorage (this tab only) and travels in the Authorization header, never in a URL.

const KEY_STORE = "stackrag.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let askForKey = async (_reason) => { throw new ApiError(401, "this server needs an API key"); };
let pendingKey = null; // one prompt for all the calls that hit a 401 at the same time

/** The page supplies how to ask the user for a key: (reason) => Promise<string>. */
export function onKeyNeeded(prompt) {
  askForKey = prompt;
}

export function hasKey() {
  return Boolean(sessionStorage.getItem(KEY_STORE));
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORE);
}

function promptOnce(reason) {
  pendingKey ??= askForKey(reason).then((key) => {
    sessionStorage.setItem(KEY_STORE, key);
    return key;
  }).finally(() => { pendingKey = null; });
  return pendingKey;
}

/** fetch() against the API; on 401 asks for a key and tries again. Resolves to an ok Response. */
export async function request(path, { method = "GET", body, signal } = {}) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      const message = await errorMessage(response);
      if (key) sessionStorage.removeItem(KEY_STORE);
      await promptOnce(key ? `That key was refused: ${message}` : message);
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
    return response;
  }
}

/** A DELETE nobody waits for (it may outlive the page): no retry, no key prompt, errors ignored. */
export function discard(path) {
  const key = sessionStorage.getItem(KEY_STORE);
  fetch(path, { method: "DELETE", keepalive: true, headers: key ? { Authorization: `Bearer ${key}` } : {} })
    .catch(() => {});
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path, body) {
  const response = await request(path, { method: "POST", body });
  const text = await response.text();
  return { data: text ? JSON.parse(text) : null, headers: response.headers };
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    return body.error?.message ?? JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

/** The payloads of a Llama Stack SSE stream (`data: {"event": {"payload": ...}}` lines), as they arrive. */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data || data === "[DONE]") continue;
      const parsed = JSON.parse(data);
      // The server reports a failure mid-stream as a data line of its own, then ends the stream.
      if (parsed.error) throw new ApiError(parsed.error.status_code ?? 500, parsed.error.message);
      yield parsed.event.payload;
    }
  }
}
