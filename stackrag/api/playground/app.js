// The playground page: knowledge bases, document ingestion with progress, and a streamed RAG chat.
// Everything shown from the server (document text, ids, answers) goes through textContent, never HTML.

import { ApiError, discard, events, forgetKey, getJson, hasKey, onKeyNeeded, postJson, request } from "./api.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_EMBEDDING = "all-MiniLM-L6-v2";
const CHUNK_SIZE = 512; // the server's own default for rag-tool insert
const INSTRUCTIONS = "You are a helpful assistant. Answer from the documents you are given, briefly and clearly.";
const EXTENSION_TYPES = {
  md: "text/markdown", markdown: "text/markdown", rst: "text/x-rst", txt: "text/plain", html: "text/html",
  htm: "text/html", pdf: "application/pdf", json: "application/json", csv: "text/csv", yaml: "text/yaml",
  yml: "text/yaml", py: "text/x-python",
};

/** A DOM element; `text` becomes textContent, so nothing passed in is ever parsed as HTML. */
function el(tag, { cls, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

let toastTimer = 0;
function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 7000);
}

function report(error) {
  console.error(error);
  toast(error instanceof ApiError ? error.message : String(error.message ?? error));
}

// -- API key ------------------------------------------------------------------------------------

function askForKey(reason) {
  return new Promise((resolve, reject) => {
    const dialog = $("key-dialog");
    $("key-reason").textContent = reason;
    $("key-input").value = "";
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      dialog.close();
      resolve(key);
      $("forget-key").hidden = false;
    };
    dialog.oncancel = () => reject(new ApiError(401, "an API key is needed to use this server"));
    if (!dialog.open) dialog.showModal();
    $("key-input").focus();
  });
}

// -- models and knowledge bases -----------------------------------------------------------------

let chatModels = [];
let embeddingDims = {}; // embedding model id -> its dimension, as /v1/models reports it

function fillSelect(select, values, chosen, empty) {
  select.replaceChildren();
  if (!values.length) {
    select.append(el("option", { text: empty, attrs: { value: "" } }));
    select.disabled = true;
    return;
  }
  select.disabled = false;
  for (const { value, label } of values) select.append(el("option", { text: label, attrs: { value } }));
  select.value = values.some((v) => v.value === chosen) ? chosen : values[0].value;
}

async function loadModels() {
  const models = (await getJson("/v1/models")).data;
  chatModels = models.filter((m) => m.model_type === "llm");
  const embedding = models.filter((m) => m.model_type === "embedding");
  fillSelect($("model"), chatModels.map((m) => ({ value: m.identifier, label: m.identifier })),
    localStorage.getItem("stackrag.model"), "no chat model");
  fillSelect($("embedding-model"), embedding.map((m) => ({
    value: m.identifier, label: `${m.identifier} (${m.metadata?.embedding_dimension ?? "?"} dims)`,
  })), DEFAULT_EMBEDDING, "no embedding model");
  embeddingDims = Object.fromEntries(embedding.map((m) => [m.identifier, m.metadata?.embedding_dimension]));
  updateSendState();
}

let vectorDbs = [];

async function loadVectorDbs(select) {
  vectorDbs = (await getJson("/v1/vector-dbs")).data;
  const chosen = select ?? localStorage.getItem("stackrag.vectorDb");
  fillSelect($("vector-db"), vectorDbs.map((db) => ({ value: db.identifier, label: db.vector_db_name || db.identifier })),
    chosen, "none yet: create one below");
  if (!vectorDbs.length) $("new-db-box").open = true;
  vectorDbChanged();
}

function currentDb() {
  return $("vector-db").value || null;
}

function vectorDbChanged() {
  const db = vectorDbs.find((d) => d.identifier === currentDb());
  $("db-info").textContent = db ? `${db.embedding_model} · ${db.embedding_dimension} dims · ${db.provider_id}` : "";
  if (db) localStorage.setItem("stackrag.vectorDb", db.identifier);
  newChat();
}

async function createVectorDb(event) {
  event.preventDefault();
  const id = $("new-db-id").value.trim();
  const model = $("embedding-model").value;
  if (!id || !model) return;
  try {
    await postJson("/v1/vector-dbs",
      { vector_db_id: id, embedding_model: model, embedding_dimension: embeddingDims[model] ?? 384 });
    $("new-db-id").value = "";
    $("new-db-box").open = false;
    await loadVectorDbs(id);
  } catch (error) {
    report(error);
  }
}

// -- ingestion ----------------------------------------------------------------------------------

const queue = [];
let ingesting = false;
const batch = { total: 0, done: 0, failed: 0, chunks: 0, started: 0 };

function mimeOf(file) {
  const extension = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  return EXTENSION_TYPES[extension] || file.type || "text/plain";
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    // A data: URL's payload after the comma is the base64 of the bytes, whatever type the browser guessed.
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] ?? "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function fileDocument(file) {
  return async () => {
    const mime = mimeOf(file);
    return {
      document_id: file.name, content: `data:${mime};base64,${await readBase64(file)}`, mime_type: mime,
      metadata: { source: file.name },
    };
  };
}

function enqueue(items) {
  const db = currentDb();
  if (!db) {
    toast("Create or pick a knowledge base first.");
    return;
  }
  if (!ingesting) {
    Object.assign(batch, { total: 0, done: 0, failed: 0, chunks: 0, started: performance.now() });
    $("ingest-list").replaceChildren();
  }
  for (const { name, build } of items) {
    const status = el("span", { cls: "status", text: "queued" });
    const label = el("span", { cls: "name", text: name, attrs: { title: name } });
    const row = el("li", { cls: "doc queued", attrs: { "data-doc": name } }, [label, status]);
    $("ingest-list").append(row);
    queue.push({ db, name, build, row, status });
    batch.total += 1;
  }
  $("ingest").hidden = false;
  showProgress();
  if (!ingesting) runQueue();
}

function setState(item, state, text) {
  item.row.className = `doc ${state}`;
  item.status.textContent = text;
}

// One document per request: each gets its own status, and one bad URL fails alone.
async function runQueue() {
  ingesting = true;
  while (queue.length) {
    const item = queue.shift();
    const started = performance.now();
    try {
      setState(item, "working", "reading…");
      showProgress(true);
      const document = await item.build();
      setState(item, "working", "chunking and embedding…");
      const { headers } = await postJson("/v1/tool-runtime/rag-tool/insert",
        { vector_db_id: item.db, documents: [document], chunk_size_in_tokens: CHUNK_SIZE });
      const chunks = Number(headers.get("x-stackrag-chunks") ?? 0);
      batch.chunks += chunks;
      batch.done += 1;
      setState(item, "done", `${chunks} chunk${chunks === 1 ? "" : "s"} · ${((performance.now() - started) / 1000).toFixed(1)} s`);
    } catch (error) {
      batch.failed += 1;
      setState(item, "failed", "failed");
      item.row.append(el("p", { cls: "error small", text: error.message ?? String(error) }));
    }
    showProgress(queue.length > 0);
  }
  ingesting = false;
  showProgress(false);
}

function showProgress(active = ingesting) {
  const finished = batch.done + batch.failed;
  const percent = batch.total ? Math.round((finished / batch.total) * 100) : 0;
  const bar = $("ingest").querySelector(".bar");
  bar.setAttribute("aria-valuenow", String(percent));
  bar.classList.toggle("active", active);
  $("bar-fill").style.width = `${percent}%`;
  const seconds = ((performance.now() - batch.started) / 1000).toFixed(1);
  const failed = batch.failed ? ` · ${batch.failed} failed` : "";
  $("ingest-summary").textContent = finished < batch.total
    ? `Adding ${finished + 1} of ${batch.total} · ${batch.chunks} chunks so far${failed}`
    : `${batch.done} of ${batch.total} documents added · ${batch.chunks} chunks in ${seconds} s${failed}`;
  $("ingest").dataset.state = finished < batch.total ? "running" : "done";
}

// -- chat ---------------------------------------------------------------------------------------

let agent = null; // {id, db, model}: one per knowledge base and chat model
let sessionId = null; // a new chat is a new session of the same agent
let streaming = null; // the AbortController of the turn under way

function newChat() {
  streaming?.abort();
  sessionId = null;
  $("log").replaceChildren($("empty"));
  $("empty").hidden = false;
  updateSendState();
}

function updateSendState() {
  const send = $("send");
  send.textContent = streaming ? "Stop" : "Send";
  send.disabled = !streaming && (!currentDb() || !$("model").value);
}

async function ensureSession() {
  const db = currentDb();
  const model = $("model").value;
  if (!agent || agent.db !== db || agent.model !== model) {
    // Agents are stored by the server; the one for the previous choice is not needed any more.
    if (agent) discard(`/v1/agents/${encodeURIComponent(agent.id)}`);
    const agentConfig = {
      model, instructions: INSTRUCTIONS, enable_session_persistence: false,
      toolgroups: [{ name: "builtin::rag/knowledge_search", args: { vector_db_ids: [db] } }],
      sampling_params: { strategy: { type: "greedy" }, max_tokens: 512 },
    };
    const created = (await postJson("/v1/agents", { agent_config: agentConfig })).data;
    agent = { id: created.agent_id, db, model };
    sessionId = null;
  }
  if (!sessionId) {
    sessionId = (await postJson(`/v1/agents/${encodeURIComponent(agent.id)}/session`,
      { session_name: "playground" })).data.session_id;
  }
  return { agentId: agent.id, sessionId };
}

function scrollToEnd() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

// Follow the answer as it grows, unless the user has scrolled up to read something.
function nearEnd() {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((item) => (item.type === "text" ? item.text : "")).join("");
  return content?.text ?? "";
}

function isLink(value) {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:";
  } catch {
    return false;
  }
}

function sourceList(metadata) {
  const ids = metadata?.document_ids ?? [];
  const list = el("ol", { cls: "sources" });
  ids.forEach((id, i) => {
    // Cosine similarity when the server gives it (hybrid scores are rank-fusion values near 0.03).
    const similarity = metadata.similarities?.[i];
    const score = metadata.scores?.[i];
    const label = typeof similarity === "number" ? `similarity ${similarity.toFixed(2)}`
      : typeof score === "number" ? `score ${score.toFixed(3)}` : "";
    const summary = el("summary", {}, [
      el("span", { cls: "n", text: String(i + 1) }),
      el("span", { cls: "doc-id", text: id, attrs: { title: id } }),
      el("span", { cls: "score", text: label }),
    ]);
    const body = [el("pre", { cls: "chunk", text: metadata.chunks?.[i] ?? "" })];
    if (isLink(id)) {
      // rel=noopener noreferrer: the opened page gets no handle on this one and no Referer.
      body.unshift(el("a", { text: "Open document ↗", attrs: { href: id, target: "_blank", rel: "noopener noreferrer" } }));
    }
    list.append(el("li", { cls: "source" }, [el("details", {}, [summary, ...body])]));
  });
  return list;
}

// The answer again, each sentence the server checked wrapped: supported ones carry the numbers of
// their sources (drawn by CSS, so the text stays the answer's), unsupported ones are marked.
// Offsets are Python's code points, hence Array.from rather than UTF-16 string indices.
function checkedAnswer(text, citations) {
  const chars = Array.from(text);
  const nodes = [];
  let at = 0;
  for (const sentence of citations) {
    if (sentence.start < at || sentence.end > chars.length) continue;
    nodes.push(chars.slice(at, sentence.start).join(""));
    const words = chars.slice(sentence.start, sentence.end).join("");
    if (sentence.supported) {
      const numbers = [...new Set(sentence.sources.map((s) => s.passage + 1))].sort((a, b) => a - b).join(",");
      const documents = [...new Set(sentence.sources.map((s) => s.document_id))].join(", ");
      nodes.push(el("span", { cls: "supported", text: words, attrs: { "data-cite": numbers, title: `Supported by ${documents}` } }));
    } else {
      nodes.push(el("mark", { cls: "unsupported", text: words, attrs: { title: "No retrieved passage supports this sentence" } }));
    }
    at = sentence.end;
  }
  nodes.push(chars.slice(at).join(""));
  return nodes;
}

async function ask(question) {
  const db = currentDb();
  $("empty").hidden = true;
  $("log").append(el("article", { cls: "msg user" }, [el("p", { text: question })]));
  const status = el("p", { cls: "step muted small", text: "Starting…" });
  const answer = el("div", { cls: "answer-text" });
  const sources = el("section", { cls: "citations", attrs: { hidden: "" } });
  const message = el("article", { cls: "msg bot", attrs: { "data-state": "streaming" } }, [status, answer, sources]);
  $("log").append(message);
  scrollToEnd();
  streaming = new AbortController();
  updateSendState();
  try {
    const ids = await ensureSession();
    const response = await request(
      `/v1/agents/${encodeURIComponent(ids.agentId)}/session/${encodeURIComponent(ids.sessionId)}/turn`,
      { method: "POST", body: { messages: [{ role: "user", content: question }], stream: true }, signal: streaming.signal });
    for await (const payload of events(response)) {
      const follow = nearEnd();
      handleEvent(payload, { status, answer, sources, db });
      if (follow) scrollToEnd();
    }
    message.dataset.state = "done";
    status.remove();
  } catch (error) {
    message.dataset.state = error.name === "AbortError" ? "stopped" : "failed";
    status.textContent = error.name === "AbortError" ? "Stopped." : `Error: ${error.message ?? error}`;
    status.className = error.name === "AbortError" ? "step muted small" : "step error small";
  } finally {
    streaming = null;
    updateSendState();
  }
}

function handleEvent(payload, { status, answer, sources, db }) {
  const { event_type: type, step_type: step } = payload;
  if (type === "step_start" && step === "tool_execution") status.textContent = `Searching ${db}…`;
  if (type === "step_start" && step === "inference" && !sources.hidden) status.textContent = "Writing the answer…";
  if (type === "step_progress" && step === "inference" && payload.delta?.type === "text") {
    answer.textContent += payload.delta.text;
  }
  if (type === "step_complete" && step === "tool_execution") {
    const responses = payload.step_details?.tool_responses ?? [];
    const found = responses.filter((r) => r.metadata?.document_ids?.length);
    sources.replaceChildren(el("h3", { text: found.length ? "Sources" : "No matching passages in the documents" }),
      ...found.map((r) => sourceList(r.metadata)));
    sources.hidden = false;
    status.textContent = "Writing the answer…";
  }
  if (type === "turn_complete") {
    // The whole answer, in case a delta was lost or the model's output was post-processed.
    const final = textOf(payload.turn?.output_message?.content);
    if (final) answer.textContent = final;
    const citations = payload.turn?.citations ?? [];
    if (final && citations.length) {
      answer.replaceChildren(...checkedAnswer(final, citations));
      const supported = citations.filter((c) => c.supported).length;
      sources.append(el("p", { cls: "check-note small muted",
        text: `${supported} of ${citations.length} sentences supported by these sources; underlined ones by none.` }));
    }
    if (!answer.textContent) answer.textContent = "(no answer)";
  }
}

// -- wiring -------------------------------------------------------------------------------------

function selectTab(name) {
  for (const tab of document.querySelectorAll("[data-tab]")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  for (const pane of document.querySelectorAll("[data-pane]")) pane.hidden = pane.dataset.pane !== name;
}

function wire() {
  onKeyNeeded(askForKey);
  $("forget-key").hidden = !hasKey();
  $("forget-key").addEventListener("click", () => {
    forgetKey();
    $("forget-key").hidden = true;
    toast("API key forgotten for this tab.");
  });
  $("model").addEventListener("change", () => { localStorage.setItem("stackrag.model", $("model").value); newChat(); });
  $("vector-db").addEventListener("change", vectorDbChanged);
  $("new-db").addEventListener("submit", createVectorDb);
  for (const tab of document.querySelectorAll("[data-tab]")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));

  $("file-input").addEventListener("change", (event) => {
    enqueue([...event.target.files].map((file) => ({ name: file.name, build: fileDocument(file) })));
    event.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    enqueue([...event.dataTransfer.files].map((file) => ({ name: file.name, build: fileDocument(file) })));
  });
  $("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const urls = $("url-input").value.split(/\s+/).filter(Boolean);
    const bad = urls.filter((u) => !isLink(u));
    if (bad.length) return toast(`Not an http(s) URL: ${bad[0]}`);
    // The URL is the document id, so a citation can link back to it.
    enqueue(urls.map((url) => ({
      name: url, build: async () => ({ document_id: url, content: url, metadata: { source: url } }),
    })));
    $("url-input").value = "";
  });
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text-input").value;
    if (!text.trim()) return toast("Paste some text first.");
    const name = $("text-title").value.trim() || `text-${new Date().toISOString().slice(0, 19)}`;
    enqueue([{
      name, build: async () => ({ document_id: name, content: text, mime_type: "text/plain", metadata: { source: name } }),
    }]);
    $("text-input").value = "";
    $("text-title").value = "";
  });

  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    if (streaming) return streaming.abort();
    const question = $("question").value.trim();
    if (!question || $("send").disabled) return;
    $("question").value = "";
    ask(question);
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask").requestSubmit();
    }
  });
  $("new-chat").addEventListener("click", newChat);
  window.addEventListener("pagehide", () => {
    if (!agent) return;
    discard(`/v1/agents/${encodeURIComponent(agent.id)}`);
    agent = null; // back from the back/forward cache, the next question makes a new one
  });
}

async function main() {
  wire();
  // Models first: a 401 here asks for the key once, and the vector DB list then uses it.
  try {
    await loadModels();
    await loadVectorDbs();
  } catch (error) {
    report(error);
  }
}

main();
