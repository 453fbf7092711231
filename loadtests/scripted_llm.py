"""A scriptable fake OpenAI-compatible LLM for conformance tests: replies scripted, every request recorded.

Tests point autogen-ext's ``OpenAIChatCompletionClient`` (or any OpenAI client) at it, load a *script* that
says what the "model" answers to each call, run a team, then check what the fake received (``requests()``)
and what it reported (each record's ``reply``), and its counters (``stats()``: ``open_streams`` back to 0
after a cancellation, ...). HTTP, chunk encoding and accounting are shared with the load fake
(``loadtests/fake_http.py``); it listens on 127.0.0.1 only.

Script (JSON over ``POST /script``, or ``Script``/dicts through a handle's ``load_script``)::

    {"rules": [RULE, ...], "default": REPLY}    # no "default": a request no rule matches gets a 400

    RULE  = {"match": MATCH, "reply": REPLY, "times": 1, "label": "planner asks for the weather"}
    MATCH = {                     # every field optional; all the given ones must hold; {} matches anything
      "system": "substring",      # of the system message(s): each AgentChat agent has its own
      "system_re": "regex",       # re.search on the same text
      "last_re": "regex",         # on the last message's text (selector/MagenticOne prompt, tool result)
      "any_re": "regex",          # on any one message's text (system included)
      "last_role": "tool",        # role of the last message: system, developer, user, assistant, tool
      "last_name": "planner",     # `name` of the last message (AgentChat sends the speaker's name)
      "has_name": "coder",        # some message has this `name`
      "tools": true,              # tools offered (false: none, e.g. the reflection call after a tool)
      "tool_names": ["get_weather"],  # all of these tools offered (a string is one name)
      "json": true,               # response_format asked (json_object or json_schema)
      "stream": true,             # a streaming request
      "model": "gpt-4o",          # the request's model
      "call": 0                   # index of the request since the script was loaded (or a list of them)
    }
    REPLY = "plain text"          # short for {"text": "plain text"}
          | {
      "text": "one delta per word" | ["explicit", " deltas"],
      "json": {...},              # any JSON value, sent as the text (MagenticOne ledger, structured output)
      "reasoning": "...",         # streamed first as `delta.reasoning_content` (autogen: the thought)
      "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}],
                                  # after the text; arguments: an object or a raw string (even broken
                                  # JSON); id: default call_<call>_<i>; several: parallel tool calls
      "finish_reason": "stop",    # default: "length" when cut by max_tokens, "tool_calls" with tool
                                  # calls, else "stop"
      "usage": {"prompt_tokens": 10, "completion_tokens": 3},  # default: message chars / 4, deltas sent
      "ttft_ms": 0, "token_ms": 0,  # delay to the first delta, then between deltas (absolute deadlines)
      "argument_chunk": 8,        # characters of tool-call arguments per delta
      "fault": FAULT
    }
    FAULT = {"kind": KIND, "after": N, ...}  # after: deltas sent before the fault; null: before any byte
      "http"     status (500), message, type, code, headers: an error response before any byte
      "error"    an error event (`data: {"error": ...}`) after N deltas, the stream ends (not streaming:
                 as "http")
      "hang"     no more bytes until the client goes away (null: not even the headers)
      "drop"     the connection is closed after N deltas, the body unterminated (null: before any byte;
                 not streaming: after half the body)
      "garbage"  `lines` written raw as SSE lines after N deltas, then the reply goes on (not
                 streaming: they are the body)
      "huge"     one content delta of `bytes` bytes (default 10 MB) in a single chunk after N deltas

A *delta* (token) is one piece of the reply: a word of text or reasoning (with its leading space), a tool
call's header (id and name), a fragment of its arguments. ``max_tokens``/``max_completion_tokens`` cut the
reply to that many deltas (``finish_reason: "length"``). Streaming follows OpenAI: a role chunk, the deltas
(tool calls as ``tool_calls: [{index, id, type, function: {name, arguments: ""}}]`` then
``{index, function: {arguments: fragment}}``), a chunk with ``delta: {}`` and the finish reason, the usage
chunk (``choices: []``) only with ``stream_options.include_usage`` (``usage: null`` on the others),
``[DONE]``. Not streaming, ``usage`` is always there.

Rules are tried in order; the first that matches and is not used up answers. ``times``: how many requests
the rule answers (default 1, consumed); ``null``: any number. A fresh server answers "OK" to anything
(rules ``[]``, default ``"OK"``); a loaded script replaces the whole script and restarts the ``call`` count.
The SDK retries 429/5xx and connection errors (``max_retries``, default 2): each retry is a new request
that consumes the next matching rule.

Endpoints besides ``/v1/chat/completions`` and ``/v1/models``: ``POST /script`` (load), ``GET /script``
(the script, how many times each rule answered, calls so far), ``GET /requests`` (the record of every chat
request), ``POST /reset`` (clear the record and the counters), ``GET /stats``, ``POST /stats/reset``.

A record: ``index``, ``call``, ``at``, ``method``, ``path``, ``stream``, ``model``, ``messages``, ``tools``,
``tool_names``, ``tool_choice``, ``parallel_tool_calls``, ``response_format``, ``max_tokens``,
``stream_options``, ``body`` (all of it), ``rule`` (its index, None when unmatched), ``label``, ``outcome``
(``completed``, ``cancelled``: the client left first, ``fault``, ``unmatched``, or ``running``), ``fault``
(its kind) and ``reply`` (what was sent: ``content``, ``reasoning``, ``tool_calls``, ``finish_reason``,
``usage``).

From Python::

    with start_scripted_llm_thread() as llm:           # or start_scripted_llm_process(log_path=...)
        llm.load_script([
            Rule(match=Match(system="weather"), reply=Reply(
                text="Let me look that up.",
                tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"})])),
            Rule(match=Match(last_role="tool"), reply="It is sunny in Paris. TERMINATE"),
            selector_rule("critic"),
        ])
        ...  # llm.base_url -> OpenAIChatCompletionClient(base_url=...)
        llm.requests()[0]["tool_names"]; llm.stats()["open_streams"]; llm.unused_rules(); llm.reset()
        llm.wait_stats(lambda s: s["open_streams"] == 0, timeout=2)  # bounded poll; returns the last stats
        async with asyncio.timeout(2):  # in an async test: does not block an in-process service's loop
            await llm.wait_stats_async(lambda s: s["open_streams"] == 0)

CLI: ``python -m loadtests.scripted_llm --port 0 [--script script.json]`` prints ``SCRIPTED_LLM_PORT=<port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from loadtests import fake_http as wire
from loadtests.fake_http import Connection, Outcome, Request

HOST = "127.0.0.1"
PORT_LINE = "SCRIPTED_LLM_PORT"
DEFAULT_LOG_SIZE = 10_000

# What AgentChat 0.7.5 sends, to match its internal calls (``last_re`` / ``any_re``).
SELECTOR_RE = r"select the next role from"  # SelectorGroupChat's default selector prompt
MAGENTIC_FACTS_RE = r"answer the following pre-survey"  # MagenticOne: the facts of the task ledger
MAGENTIC_PLAN_RE = r"devise a short bullet-point plan"  # MagenticOne: the plan of the task ledger
MAGENTIC_LEDGER_RE = r"Please output an answer in pure JSON format"  # MagenticOne: the progress ledger
MAGENTIC_FINAL_RE = r"provide the final answer to the original request"  # MagenticOne: the final answer
MAGENTIC_REPLAN_RE = r"rewrite the following fact sheet|come up with a new plan"  # after a stall


def _compact(value: Any) -> str:
    """JSON as OpenAI writes it (no spaces)."""
    return json.dumps(value, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    # a misspelt field in a test's script is an error, not a rule that silently matches everything
    model_config = ConfigDict(extra="forbid")


Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
FaultKind = Literal["http", "error", "hang", "drop", "garbage", "huge"]


class Match(_Strict):
    """Which requests a rule answers. Every field is optional; all those given must hold."""

    system: str | None = None
    system_re: str | None = None
    last_re: str | None = None
    any_re: str | None = None
    last_role: Role | None = None
    last_name: str | None = None
    has_name: str | None = None
    tools: bool | None = None
    tool_names: list[str] | None = None
    json_: bool | None = Field(default=None, alias="json")
    stream: bool | None = None
    model: str | None = None
    call: int | list[int] | None = None

    _patterns: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    @field_validator("tool_names", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("system_re", "last_re", "any_re")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    def model_post_init(self, context: Any) -> None:
        for name in ("system_re", "last_re", "any_re"):
            pattern = getattr(self, name)
            if pattern is not None:
                self._patterns[name] = re.compile(pattern)

    def matches(self, chat: ChatView, call: int) -> bool:
        p = self._patterns
        checks: list[tuple[Any, Callable[[], bool]]] = [
            (self.call, lambda: call in (self.call if isinstance(self.call, list) else [self.call])),
            (self.stream, lambda: chat.stream == self.stream),
            (self.model, lambda: chat.model == self.model),
            (self.tools, lambda: bool(chat.tool_names) == self.tools),
            (self.tool_names, lambda: set(self.tool_names or ()) <= set(chat.tool_names)),
            (self.json_, lambda: chat.json_requested == self.json_),
            (self.last_role, lambda: chat.last_role == self.last_role),
            (self.last_name, lambda: chat.last_name == self.last_name),
            (self.has_name, lambda: self.has_name in chat.names),
            (self.system, lambda: (self.system or "") in chat.system),
            (self.system_re, lambda: p["system_re"].search(chat.system) is not None),
            (self.last_re, lambda: p["last_re"].search(chat.last_text) is not None),
            (self.any_re, lambda: any(p["any_re"].search(t) for t in chat.texts)),
        ]
        return all(check() for wanted, check in checks if wanted is not None)


class ToolCall(_Strict):
    """One tool call of a reply. ``arguments``: an object (sent as compact JSON) or a raw string."""

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else _compact(self.arguments)


class Usage(_Strict):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Fault(_Strict):
    """A failure injected instead of (or in the middle of) the reply; see the module docstring."""

    kind: FaultKind
    after: int | None = Field(default=None, ge=0)
    status: int = Field(default=500, ge=400, le=599)
    message: str = "fault injected by the scripted LLM"
    type: str = "server_error"
    code: str | None = "scripted_fault"
    headers: dict[str, str] = Field(default_factory=dict)
    lines: list[str] = Field(default_factory=lambda: ["data: {this is not json"])
    bytes: int = Field(default=10_000_000, ge=1)


class Reply(_Strict):
    """What the model answers: text and/or tool calls (and reasoning), timing, usage, a fault."""

    text: str | list[str] = ""
    json_: Any = Field(default=None, alias="json")
    reasoning: str | list[str] = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    ttft_ms: float = Field(default=0.0, ge=0)
    token_ms: float = Field(default=0.0, ge=0)
    argument_chunk: int = Field(default=8, ge=1)
    fault: Fault | None = None

    @model_validator(mode="after")
    def _text_or_json(self) -> Reply:
        if "json_" in self.model_fields_set and self.text:
            raise ValueError("a reply has `text` or `json`, not both")
        return self


def _as_reply(value: Any) -> Any:
    """A plain string stands for a text reply."""
    return {"text": value} if isinstance(value, str) else value


ReplyOrText = Annotated[Reply, BeforeValidator(_as_reply)]


class Rule(_Strict):
    """Answers the requests it matches, ``times`` times (None: any number)."""

    match: Match = Field(default_factory=Match)
    reply: ReplyOrText
    times: int | None = Field(default=1, ge=1)
    label: str | None = None


class Script(_Strict):
    rules: list[Rule] = Field(default_factory=list)
    default: ReplyOrText | None = None


ScriptLike = Script | Mapping[str, Any] | Sequence[Rule | Mapping[str, Any]]

INITIAL_SCRIPT = Script(default=Reply(text="OK"))


def as_script(script: ScriptLike) -> Script:
    """A ``Script`` from a ``Script``, its JSON-like dict, or a list of rules (no default)."""
    if isinstance(script, Script):
        return script
    if isinstance(script, Mapping):
        return Script.model_validate(script)
    return Script(rules=[r if isinstance(r, Rule) else Rule.model_validate(r) for r in script])


# -- helpers for AgentChat's shapes --------------------------------------------------------------------------
def rule(reply: Reply | str, *, times: int | None = 1, label: str | None = None, **match: Any) -> Rule:
    """``rule("hi", system="planner")`` = ``Rule(match=Match(system="planner"), reply=Reply(text="hi"))``."""
    return Rule(match=Match(**match), reply=_as_reply(reply), times=times, label=label)


def selector_rule(speaker: str, *, times: int | None = 1, **match: Any) -> Rule:
    """A SelectorGroupChat's model picking ``speaker`` (the default selector prompt; ``match`` narrows it)."""
    return rule(speaker, times=times, label=f"selector -> {speaker}", any_re=SELECTOR_RE, **match)


def handoff(target: str, *, id: str | None = None) -> ToolCall:
    """The tool call of an AgentChat handoff to ``target`` (``transfer_to_<target>``; ``user``: a person)."""
    return ToolCall(name=f"transfer_to_{target}".lower(), arguments={}, id=id)


def progress_ledger(
    next_speaker: str,
    instruction: str,
    *,
    satisfied: bool = False,
    in_loop: bool = False,
    progress: bool = True,
    reason: str = "scripted",
) -> dict[str, Any]:
    """MagenticOne's progress ledger (the JSON its orchestrator asks for); send it as ``Reply(json=...)``."""

    def entry(answer: Any) -> dict[str, Any]:
        return {"reason": reason, "answer": answer}

    return {
        "is_request_satisfied": entry(satisfied),
        "is_in_loop": entry(in_loop),
        "is_progress_being_made": entry(progress),
        "next_speaker": entry(next_speaker),
        "instruction_or_question": entry(instruction),
    }


# ---------------------------------------------------------------------------------------------------------
# One request, seen by the matchers
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ChatView:
    """What the matchers look at in a request body."""

    messages: list[dict[str, Any]]
    system: str
    texts: list[str]
    last_text: str
    last_role: str | None
    last_name: str | None
    names: set[str]
    tool_names: list[str]
    json_requested: bool
    stream: bool
    model: str

    @classmethod
    def of(cls, payload: dict[str, Any]) -> ChatView:
        raw = payload.get("messages")
        messages = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
        texts = [wire.message_text(m) for m in messages]
        last = messages[-1] if messages else {}
        fmt = payload.get("response_format")
        return cls(
            messages=messages,
            system="\n".join(
                t for m, t in zip(messages, texts, strict=True) if m.get("role") in ("system", "developer")
            ),
            texts=texts,
            last_text=texts[-1] if texts else "",
            last_role=last.get("role"),
            last_name=last.get("name"),
            names={str(m["name"]) for m in messages if m.get("name")},
            tool_names=tool_names_of(payload.get("tools")),
            json_requested=isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"),
            stream=bool(payload.get("stream")),
            model=str(payload.get("model") or ""),
        )


def tool_names_of(tools: Any) -> list[str]:
    """The function names of a request's ``tools``."""
    return [
        str(t["function"].get("name"))
        for t in (tools if isinstance(tools, list) else [])
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]


def _words(text: str | list[str]) -> list[str]:
    """Deltas of a text: explicit ones, or one per word with its leading whitespace."""
    if isinstance(text, list):
        return [t for t in text if t]
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    if tail:
        pieces = [*pieces[:-1], pieces[-1] + tail] if pieces else [tail]
    return pieces


@dataclass
class Piece:
    """One delta of a reply."""

    kind: Literal["reasoning", "content", "tool_header", "tool_arguments"]
    text: str
    index: int = 0  # of the tool call

    def delta_json(self, call: ToolCall | None = None, call_id: str = "") -> str:
        if self.kind == "reasoning":
            return _compact({"reasoning_content": self.text})
        if self.kind == "content":
            return _compact({"content": self.text})
        if self.kind == "tool_header":
            assert call is not None
            head = {"index": self.index, "id": call_id, "type": "function"}
            return _compact({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
        return _compact({"tool_calls": [{"index": self.index, "function": {"arguments": self.text}}]})


@dataclass
class Plan:
    """A reply made concrete for one request: its deltas (cut by max_tokens), ids, finish reason, usage."""

    reply: Reply
    pieces: list[Piece]
    call_ids: list[str]
    finish_reason: str
    usage: dict[str, int]

    @classmethod
    def of(cls, reply: Reply, payload: dict[str, Any], call: int) -> Plan:
        text = json.dumps(reply.json_) if "json_" in reply.model_fields_set else reply.text
        pieces = [Piece("reasoning", t) for t in _words(reply.reasoning)]
        pieces += [Piece("content", t) for t in _words(text)]
        for i, tc in enumerate(reply.tool_calls):
            pieces.append(Piece("tool_header", "", i))
            args = tc.arguments_text()
            step = reply.argument_chunk
            pieces += [Piece("tool_arguments", args[k : k + step], i) for k in range(0, len(args), step)]
        limit = wire.max_tokens_of(payload)
        cut = limit is not None and limit < len(pieces)
        if cut:
            pieces = pieces[:limit]
        if cut:
            finish = "length"
        elif reply.finish_reason is not None:
            finish = reply.finish_reason
        else:
            finish = "tool_calls" if any(p.kind == "tool_header" for p in pieces) else "stop"
        given = reply.usage or Usage()
        prompt = (
            given.prompt_tokens
            if given.prompt_tokens is not None
            else wire.count_prompt_tokens(payload.get("messages"))
        )
        completion = given.completion_tokens if given.completion_tokens is not None else len(pieces)
        ids = [tc.id or f"call_{call}_{i}" for i, tc in enumerate(reply.tool_calls)]
        return cls(reply, pieces, ids, finish, wire.usage_of(prompt, completion))

    def delta_json(self, piece: Piece) -> str:
        if piece.kind == "tool_header":
            return piece.delta_json(self.reply.tool_calls[piece.index], self.call_ids[piece.index])
        return piece.delta_json()

    def message(self, extra_content: str = "") -> dict[str, Any]:
        """The assistant message the kept deltas add up to (what a non-streamed reply carries)."""
        content = "".join(p.text for p in self.pieces if p.kind == "content") + extra_content
        reasoning = "".join(p.text for p in self.pieces if p.kind == "reasoning")
        calls: dict[int, dict[str, Any]] = {}
        for p in self.pieces:
            if p.kind == "tool_header":
                name = self.reply.tool_calls[p.index].name
                calls[p.index] = {
                    "id": self.call_ids[p.index],
                    "type": "function",
                    "function": {"name": name},
                }
                calls[p.index]["function"]["arguments"] = ""
            elif p.kind == "tool_arguments":
                calls[p.index]["function"]["arguments"] += p.text
        message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = list(calls.values())
        message["refusal"] = None
        return message

    def summary(self) -> dict[str, Any]:
        """What the record keeps of the reply."""
        message = self.message()
        return {
            "content": message["content"],
            "reasoning": message.get("reasoning_content"),
            "tool_calls": [
                {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                for c in message.get("tool_calls", [])
            ],
            "finish_reason": self.finish_reason,
            "usage": self.usage,
        }


# ---------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ScriptedStats(wire.ServerStats):
    unmatched: int = 0  # requests no rule matched (and no default)


@dataclass
class Record:
    """One chat request as received, and what became of it."""

    data: dict[str, Any]
    outcome: Outcome = field(default_factory=Outcome)
    done: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.data, "outcome": self.outcome.status if self.done else "running"}


class ScriptedLLMServer(wire.FakeServer):
    """Answers each chat request with the reply of the first matching rule of its script."""

    stats: ScriptedStats

    def __init__(self, script: ScriptLike | None = None, log_size: int = DEFAULT_LOG_SIZE) -> None:
        super().__init__()
        self.stats = ScriptedStats()
        self.log: collections.deque[Record] = collections.deque(maxlen=log_size)
        self._received = 0
        self.load(INITIAL_SCRIPT if script is None else as_script(script))

    def load(self, script: Script) -> None:
        self.script = script
        self.used = [0] * len(script.rules)
        self.calls = 0

    def reset(self) -> None:
        """Forget the recorded requests and zero the counters (the script and its state stay)."""
        self.log.clear()
        self._received = 0
        self.stats.reset()

    def pick(self, chat: ChatView, call: int) -> tuple[int | None, Reply | None]:
        for i, candidate in enumerate(self.script.rules):
            if candidate.times is not None and self.used[i] >= candidate.times:
                continue
            if candidate.match.matches(chat, call):
                self.used[i] += 1
                return i, candidate.reply
        return None, self.script.default

    def script_state(self) -> dict[str, Any]:
        rules = []
        for i, r in enumerate(self.script.rules):
            spent = r.times is not None and self.used[i] >= r.times
            rules.append(
                {"index": i, "label": r.label, "times": r.times, "used": self.used[i], "spent": spent}
            )
        script = self.script.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return {"script": script, "rules": rules, "calls": self.calls}

    # -- control endpoints ------------------------------------------------------------------------------
    async def route(self, conn: Connection, req: Request, path: str) -> bool | None:
        if path == "/script":
            if req.method == "POST":
                try:
                    self.load(Script.model_validate(req.json()))
                except (ValidationError, ValueError) as exc:
                    conn.write(wire.bad_request(f"invalid script: {exc}"))
                    return True
            conn.write(wire.json_response(self.script_state()))
        elif path == "/requests":
            conn.write(wire.json_response({"requests": [r.as_dict() for r in self.log]}))
        elif path == "/reset" and req.method == "POST":
            self.reset()
            conn.write(wire.json_response(self.stats_snapshot()))
        else:
            return None
        return True

    # -- chat completions -------------------------------------------------------------------------------
    def _record(self, req: Request, payload: dict[str, Any], call: int, outcome: Outcome) -> Record:
        tools = payload.get("tools")
        data = {
            "index": self._received,
            "call": call,
            "at": time.time(),
            "method": req.method,
            "path": req.path,
            "stream": bool(payload.get("stream")),
            "model": payload.get("model"),
            "messages": payload.get("messages"),
            "tools": tools,
            "tool_names": tool_names_of(tools),
            "tool_choice": payload.get("tool_choice"),
            "parallel_tool_calls": payload.get("parallel_tool_calls"),
            "response_format": payload.get("response_format"),
            "max_tokens": wire.max_tokens_of(payload),
            "stream_options": payload.get("stream_options"),
            "body": payload,
            "rule": None,
            "label": None,
            "fault": None,
            "reply": None,
        }
        self._received += 1
        record = Record(data, outcome)
        self.log.append(record)
        return record

    async def chat(self, conn: Connection, req: Request, payload: dict[str, Any], outcome: Outcome) -> bool:
        call = self.calls
        self.calls += 1
        record = self._record(req, payload, call, outcome)
        try:
            return await self._answer(conn, payload, call, record)
        finally:
            record.done = True

    async def _answer(self, conn: Connection, payload: dict[str, Any], call: int, record: Record) -> bool:
        outcome = record.outcome
        chat = ChatView.of(payload)
        index, reply = self.pick(chat, call)
        if reply is None:
            outcome.status = "unmatched"
            self.stats.unmatched += 1
            message = (
                f"scripted LLM: no rule matches call {call} (last {chat.last_role} message: "
                f"{chat.last_text[:200]!r}; tools: {chat.tool_names}; system: {chat.system[:200]!r})"
            )
            print(message, file=sys.stderr, flush=True)
            conn.write(
                wire.response(400, wire.error_body(message, "invalid_request_error", "scripted_llm_no_rule"))
            )
            return True
        if index is not None:
            record.data.update(rule=index, label=self.script.rules[index].label)
        plan = Plan.of(reply, payload, call)
        record.data["reply"] = plan.summary()
        fault = reply.fault
        if fault is not None:
            record.data["fault"] = fault.kind
            outcome.status = "fault"
            if fault.kind == "http" or (fault.kind == "error" and not chat.stream):
                conn.write(
                    wire.response(
                        fault.status,
                        wire.error_body(fault.message, fault.type, fault.code),
                        headers=fault.headers,
                    )
                )
                return True
            if fault.after is None and fault.kind in ("hang", "drop"):
                return await _stop_answering(conn, fault)
        if chat.stream:
            return await self._stream(conn, payload, plan)
        return await self._complete(conn, payload, plan)

    async def _complete(self, conn: Connection, payload: dict[str, Any], plan: Plan) -> bool:
        reply, fault = plan.reply, plan.reply.fault
        await asyncio.sleep((reply.ttft_ms + reply.token_ms * max(0, len(plan.pieces) - 1)) / 1000.0)
        if fault is not None and fault.kind == "garbage":
            conn.write(wire.response(200, "".join(line + "\n" for line in fault.lines).encode()))
            return True
        huge = _huge_text(fault.bytes) if fault is not None and fault.kind == "huge" else ""
        model = str(payload.get("model") or self.model_id)
        body = wire.completion_body(
            self.completion_id(), int(time.time()), model, plan.message(huge), plan.finish_reason, plan.usage
        )
        if fault is not None and fault.kind in ("hang", "drop"):
            whole = wire.response(200, body)
            conn.write(whole[: len(whole) // 2])  # headers and half the body
            return await _stop_answering(conn, fault)
        conn.write(wire.response(200, body))
        return True

    async def _stream(self, conn: Connection, payload: dict[str, Any], plan: Plan) -> bool:
        reply, fault = plan.reply, plan.reply.fault
        model = str(payload.get("model") or self.model_id)
        fmt = wire.ChunkFormat(self.completion_id(), int(time.time()), model, wire.include_usage(payload))
        conn.write(wire.STREAM_HEAD)
        text_first = any(p.kind != "tool_header" for p in plan.pieces[:1]) or not plan.pieces
        conn.write(
            fmt.delta(
                '{"role":"assistant","content":""}' if text_first else '{"role":"assistant","content":null}'
            )
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        fault_at = None if fault is None else (fault.after or 0)
        for i, piece in enumerate(plan.pieces):
            if fault_at == i:
                assert fault is not None
                stop = await _fault_in_stream(conn, fmt, fault)
                if stop is not None:
                    return stop
            delay = start + (reply.ttft_ms + reply.token_ms * i) / 1000.0 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            conn.write(fmt.delta(plan.delta_json(piece)))
            await conn.drain()
        if fault_at is not None and fault_at >= len(plan.pieces):
            assert fault is not None
            stop = await _fault_in_stream(conn, fmt, fault)
            if stop is not None:
                return stop
        conn.write(fmt.end(plan.finish_reason, plan.usage))
        return True


def _huge_text(size: int) -> str:
    unit = "lorem ipsum dolor sit amet "
    return (unit * (size // len(unit) + 1))[:size]


async def _stop_answering(conn: Connection, fault: Fault) -> bool:
    """``hang``: wait for the client to go away (the handler is cancelled then); ``drop``: close now."""
    if fault.kind == "hang":
        await asyncio.Event().wait()
    conn.close()
    return False


async def _fault_in_stream(conn: Connection, fmt: wire.ChunkFormat, fault: Fault) -> bool | None:
    """Inject ``fault`` into a stream; None: the reply goes on, else the handler's result."""
    if fault.kind == "garbage":
        conn.write(wire.chunk("".join(line + "\n" for line in fault.lines).encode() + b"\n"))
        return None
    if fault.kind == "huge":
        conn.write(fmt.content(_huge_text(fault.bytes)))
        await conn.drain()
        return None
    if fault.kind == "error":
        conn.write(wire.stream_error(fault.message, fault.type, fault.code))
        return True
    return await _stop_answering(conn, fault)


# ---------------------------------------------------------------------------------------------------------
# Handles: in a thread of this process, or in a subprocess
# ---------------------------------------------------------------------------------------------------------
class _ScriptControl(wire.ServerHandle):
    """What a test does with a running scripted LLM (over its control endpoints, whichever way it runs)."""

    def load_script(self, script: ScriptLike) -> None:
        """Replace the script (validated here first, so a mistake raises in the test)."""
        self.post("/script", as_script(script).model_dump(mode="json", by_alias=True, exclude_unset=True))

    def script_state(self) -> dict[str, Any]:
        """The script, how many times each rule answered (``rules[i]["used"]``), and the calls so far."""
        data: dict[str, Any] = self.get("/script")
        return data

    def unused_rules(self) -> list[dict[str, Any]]:
        """Rules with a ``times`` that did not answer that many times (a team that took another path)."""
        rules: list[dict[str, Any]] = self.script_state()["rules"]
        return [r for r in rules if r["times"] is not None and not r["spent"]]

    def requests(self) -> list[dict[str, Any]]:
        """Every chat request received since the last ``reset()`` (the last 10,000), oldest first."""
        data: list[dict[str, Any]] = self.get("/requests")["requests"]
        return data

    def reset(self) -> None:
        """Forget the recorded requests and zero the counters; the script stays as it is."""
        self.post("/reset")

    def wait_stats(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0, interval: float = 0.02
    ) -> dict[str, Any]:
        """Poll ``stats()`` until ``predicate`` holds or ``timeout`` passes; returns the last stats
        (``assert llm.wait_stats(lambda s: s["open_streams"] == 0, 2)["open_streams"] == 0``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                stats = self.stats()
            except OSError:
                # A fake busy writing many streams on a loaded machine may answer its control
                # endpoint late (urllib's timeout): that is "not yet", until the deadline.
                if time.monotonic() >= deadline:
                    raise
                continue
            if predicate(stats) or time.monotonic() >= deadline:
                return stats
            time.sleep(interval)

    async def wait_stats_async(
        self, predicate: Callable[[dict[str, Any]], bool], interval: float = 0.02
    ) -> dict[str, Any]:
        """``wait_stats`` for async tests, bounded by the caller (``async with asyncio.timeout(2):``): it does
        not block the caller's event loop, where an in-process service must go on closing its calls."""
        # polling: the counters live in another thread or process, there is no event to await here
        while not predicate(stats := await asyncio.to_thread(self.stats)):  # noqa: ASYNC110
            await asyncio.sleep(interval)
        return stats


class ScriptedLLMThread(wire.ThreadHandle, _ScriptControl):
    """The scripted LLM in a background thread with its own event loop (in-process tests)."""

    server: ScriptedLLMServer


class ScriptedLLMProcess(wire.SubprocessHandle, _ScriptControl):
    """The scripted LLM in its own process (tests of a live server: every gunicorn worker calls it)."""


def start_scripted_llm_thread(script: ScriptLike | None = None, port: int = 0) -> ScriptedLLMThread:
    """Serve on 127.0.0.1 (port 0: a free one) from a background thread of this process."""
    return ScriptedLLMThread(ScriptedLLMServer(script), HOST, port)


def start_scripted_llm_process(
    script: ScriptLike | None = None,
    port: int = 0,
    *,
    log_path: str | Path | None = None,
    startup_timeout: float = 20.0,
) -> ScriptedLLMProcess:
    """Serve on 127.0.0.1 from a subprocess (``python -m loadtests.scripted_llm``); stderr to ``log_path``."""
    proc, bound = wire.spawn(
        "loadtests.scripted_llm",
        ["--port", str(port)],
        PORT_LINE,
        log_path=log_path,
        startup_timeout=startup_timeout,
    )
    handle = ScriptedLLMProcess(proc, HOST, bound)
    if script is not None:
        try:
            handle.load_script(script)
        except BaseException:
            handle.stop()
            raise
    return handle


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.scripted_llm", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed on stdout)")
    p.add_argument("--script", type=Path, default=None, help="a script (JSON) to load at start")
    a = p.parse_args(argv)
    script = Script.model_validate_json(a.script.read_text()) if a.script else None
    asyncio.run(
        wire.serve_until_signalled(ScriptedLLMServer(script), HOST, a.port, PORT_LINE, "scripted LLM")
    )


if __name__ == "__main__":
    main()
