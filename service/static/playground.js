// The playground: a chat with the served teams that people keep open, over the public API only:
// GET /v1/models; a conversation (POST /v1/conversations) per chat, each message a streamed
// response in it (POST /v1/responses with `conversation`), so the chat survives a reload (its
// items: GET /v1/conversations/{id}/items). The team's activity (one reasoning item per agent
// turn, with its structured events) shows as it streams and folds once the answer arrives; the
// answer is Markdown, rendered by the vendored marked and sanitized by DOMPurify (static/lib,
// served by the service) before it enters the page. Everything else is inserted as text.
// localStorage keeps only the list of this browser's conversations (ids, titles, models); the API
// key stays in the tab's sessionStorage. Plain JavaScript, no build step.
"use strict";

const STORAGE = {
  key: "autogen-playground.api-key",
  model: "autogen-playground.model",
  conversations: "autogen-playground.conversations",
  current: "autogen-playground.conversation",
};
const PREFERRED_MODEL = "demo-team";
const MAX_KEPT_CONVERSATIONS = 50;
const MAX_FORK_ITEMS = 20; // what POST /v1/conversations takes in one call

const ui = {
  model: document.getElementById("model"),
  modelDescription: document.getElementById("model-description"),
  reloadModels: document.getElementById("reload-models"),
  apiKey: document.getElementById("api-key"),
  settingsError: document.getElementById("settings-error"),
  conversation: document.getElementById("conversation"),
  emptyHint: document.getElementById("empty-hint"),
  status: document.getElementById("status"),
  composer: document.getElementById("composer"),
  message: document.getElementById("message"),
  send: document.getElementById("send"),
  stop: document.getElementById("stop"),
  newChat: document.getElementById("new-chat"),
  history: document.getElementById("history"),
  historyCount: document.getElementById("history-count"),
  conversations: document.getElementById("conversations"),
};

const state = {
  turns: [], // the Turn views of the open chat, in order
  conversationId: null, // the open chat's conversation on the service (null: not created yet)
  conversationModel: null, // the team it belongs to (a conversation keeps its team)
  models: new Map(), // id -> model card
  controller: null, // AbortController of the running request
};

// ---- small DOM helpers ---------------------------------------------------------------------

function h(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showSettingsError(text) {
  ui.settingsError.textContent = text;
  ui.settingsError.hidden = !text;
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

let scrollPending = false;
function keepScrolledToEnd() {
  // Follow the stream only while the reader is at the end of the page; once per frame.
  const atEnd = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
  if (!atEnd || scrollPending) return;
  scrollPending = true;
  requestAnimationFrame(() => {
    scrollPending = false;
    window.scrollTo(0, document.documentElement.scrollHeight);
  });
}

// ---- Markdown: rendered by marked, sanitized by DOMPurify, then (only then) put in the page ----

const PURIFY = {
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "svg", "math"],
  FORBID_ATTR: ["style"],
};
const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (char) => HTML_ESCAPES[char]);
}
// HTML written in an answer is shown as text, as chat apps do: it never reaches the page as markup,
// and DOMPurify (the second line) only ever sees what marked made from Markdown.
if (window.marked) {
  window.marked.use({ renderer: { html: (token) => escapeHtml(token.text || token.raw || "") } });
}
if (window.DOMPurify) {
  window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

function renderMarkdown(target, text) {
  if (window.marked && window.DOMPurify) {
    const html = window.marked.parse(text.trimEnd(), { gfm: true, breaks: true });
    target.innerHTML = window.DOMPurify.sanitize(html, PURIFY);
  } else {
    target.textContent = text; // the libraries did not load: the text, as text
  }
}

// ---- the API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, requestId) {
    super(message);
    this.name = "ApiError";
    this.requestId = requestId || "";
  }
}

function requestHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = ui.apiKey.value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

// A status code, in words a person can act on; `detail` is the service's own message.
function describeStatus(status, detail, retryAfter) {
  const retry = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again in a moment.";
  switch (status) {
    case 400:
    case 422:
      return `The service refused the request: ${detail || "it is not valid."}`;
    case 401:
      return "The service needs an API key, or the key entered is not valid. Enter a valid key in “API key” and try again.";
    case 403:
      return "This API key is not allowed to do that.";
    case 404:
      return `${detail || "Not found."} Reload the list of teams and pick one that is served.`;
    case 413:
      return "The conversation is larger than the service accepts in one request. Start a new chat.";
    case 429:
      return `Too many requests: the service's rate limit was reached.${retry}`;
    case 502:
      return "The language model behind the team failed to answer. Try again later.";
    case 503:
      return `The service is busy (all its team slots are taken) or is restarting.${retry}`;
    case 504:
      return "The team did not finish within the service's time limit and was stopped.";
    default:
      if (status >= 500) return "The service had an internal error. Try again; if it persists, give its operators the request id shown here.";
      return `The service answered HTTP ${status}${detail ? `: ${detail}` : "."}`;
  }
}

async function errorFrom(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = (body && body.error && body.error.message) || "";
  } catch {
    // Not the service's JSON error (a proxy's page, say): the status alone says enough.
  }
  const message = describeStatus(response.status, detail, response.headers.get("Retry-After"));
  return new ApiError(message, response.headers.get("X-Request-ID"));
}

// An error the service sent after the stream had started (`response.failed`, or an `error` event).
function streamError(error, requestId) {
  const byCode = { timeout: 504, upstream_timeout: 504, upstream_error: 502, overloaded: 503 };
  const status = byCode[error.code] || { timeout_error: 504, upstream_error: 502, overloaded_error: 503 }[error.type];
  const said = error.message ? ` The service said: “${error.message}”` : "";
  const message = status
    ? `The team stopped before finishing. ${describeStatus(status, "", "")}`
    : `The team stopped with an error before finishing.${said}`;
  return new ApiError(message, requestId);
}

function networkError(error) {
  return new ApiError(`The service could not be reached (${error.message}). Check that it is running.`);
}

// The `data:` payloads of a server-sent event stream, read with fetch (EventSource cannot POST).
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const boundary = /\r\n\r\n|\n\n|\r\r/;
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let match;
      while ((match = boundary.exec(buffer)) !== null) {
        const event = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        const data = event
          .split(/\r\n|\n|\r/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
          .join("\n");
        if (data) yield data; // comments (": ping") and empty events carry no data
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// One JSON call of the API; an ApiError in words on failure.
async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: requestHeaders(),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw networkError(error);
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// ---- the conversations this browser keeps (localStorage: ids, titles, models) --------------

const saved = {
  list() {
    try {
      const value = JSON.parse(localStorage.getItem(STORAGE.conversations) || "[]");
      return Array.isArray(value) ? value.filter((entry) => entry && typeof entry.id === "string") : [];
    } catch {
      return [];
    }
  },
  store(list) {
    localStorage.setItem(STORAGE.conversations, JSON.stringify(list.slice(0, MAX_KEPT_CONVERSATIONS)));
  },
  put(entry, replacing = entry.id) {
    const list = this.list().filter((item) => item.id !== entry.id && item.id !== replacing);
    this.store([entry, ...list]);
  },
  get(id) {
    return this.list().find((item) => item.id === id) || null;
  },
  remove(id) {
    this.store(this.list().filter((item) => item.id !== id));
  },
};

function titleOf(text) {
  const line = text.trim().split(/\n/)[0];
  return line.length > 60 ? `${line.slice(0, 59)}…` : line;
}

function setCurrent(id, model) {
  state.conversationId = id;
  state.conversationModel = model;
  if (id) localStorage.setItem(STORAGE.current, id);
  else localStorage.removeItem(STORAGE.current);
  renderConversationList();
}

function renderConversationList() {
  const list = saved.list();
  ui.historyCount.textContent = `(${list.length})`;
  ui.conversations.replaceChildren(
    ...list.map((entry) => {
      const open = h("button", "open-conversation", entry.title || "Untitled", h("span", "conversation-model", entry.model || ""));
      open.type = "button";
      open.dataset.id = entry.id;
      if (entry.id === state.conversationId) open.setAttribute("aria-current", "true");
      open.addEventListener("click", () => openConversation(entry.id));
      const remove = h("button", "delete-conversation", "Delete");
      remove.type = "button";
      remove.setAttribute("aria-label", `Delete the conversation “${entry.title || "Untitled"}”`);
      remove.addEventListener("click", () => deleteConversation(entry.id));
      return h("li", "", open, remove);
    }),
  );
  if (!list.length) ui.conversations.append(h("li", "muted", "No conversation yet."));
}

// ---- the models -------------------------------------------------------------------------------

function option(value, label) {
  const node = h("option", "", label);
  node.value = value;
  return node;
}

function describeModel() {
  const card = state.models.get(ui.model.value);
  ui.modelDescription.textContent = (card && card.description) || "";
}

async function loadModels() {
  showSettingsError("");
  ui.reloadModels.disabled = true;
  setStatus("Loading the teams…");
  try {
    let response;
    try {
      response = await fetch("/v1/models", { headers: requestHeaders() });
    } catch (error) {
      throw networkError(error);
    }
    if (!response.ok) throw await errorFrom(response);
    const body = await response.json();
    const cards = Array.isArray(body.data) ? body.data : [];
    const previous = ui.model.value || sessionStorage.getItem(STORAGE.model) || "";
    state.models = new Map(cards.map((card) => [card.id, card]));
    ui.model.replaceChildren(...cards.map((card) => option(card.id, card.id)));
    if (!cards.length) ui.model.append(option("", "No team is served"));
    const pick = [previous, PREFERRED_MODEL].find((id) => state.models.has(id));
    if (pick) ui.model.value = pick;
    describeModel();
    setStatus(`${cards.length} ${cards.length === 1 ? "team" : "teams"} available.`);
  } catch (error) {
    const text = error instanceof ApiError ? error.message : String(error);
    if (!state.models.size) {
      ui.model.replaceChildren(option("", "No list of teams"));
      describeModel();
    } // else the last list stays: a failed reload (a key typo, a restart) need not lose the choice
    showSettingsError(`The list of teams could not be loaded. ${text}`);
    setStatus("");
  } finally {
    ui.reloadModels.disabled = false;
  }
}

// ---- one turn of the conversation -------------------------------------------------------------

const ACTIVITY_LABELS = { thought: "Thinking", memory_query: "Memory" };
// The readable transcript lines of a reasoning item that its structured events show as cards.
const EVENT_LINE = /^\s*(→|←|↪|⏸)/;

function prettyJson(text) {
  if (typeof text !== "string") return JSON.stringify(text, null, 2);
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// "**planner:** Plan for…" -> "Plan for…": the step's heading names the agent.
function withoutSpeaker(text, agent) {
  const prefix = `**${agent}:**`;
  return text.startsWith(prefix) ? text.slice(prefix.length).replace(/^[ \t]*\n?/, "") : text;
}

// The view of one exchange: the person's message, the team's activity and its final answer.
class Turn {
  constructor(question, model, { stored = false } = {}) {
    this.question = question;
    this.answerSource = ""; // the answer's Markdown, as the service sent it
    this.agents = [];
    this.toolCalls = new Map(); // call_id -> result slot
    this.counts = { tools: 0, handoffs: 0 };
    this.group = null; // the step being written: { agent, body, text }
    this.live = null; // the reasoning item being streamed: { agent, text, node }
    this.renderPending = false;

    this.activityCount = h("span", "activity-count");
    this.steps = h("ol", "steps");
    this.activity = h("details", "activity", h("summary", "", "Team activity ", this.activityCount), this.steps);
    this.activity.open = !stored;
    this.activity.hidden = true;

    this.answerBy = h("span", "answer-by");
    this.answerBody = h("div", "answer-text markdown");
    this.answerTitle = document.createTextNode("Final answer");
    this.copyButton = h("button", "copy", "Copy");
    this.copyButton.type = "button";
    this.copyButton.setAttribute("aria-label", "Copy the answer");
    this.copyButton.addEventListener("click", () => this.copy());
    this.regenerateButton = h("button", "regenerate", "Regenerate");
    this.regenerateButton.type = "button";
    this.regenerateButton.setAttribute("aria-label", "Ask the team again for a new answer");
    this.regenerateButton.addEventListener("click", () => regenerate(this));
    this.tools = h("div", "answer-actions", this.copyButton, this.regenerateButton);
    this.tools.hidden = true;
    this.answer = h("section", "answer", h("h3", "", this.answerTitle, this.answerBy), this.answerBody, this.tools);
    this.answer.setAttribute("aria-label", "Final answer");
    this.answer.hidden = true;

    this.notes = h("div", "notes");
    this.stats = h("p", "stats");
    this.working = h("p", "working", "The team is working…");
    this.working.hidden = stored;

    const you = h("div", "message user", h("h2", "who", "You"), h("p", "text", question));
    const team = h("div", "message team", h("h2", "who", model), this.working, this.activity, this.answer, this.notes, this.stats);
    this.root = h("article", "turn", you, team);
    ui.emptyHint.hidden = true;
    ui.conversation.append(this.root);
    keepScrolledToEnd();
  }

  // The step of `agent`'s activity: a new one when another agent has spoken since (or when a new
  // reasoning item starts). Made on the first thing to show.
  groupFor(agent) {
    if (this.group && this.group.agent === agent) return this.group;
    this.activity.hidden = false;
    this.working.hidden = true;
    if (!this.agents.includes(agent)) this.agents.push(agent);
    const body = h("div", "step-body");
    const step = h("li", "step", h("h3", "agent", agent), body);
    step.dataset.agent = agent;
    this.steps.append(step);
    this.group = { agent, body, text: null };
    this.updateCount();
    return this.group;
  }

  startTurn(agent) {
    this.group = null;
    setStatus(`${agent} is working…`);
  }

  addEvent(agent, node) {
    const group = this.groupFor(agent);
    group.body.append(node);
    group.text = null;
    return node;
  }

  updateCount() {
    const parts = [this.agents.join(", ")];
    if (this.counts.tools) parts.push(`${this.counts.tools} tool ${this.counts.tools === 1 ? "call" : "calls"}`);
    if (this.counts.handoffs) parts.push(`${this.counts.handoffs} ${this.counts.handoffs === 1 ? "handoff" : "handoffs"}`);
    this.activityCount.textContent = `(${parts.join(" · ")})`;
  }

  // A reasoning item starts: the agent's turn, shown as a step while its text streams.
  beginItem(item) {
    const agent = item.agent || "team";
    this.startTurn(agent);
    this.live = { agent, text: "", node: null };
  }

  itemText(delta) {
    const live = this.live;
    if (!live) return;
    live.text += delta;
    const shown = withoutSpeaker(live.text, live.agent);
    if (!shown.trim()) return;
    if (!live.node) live.node = this.addEvent(live.agent, h("p", "said", ""));
    live.node.textContent = shown; // plain while it streams; Markdown once the item is done
    keepScrolledToEnd();
  }

  // A reasoning item is done: its step is rebuilt from the item, the agent's words as Markdown and
  // its structured events (tool calls and results, handoffs, questions) as cards.
  completeItem(item) {
    const agent = item.agent || "team";
    const text = (item.summary || []).map((part) => part.text || "").join("\n");
    if (this.live && this.live.node) this.live.node.remove();
    if (!this.live || this.live.agent !== agent) this.startTurn(agent);
    this.live = null;
    const said = withoutSpeaker(text, agent)
      .split("\n")
      .filter((line) => !EVENT_LINE.test(line))
      .join("\n")
      .trim();
    const events = (item.activity || []).filter((event) => event.type !== "agent_turn");
    if (said && !events.some((event) => event.type === "input_requested")) {
      const body = h("div", "said markdown");
      renderMarkdown(body, said);
      this.addEvent(agent, body);
    }
    for (const event of events) this.onActivity(agent, event);
    if (!said && !events.length) this.groupFor(agent); // an agent's turn that only handed over the answer
    keepScrolledToEnd();
  }

  onActivity(agent, activity) {
    switch (activity.type) {
      case "tool_call":
        this.onToolCall(agent, activity);
        break;
      case "tool_result":
        this.onToolResult(agent, activity);
        break;
      case "handoff":
        this.counts.handoffs += 1;
        this.addEvent(agent, h("p", "event handoff", h("span", "badge", "Handoff"), ` to ${activity.target}`));
        this.updateCount();
        break;
      case "code_generated":
        this.addEvent(agent, this.labelled("Code written", h("pre", "code", activity.code || "")));
        break;
      case "code_executed": {
        const exit = activity.exit_code === undefined || activity.exit_code === null ? "" : ` (exit code ${activity.exit_code})`;
        this.addEvent(agent, this.labelled(`Code run${exit}`, h("pre", "code", activity.output || "")));
        break;
      }
      case "speaker_selected":
        this.addEvent(agent, h("p", "event", h("span", "badge", "Next speaker"), ` ${[].concat(activity.selected || []).join(", ")}`));
        break;
      case "input_requested": // the question itself is the run's answer (see finish)
        this.addEvent(agent, h("p", "event", h("span", "badge", "Asks you"), " waits for your answer"));
        break;
      default: {
        const label = ACTIVITY_LABELS[activity.type] || activity.event_type || activity.type;
        const body = h("p", "said");
        if (activity.content) body.textContent = String(activity.content);
        else if (activity.results) body.textContent = prettyJson(activity.results);
        this.addEvent(agent, this.labelled(label, body)).classList.add(`event-${activity.type}`);
      }
    }
  }

  labelled(label, body) {
    return h("div", "event", h("span", "badge", label), body);
  }

  onToolCall(agent, activity) {
    this.counts.tools += 1;
    const result = h("div", "tool-result pending", "Running…");
    const card = h(
      "div",
      "tool",
      h("p", "tool-head", h("span", "badge", "Tool call"), " ", h("code", "tool-name", activity.tool || "?")),
      h("pre", "tool-args", prettyJson(activity.arguments || "")),
      result,
    );
    card.dataset.callId = activity.call_id || "";
    this.toolCalls.set(activity.call_id, result);
    this.addEvent(agent, card);
    this.updateCount();
  }

  onToolResult(agent, activity) {
    let slot = this.toolCalls.get(activity.call_id);
    if (!slot) {
      slot = h("div", "tool-result");
      this.addEvent(agent, h("div", "tool", h("p", "tool-head", h("span", "badge", "Tool result"), " ", h("code", "tool-name", activity.tool || "?")), slot));
    }
    slot.className = activity.is_error ? "tool-result failed" : "tool-result";
    slot.replaceChildren(h("span", "badge", activity.is_error ? "Error" : "Result"), h("pre", "", prettyJson(activity.content || "")));
  }

  // The answer streams in: the activity folds (it stays one click away), the Markdown is rendered
  // at most once per frame.
  onAnswer(text) {
    if (this.answer.hidden) {
      this.answer.hidden = false;
      this.working.hidden = true;
      this.activity.open = false;
      setStatus("The team is answering…");
    }
    this.answerSource += text;
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      renderMarkdown(this.answerBody, this.answerSource);
      keepScrolledToEnd();
    });
  }

  showAnswer(text, agent) {
    this.answerSource = text;
    this.answer.hidden = false;
    this.activity.open = false;
    if (agent) this.answerBy.textContent = ` from ${agent}`;
    renderMarkdown(this.answerBody, text);
    this.tools.hidden = !text;
  }

  finish(result) {
    this.working.hidden = true;
    const finish = result.finish || {};
    const asked = finish.inputRequired;
    if (asked) this.answerTitle.data = "Question for you"; // the run stopped to ask a person
    if (this.answerSource || asked) {
      this.showAnswer(this.answerSource || (asked && asked.prompt) || "", finish.agent);
    } else {
      this.answer.hidden = false;
      this.answerBody.replaceChildren(h("p", "muted", "The team finished without a final answer."));
    }
    if (asked) {
      const who = asked.agent || "The team";
      this.note(`${who} is waiting for your reply: write it in the message box to continue.`, "input-required");
    }
    if (finish.reason === "length") {
      this.note("The answer was cut short: the token limit or the team's turn limit was reached.");
    }
    this.tools.hidden = false;
    this.showStats(result);
  }

  fail(message, requestId) {
    this.working.hidden = true;
    this.root.classList.add("failed");
    if (!this.answer.hidden) {
      this.answerTitle.data = "Answer, incomplete";
      renderMarkdown(this.answerBody, this.answerSource);
    }
    const error = h("p", "error", message);
    if (requestId) error.append(h("span", "request-id", ` (request id ${requestId})`));
    error.setAttribute("role", "alert");
    this.notes.append(error);
  }

  note(text, className = "") {
    this.notes.append(h("p", `note ${className}`.trim(), text));
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.answerSource);
    } catch {
      // No clipboard API (a page not served over https or localhost): select and copy.
      const area = h("textarea", "visually-hidden");
      area.value = this.answerSource;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    this.copyButton.textContent = "Copied";
    setStatus("Answer copied.");
    setTimeout(() => {
      this.copyButton.textContent = "Copy";
    }, 2000);
  }

  showStats({ firstTokenMs, firstAnswerMs, totalMs, usage }) {
    const parts = [];
    if (firstTokenMs !== null) parts.push(`Time to first token ${seconds(firstTokenMs)}`);
    if (firstAnswerMs !== null && firstAnswerMs !== firstTokenMs) parts.push(`to first answer token ${seconds(firstAnswerMs)}`);
    parts.push(`total ${seconds(totalMs)}`);
    if (usage) {
      parts.push(`tokens: ${usage.input_tokens} in, ${usage.output_tokens} out, ${usage.total_tokens} in all`);
    }
    this.stats.textContent = parts.join(" · ");
  }
}

// Only the last answer can be asked for again.
function markLastTurn() {
  state.turns.forEach((turn, index) => {
    turn.regenerateButton.hidden = index !== state.turns.length - 1;
  });
}

// ---- sending a message: one streamed response in the conversation -----------------------------

async function readStream(response, turn, startedAt) {
  const requestId = response.headers.get("X-Request-ID");
  const result = { finish: null, usage: null, firstTokenMs: null, firstAnswerMs: null, totalMs: 0 };
  const now = () => performance.now() - startedAt;
  const first = () => {
    if (result.firstTokenMs === null) result.firstTokenMs = now();
  };
  let ended = false;
  for await (const data of sseData(response.body)) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      throw new ApiError("The service sent an event that is not JSON; the answer is incomplete.", requestId);
    }
    switch (event.type) {
      case "response.output_item.added":
        if (event.item && event.item.type === "reasoning") turn.beginItem(event.item);
        break;
      case "response.reasoning_summary_text.delta":
        first();
        turn.itemText(event.delta || "");
        break;
      case "response.output_item.done":
        if (event.item && event.item.type === "reasoning") {
          first();
          turn.completeItem(event.item);
        }
        break;
      case "response.output_text.delta":
        first();
        if (result.firstAnswerMs === null) result.firstAnswerMs = now();
        turn.onAnswer(event.delta || "");
        break;
      case "response.completed":
      case "response.incomplete": {
        const final = event.response || {};
        result.usage = final.usage || null;
        result.finish = {
          reason: final.status === "incomplete" ? "length" : "stop",
          agent: final.final_answer_agent || null,
          inputRequired: final.input_required || null,
        };
        ended = true;
        break;
      }
      case "response.failed":
        throw streamError((event.response && event.response.error) || {}, requestId);
      case "error":
        throw streamError(event.error || event, requestId);
      default:
        break;
    }
  }
  if (!ended) {
    throw new ApiError("The connection closed before the team finished; the answer is incomplete.", requestId);
  }
  result.totalMs = now();
  return result;
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  ui.composer.setAttribute("aria-busy", String(busy));
  for (const turn of state.turns) turn.regenerateButton.disabled = busy;
}

// The open chat's conversation on the service, created with the chat's first message.
async function conversationFor(model, text) {
  if (state.conversationId && state.conversationModel === model) return state.conversationId;
  const created = await api("POST", "/v1/conversations", { metadata: { title: titleOf(text), model } });
  saved.put({ id: created.id, title: titleOf(text), model, updated: Date.now() });
  setCurrent(created.id, model);
  return created.id;
}

async function send(text) {
  const model = ui.model.value;
  if (!model) {
    showSettingsError("Pick a team first (reload the list of teams if it is empty).");
    ui.model.focus();
    return;
  }
  if (state.conversationId && state.conversationModel !== model) startNewChat(); // a conversation keeps its team
  const turn = new Turn(text, model);
  state.turns.push(turn);
  markLastTurn();
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  if (document.activeElement === ui.send) ui.message.focus(); // a disabled button would drop it
  setStatus(`Sent to ${model}; waiting for the team…`);
  const startedAt = performance.now();
  try {
    const conversation = await conversationFor(model, text);
    let response;
    try {
      response = await fetch("/v1/responses", {
        method: "POST",
        headers: requestHeaders(),
        body: JSON.stringify({ model, input: text, conversation, stream: true }),
        signal: controller.signal,
      });
    } catch (error) {
      throw error.name === "AbortError" ? error : networkError(error);
    }
    if (!response.ok) throw await errorFrom(response);
    const result = await readStream(response, turn, startedAt);
    turn.finish(result);
    const entry = saved.get(conversation);
    if (entry) saved.put({ ...entry, updated: Date.now() });
    renderConversationList();
    const asked = result.finish && result.finish.inputRequired;
    const by = result.finish && result.finish.agent ? ` from ${result.finish.agent}` : "";
    if (asked) setStatus(`${asked.agent || "The team"} is waiting for your reply.`);
    else setStatus(`Answer${by} complete in ${seconds(result.totalMs)}.`);
  } catch (error) {
    if (error.name === "AbortError") {
      turn.fail("Stopped: the team's run was cancelled before it finished.");
      setStatus("Stopped.");
    } else {
      const message = error instanceof ApiError ? error.message : `Unexpected error in the page: ${error}`;
      turn.fail(message, error.requestId);
      setStatus("The request failed.");
      if (!ui.message.value) ui.message.value = text; // one key press to try again
    }
    turn.tools.hidden = !turn.answerSource;
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

// Regenerate: the conversation is forked before the last question (a new conversation with the
// earlier messages, at most MAX_FORK_ITEMS), the question is asked again there, and the old
// conversation is deleted. Stored items cannot be removed, so a fork is how an answer is replaced.
async function regenerate(turn) {
  if (state.controller || turn !== state.turns[state.turns.length - 1]) return;
  const model = state.conversationModel || ui.model.value;
  const earlier = state.turns.slice(0, -1).flatMap((previous) => [
    { type: "message", role: "user", content: previous.question },
    ...(previous.answerSource ? [{ type: "message", role: "assistant", content: previous.answerSource }] : []),
  ]);
  const old = state.conversationId;
  const entry = (old && saved.get(old)) || { title: titleOf(turn.question) };
  setStatus("Asking the team again…");
  try {
    const body = { metadata: { title: entry.title, model } };
    if (earlier.length) body.items = earlier.slice(-MAX_FORK_ITEMS);
    const created = await api("POST", "/v1/conversations", body);
    saved.put({ id: created.id, title: entry.title, model, updated: Date.now() }, old);
    setCurrent(created.id, model);
    if (old) api("DELETE", `/v1/conversations/${encodeURIComponent(old)}`).catch(() => {});
  } catch (error) {
    setStatus(error instanceof ApiError ? error.message : String(error));
    return;
  }
  state.turns.pop();
  turn.root.remove();
  if (model && state.models.has(model)) ui.model.value = model;
  await send(turn.question);
}

// ---- opening, starting and deleting chats ------------------------------------------------------

function clearView() {
  state.turns = [];
  ui.conversation.replaceChildren(ui.emptyHint);
  ui.emptyHint.hidden = false;
}

function startNewChat() {
  clearView();
  setCurrent(null, null);
}

// Every item of a conversation, oldest first (pages of 100).
async function conversationItems(id) {
  const items = [];
  let after = null;
  for (let page = 0; page < 100; page += 1) {
    const query = new URLSearchParams({ order: "asc", limit: "100" });
    if (after) query.set("after", after);
    const body = await api("GET", `/v1/conversations/${encodeURIComponent(id)}/items?${query}`);
    items.push(...(body.data || []));
    if (!body.has_more || !body.data || !body.data.length) break;
    after = body.last_id || body.data[body.data.length - 1].id;
  }
  return items;
}

function textOf(item) {
  if (typeof item.content === "string") return item.content;
  return (item.content || []).map((part) => part.text || "").join("");
}

// Rebuild the view of a stored conversation from its items.
function showItems(items, model) {
  clearView();
  let turn = null;
  for (const item of items) {
    if (item.type === "message" && item.role === "user") {
      if (turn) turn.tools.hidden = !turn.answerSource;
      turn = new Turn(textOf(item), model, { stored: true });
      state.turns.push(turn);
    } else if (turn && item.type === "reasoning") {
      turn.completeItem(item);
    } else if (turn && item.type === "message" && item.role === "assistant") {
      turn.showAnswer(textOf(item), null);
    }
  }
  if (turn) turn.tools.hidden = !turn.answerSource;
  markLastTurn();
}

async function openConversation(id) {
  if (state.controller) state.controller.abort();
  const entry = saved.get(id);
  setStatus("Opening the conversation…");
  try {
    const items = await conversationItems(id);
    const model = (entry && entry.model) || "";
    setCurrent(id, model);
    if (model && state.models.has(model)) {
      ui.model.value = model;
      describeModel();
    }
    showItems(items, model || "team");
    setStatus(`Conversation “${(entry && entry.title) || id}” opened.`);
    window.scrollTo(0, document.documentElement.scrollHeight);
  } catch (error) {
    if (error.status === 404) {
      saved.remove(id); // expired, deleted, or another API key's
      if (state.conversationId === id) startNewChat();
      renderConversationList();
      setStatus("That conversation is no longer on the service (it expired or was deleted); it was removed from the list.");
    } else {
      setStatus(`The conversation could not be opened. ${error instanceof ApiError ? error.message : error}`);
    }
  }
}

async function deleteConversation(id) {
  try {
    await api("DELETE", `/v1/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status !== 404) {
      setStatus(`The conversation could not be deleted. ${error instanceof ApiError ? error.message : error}`);
      return;
    }
  }
  saved.remove(id);
  if (state.conversationId === id) startNewChat();
  renderConversationList();
  setStatus("Conversation deleted.");
}

// ---- wiring -----------------------------------------------------------------------------------

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (!text || state.controller) return;
  ui.message.value = "";
  send(text);
});

ui.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.controller) state.controller.abort();
});

ui.stop.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  ui.message.focus();
});

ui.newChat.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  startNewChat();
  setStatus("New chat started.");
  ui.message.focus();
});

ui.model.addEventListener("change", () => {
  sessionStorage.setItem(STORAGE.model, ui.model.value);
  describeModel();
  if (state.turns.length && state.conversationModel && state.conversationModel !== ui.model.value) {
    startNewChat(); // a conversation keeps its team; the old one stays in the list
    setStatus(`New chat with ${ui.model.value}.`);
  }
});

ui.apiKey.value = sessionStorage.getItem(STORAGE.key) || "";
ui.apiKey.addEventListener("input", () => {
  const key = ui.apiKey.value.trim();
  if (key) sessionStorage.setItem(STORAGE.key, key);
  else sessionStorage.removeItem(STORAGE.key);
});
ui.apiKey.addEventListener("change", loadModels);
ui.reloadModels.addEventListener("click", loadModels);

// On a phone the list of conversations starts folded: the chat comes first.
if (window.matchMedia("(max-width: 40rem)").matches) ui.history.open = false;
renderConversationList();
loadModels().then(() => {
  const current = localStorage.getItem(STORAGE.current);
  if (current && saved.get(current)) openConversation(current);
});
