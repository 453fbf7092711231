// The playground: lists the served teams, chats with one over the public API (GET /v1/models,
// POST /v1/chat/completions with stream: true) and shows, as it streams, the team's activity
// (delta.reasoning_content and delta.activity, grouped by agent) apart from its final answer
// (delta.content). Plain JavaScript, no build step, no dependency: text is only ever inserted as
// text (textContent, Text nodes), never as HTML.
"use strict";

const STORAGE = { key: "autogen-playground.api-key", model: "autogen-playground.model" };
const PREFERRED_MODEL = "demo-team";

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
};

const state = {
  history: [], // the OpenAI messages of this chat: user turns and the team's final answers
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

// An error the service sent after the stream had started: `data: {"error": {...}}`.
function streamError(error, requestId) {
  const byType = { timeout_error: 504, upstream_error: 502, overloaded_error: 503 };
  const status = byType[error.type];
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

function prettyJson(text) {
  if (typeof text !== "string") return JSON.stringify(text, null, 2);
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// The view of one exchange: the person's message, the team's activity and its final answer.
class Turn {
  constructor(question, model) {
    this.agents = [];
    this.toolCalls = new Map(); // call_id -> card
    this.counts = { tools: 0, handoffs: 0 };
    this.group = null; // the agent whose activity is being written: { agent, body, text }

    this.activityCount = h("span", "activity-count");
    this.steps = h("ol", "steps");
    this.activity = h("details", "activity", h("summary", "", "Team activity ", this.activityCount), this.steps);
    this.activity.open = true;
    this.activity.hidden = true;

    this.answerBy = h("span", "answer-by");
    this.answerText = document.createTextNode("");
    this.answerBody = h("div", "answer-text", this.answerText);
    this.answerTitle = document.createTextNode("Final answer");
    this.answer = h("section", "answer", h("h3", "", this.answerTitle, this.answerBy), this.answerBody);
    this.answer.setAttribute("aria-label", "Final answer");
    this.answer.hidden = true;

    this.notes = h("div", "notes");
    this.stats = h("p", "stats");
    this.working = h("p", "working", "The team is working…");

    const you = h("div", "message user", h("h2", "who", "You"), h("p", "text", question));
    const team = h("div", "message team", h("h2", "who", model), this.working, this.activity, this.answer, this.notes, this.stats);
    this.root = h("article", "turn", you, team);
    ui.emptyHint.hidden = true;
    ui.conversation.append(this.root);
    keepScrolledToEnd();
  }

  // The group of `agent`'s activity, a new one when another agent has spoken since (or when the
  // same agent starts a new turn). Made on the first thing to show: an agent whose turn is the
  // final answer has no empty group.
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

  // Where `agent`'s next words go: a paragraph after whatever the group showed last.
  textFor(agent) {
    const group = this.groupFor(agent);
    if (!group.text) {
      group.text = document.createTextNode("");
      group.body.append(h("p", "said", group.text));
    }
    return group.text;
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

  onActivity(name, activity, text) {
    const agent = (activity && activity.agent) || name || "team";
    if (!activity) {
      if (text) this.textFor(agent).appendData(text);
      keepScrolledToEnd();
      return;
    }
    switch (activity.type) {
      case "agent_turn":
        this.startTurn(agent);
        break;
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
        // thought, memory_query, other: what they say is in the text of the chunk.
        const label = ACTIVITY_LABELS[activity.type] || activity.event_type || activity.type;
        const body = h("p", "said");
        if (text) body.textContent = text.trim().replace(/^\[[^\]]*\]\s*/, ""); // "[Type] text": the label says it
        else if (activity.results) body.textContent = prettyJson(activity.results);
        this.addEvent(agent, this.labelled(label, body)).classList.add(`event-${activity.type}`);
      }
    }
    keepScrolledToEnd();
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
    setStatus(`${agent} calls ${activity.tool}…`);
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

  onAnswer(name, text) {
    if (this.answer.hidden) {
      this.answer.hidden = false;
      this.working.hidden = true;
      if (name) this.answerBy.textContent = ` from ${name}`;
      setStatus(`${name || "The team"} is answering…`);
    }
    this.answerText.appendData(text);
    keepScrolledToEnd();
  }

  finish(result) {
    this.working.hidden = true;
    const finish = result.finish || {};
    if (finish.agent) this.answerBy.textContent = ` from ${finish.agent}`;
    const asked = finish.inputRequired;
    if (asked) this.answerTitle.data = "Question for you"; // the run stopped to ask a person
    if (this.answer.hidden) {
      this.answer.hidden = false;
      const text = asked ? asked.prompt || "" : "";
      this.answerBody.replaceChildren(text ? h("p", "answer-text", text) : h("p", "muted", "The team finished without a final answer."));
    }
    if (asked) {
      const who = asked.agent || "The team";
      this.note(`${who} is waiting for your reply: write it in the message box to continue.`, "input-required");
    }
    if (finish.reason === "length") {
      this.note("The answer was cut short: the token limit or the team's turn limit was reached.");
    }
    this.showStats(result);
  }

  fail(message, requestId) {
    this.working.hidden = true;
    this.root.classList.add("failed");
    if (!this.answer.hidden) this.answerTitle.data = "Answer, incomplete";
    const error = h("p", "error", message);
    if (requestId) error.append(h("span", "request-id", ` (request id ${requestId})`));
    error.setAttribute("role", "alert");
    this.notes.append(error);
  }

  note(text, className = "") {
    this.notes.append(h("p", `note ${className}`.trim(), text));
  }

  showStats({ firstTokenMs, firstAnswerMs, totalMs, usage }) {
    const parts = [];
    if (firstTokenMs !== null) parts.push(`Time to first token ${seconds(firstTokenMs)}`);
    if (firstAnswerMs !== null && firstAnswerMs !== firstTokenMs) parts.push(`to first answer token ${seconds(firstAnswerMs)}`);
    parts.push(`total ${seconds(totalMs)}`);
    if (usage) {
      parts.push(`tokens: ${usage.prompt_tokens} in, ${usage.completion_tokens} out, ${usage.total_tokens} in all`);
    }
    this.stats.textContent = parts.join(" · ");
  }
}

// ---- sending a message ------------------------------------------------------------------------

async function readStream(response, turn, startedAt) {
  const requestId = response.headers.get("X-Request-ID");
  const result = { finish: null, usage: null, firstTokenMs: null, firstAnswerMs: null, totalMs: 0, answer: "" };
  const now = () => performance.now() - startedAt;
  let done = false;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") {
      done = true;
      break;
    }
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ApiError("The service sent an event that is not JSON; the answer is incomplete.", requestId);
    }
    if (chunk.error) throw streamError(chunk.error, requestId);
    if (chunk.usage) result.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      const activityText = delta.reasoning_content || delta.reasoning || "";
      if (delta.activity || activityText) {
        if (result.firstTokenMs === null) result.firstTokenMs = now();
        turn.onActivity(delta.name, delta.activity, activityText);
      }
      if (delta.content) {
        if (result.firstTokenMs === null) result.firstTokenMs = now();
        if (result.firstAnswerMs === null) result.firstAnswerMs = now();
        result.answer += delta.content;
        turn.onAnswer(delta.name, delta.content);
      }
      if (choice.finish_reason) {
        result.finish = {
          reason: choice.finish_reason,
          agent: chunk.final_answer_agent || null,
          inputRequired: chunk.input_required || null,
        };
      }
    }
  }
  if (!done) {
    throw new ApiError("The connection closed before the team finished; the answer is incomplete.", requestId);
  }
  result.totalMs = now();
  return result;
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  ui.composer.setAttribute("aria-busy", String(busy));
}

async function send(text) {
  const model = ui.model.value;
  if (!model) {
    showSettingsError("Pick a team first (reload the list of teams if it is empty).");
    ui.model.focus();
    return;
  }
  state.history.push({ role: "user", content: text });
  const turn = new Turn(text, model);
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  if (document.activeElement === ui.send) ui.message.focus(); // a disabled button would drop it
  setStatus(`Sent to ${model}; waiting for the team…`);
  const startedAt = performance.now();
  try {
    let response;
    try {
      response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: requestHeaders(),
        body: JSON.stringify({
          model,
          messages: state.history,
          stream: true,
          stream_options: { include_usage: true },
          stream_activity: "reasoning",
        }),
        signal: controller.signal,
      });
    } catch (error) {
      throw error.name === "AbortError" ? error : networkError(error);
    }
    if (!response.ok) throw await errorFrom(response);
    const result = await readStream(response, turn, startedAt);
    const asked = result.finish && result.finish.inputRequired;
    const answer = result.answer || (asked && asked.prompt) || "";
    if (answer) state.history.push({ role: "assistant", content: answer });
    turn.finish(result);
    const by = result.finish && result.finish.agent ? ` from ${result.finish.agent}` : "";
    if (asked) setStatus(`${asked.agent || "The team"} is waiting for your reply.`);
    else setStatus(`Answer${by} complete in ${seconds(result.totalMs)}.`);
  } catch (error) {
    // The exchange did not complete: it is not part of the conversation sent next time.
    state.history.pop();
    if (error.name === "AbortError") {
      turn.fail("Stopped: the team's run was cancelled before it finished.");
      setStatus("Stopped.");
    } else {
      const message = error instanceof ApiError ? error.message : `Unexpected error in the page: ${error}`;
      turn.fail(message, error.requestId);
      setStatus("The request failed.");
      if (!ui.message.value) ui.message.value = text; // one key press to try again
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
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
  state.history = [];
  ui.conversation.replaceChildren(ui.emptyHint);
  ui.emptyHint.hidden = false;
  setStatus("New chat started.");
  ui.message.focus();
});

ui.model.addEventListener("change", () => {
  sessionStorage.setItem(STORAGE.model, ui.model.value);
  describeModel();
});

ui.apiKey.value = sessionStorage.getItem(STORAGE.key) || "";
ui.apiKey.addEventListener("input", () => {
  const key = ui.apiKey.value.trim();
  if (key) sessionStorage.setItem(STORAGE.key, key);
  else sessionStorage.removeItem(STORAGE.key);
});
ui.apiKey.addEventListener("change", loadModels);
ui.reloadModels.addEventListener("click", loadModels);

loadModels();
