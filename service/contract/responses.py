"""OpenAI Responses and Conversations wire types (the `openai` package's `openai.types.responses` and
`openai.types.conversations` are the reference).

Requests: `CreateResponse` (`POST /v1/responses`), `CreateConversation`, `UpdateConversation`,
`CreateConversationItems`. Unknown request fields are ignored, as OpenAI servers do; `tools`,
`temperature`, `top_p`, `reasoning`, `include`, ... are accepted and have no effect (a team runs its
own tools, with its own model settings); `text.format` `json_object` / `json_schema` is honoured;
what cannot be honoured (`tool_choice: "required"`, `background`, ...) is refused by name
(`service.contract.unsupported`).

Responses: `ResponseObject` with `message` and `reasoning` output items, `ConversationObject`, lists
of items. The extensions are optional fields clients ignore: `input_required` and
`final_answer_agent` on a response (the same as on a chat completion), `agent` and `activity` on a
reasoning item (the agent whose turn it is, the structured activity of that turn).
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
)

from service.contract import unsupported
from service.contract.chat import (
    SCHEMA_MAX_MESSAGES,
    SCHEMA_MAX_PARTS,
    SCHEMA_MAX_TEXT_CHARS,
    ChatMessage,
    InputRequired,
)

ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_METADATA_PAIRS = 16

Text = Annotated[str, StringConstraints(max_length=SCHEMA_MAX_TEXT_CHARS)]
ObjectId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=512)],
    ],
    Field(max_length=MAX_METADATA_PAIRS),
]
ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


def _absent(value: object) -> bool:
    """Extension fields are left out when they say nothing (clients see OpenAI's shape)."""
    return value is None


def new_id(prefix: str) -> str:
    """`resp_…`, `msg_…`, `rs_…`, `conv_…`: a prefix and 48 random hex digits (not guessable)."""
    return f"{prefix}_{secrets.token_hex(24)}"


def now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------------------------- input
class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Part):
    """A text content part: `input_text` (a caller's message), `output_text` (an assistant message
    sent back as history), or chat-style `text`. Files and audio are not supported."""

    type: Literal["input_text", "output_text", "text"]
    text: Text


class RefusalPart(_Part):
    type: Literal["refusal"]
    refusal: Text


class ImagePart(_Part):
    """An `input_image` part: `image_url` a data URL, or an http(s) URL the service fetches where
    allowed (`file_id` needs a Files API, which the service does not offer)."""

    type: Literal["input_image"]
    image_url: Annotated[str, StringConstraints(min_length=1, max_length=SCHEMA_MAX_TEXT_CHARS)] | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


Part = Annotated[TextPart | RefusalPart | ImagePart, Field(discriminator="type")]


class InputMessage(BaseModel):
    """A message item (`EasyInputMessage`, an input `message`, or an assistant `message` sent back)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Text | Annotated[list[Part], Field(max_length=SCHEMA_MAX_PARTS)]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if isinstance(part, TextPart))

    def images(self) -> list[tuple[int, ImagePart]]:
        """The message's `input_image` parts, with their positions."""
        if isinstance(self.content, str):
            return []
        return [(index, part) for index, part in enumerate(self.content) if isinstance(part, ImagePart)]

    def as_chat(self) -> ChatMessage:
        """The message as chat-completions has it (text parts joined, images as `image_url` parts)."""
        images = self.images()
        if not images:
            return ChatMessage(role=self.role, content=self.text())
        parts: list[Any] = [{"type": "text", "text": self.text()}] if self.text() else []
        parts += [
            {"type": "image_url", "image_url": {"url": part.image_url or "", "detail": part.detail}}
            for _, part in images
        ]
        return ChatMessage.model_validate({"role": self.role, "content": parts})


class InputReasoning(BaseModel):
    """A reasoning item a stateless client sends back with the history: accepted and skipped (it is
    the team's own activity, not part of the conversation)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["reasoning"]


class ItemReference(BaseModel):
    """`{"type": "item_reference", "id": ...}`: an item stored earlier (an input or output item of a
    stored response, or a conversation's item) stands here; resolved before the turn runs."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["item_reference"]
    id: ObjectId


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


_UNSUPPORTED_ITEM = (
    "the service takes `message` items, `item_reference` items and `reasoning` items sent back; a team "
    "runs its own tools, so there are no `function_call` results for a client to send"
)
InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[InputReasoning, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_kind, custom_error_type="unsupported_item", custom_error_message=_UNSUPPORTED_ITEM),
]


_ITEM_TYPES = ("message", "reasoning", "item_reference")
_PART_TYPES = ("input_text", "output_text", "text", "refusal", "input_image")


def check_items(value: Any) -> Any:
    """A clear message for the item and part types the service does not take (pydantic's own, for
    a union, lists every alternative)."""
    if not isinstance(value, list):
        return value
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind not in _ITEM_TYPES:
            raise ValueError(f"item {index} has type {str(kind)[:40]!r}: {_UNSUPPORTED_ITEM}")
        content = item.get("content")
        for position, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and part.get("type") == "input_image" and item.get("role") != "user":
                raise ValueError(f"item {index}: only user messages may carry images")
            if isinstance(part, dict) and part.get("type") not in _PART_TYPES:
                raise ValueError(
                    f"item {index}, content part {position} has type {str(part.get('type'))[:40]!r}: "
                    "the parts taken are text parts and `input_image`"
                )
    return value


class ConversationRef(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    id: ObjectId


class CreateResponse(BaseModel):
    """The body of `POST /v1/responses`."""

    model_config = ConfigDict(
        extra="ignore",
        strict=True,
        json_schema_extra={"examples": [{"model": "demo-team", "input": "What is AutoGen?"}]},
    )

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    input: Text | Annotated[list[InputItem], Field(max_length=SCHEMA_MAX_MESSAGES)] = ""
    instructions: Text | None = None
    stream: bool | None = False
    previous_response_id: ObjectId | None = None
    conversation: ObjectId | ConversationRef | None = None
    store: bool | None = True
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    metadata: Metadata | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    # Accepted for compatibility, without effect (see the module docstring).
    tools: Annotated[list[Any], Field(max_length=SCHEMA_MAX_PARTS)] | None = None
    tool_choice: Any = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    parallel_tool_calls: bool | None = None
    text: Any = None
    background: Any = None
    top_logprobs: Any = None

    _check_input = field_validator("input", mode="before")(check_items)
    _tool_choice = field_validator("tool_choice")(unsupported.check_tool_choice)
    _text = field_validator("text")(unsupported.check_text_config)
    _background = field_validator("background")(unsupported.check_background)
    _top_logprobs = field_validator("top_logprobs")(unsupported.check_top_logprobs)

    @property
    def answer_format(self) -> dict[str, Any] | None:
        """The JSON format asked for the answer (`text.format`, as a chat model call takes it)."""
        return unsupported.chat_response_format(self.text)

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation

    def messages(self) -> list[InputMessage]:
        """The message items of `input` (a string is one user message); reasoning items skipped, and
        item references (resolved into messages before: `service.serving.item_references`)."""
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)] if self.input else []
        return [item for item in self.input if isinstance(item, InputMessage)]


# -------------------------------------------------------------------------------------------- output
class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class InputText(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class OutputMessage(BaseModel):
    """The team's answer: one assistant `message` with one `output_text` part."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "completed"
    content: list[OutputText]
    # OpenAI's label of an assistant message that is the final answer (not commentary).
    phase: Literal["final_answer"] | None = "final_answer"


class StoredInputMessage(BaseModel):
    """A caller's message as stored and listed (`input_items`, conversation items)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    status: ItemStatus = "completed"
    content: list[InputText | OutputText]


class SummaryText(BaseModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningItem(BaseModel):
    """One agent's turn of the team's work, as readable text in `summary`.

    Extensions: `agent` (whose turn), `activity` (the structured events of the turn: tool calls and
    results, handoffs, ..., the shapes of the chat-completions `delta.activity`).
    """

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[SummaryText]
    status: ItemStatus = "completed"
    encrypted_content: None = None
    agent: str | None = Field(None, exclude_if=_absent)
    activity: list[dict[str, Any]] = Field(default_factory=list)


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int) -> ResponseUsage:
        return cls(
            input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
        )


class ResponseError(BaseModel):
    code: str | None = None
    message: str


class IncompleteDetails(BaseModel):
    # `max_output_tokens`: the request's max_output_tokens cut the answer; `max_messages`: the
    # service's cap on agent turns (MAX_AGENT_TURNS) stopped the team.
    reason: Literal["max_output_tokens", "max_messages"]


class ConversationField(BaseModel):
    id: str


class TextFormat(BaseModel):
    """The answer's format as the request asked for it (`json_schema` keeps its name, schema, strict)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"] = "text"


class TextConfig(BaseModel):
    format: TextFormat = Field(default_factory=TextFormat)


class ResponseObject(BaseModel):
    """A response (`object: "response"`), as returned, streamed in lifecycle events, and stored."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    instructions: str | None = None
    output: list[ReasoningItem | OutputMessage] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    previous_response_id: str | None = None
    conversation: ConversationField | None = None
    store: bool = True
    metadata: dict[str, str] = Field(default_factory=dict)
    max_output_tokens: int | None = None
    user: str | None = None
    background: bool = False
    parallel_tool_calls: bool = False
    tool_choice: Literal["auto"] = "auto"
    tools: list[Any] = Field(default_factory=list)
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfig = Field(default_factory=TextConfig)
    truncation: Literal["disabled"] = "disabled"
    # Extensions: the agent that gave the answer; set when the team waits for a person's answer.
    final_answer_agent: str | None = Field(None, exclude_if=_absent)
    input_required: InputRequired | None = Field(None, exclude_if=_absent)


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class ItemList(BaseModel):
    """A page of items (`input_items`, conversation items): `after=<last_id>` gets the next page."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


# Stream event types, in the order a response streams them.
RESPONSE_CREATED = "response.created"
RESPONSE_IN_PROGRESS = "response.in_progress"
OUTPUT_ITEM_ADDED = "response.output_item.added"
SUMMARY_PART_ADDED = "response.reasoning_summary_part.added"
SUMMARY_TEXT_DELTA = "response.reasoning_summary_text.delta"
SUMMARY_TEXT_DONE = "response.reasoning_summary_text.done"
SUMMARY_PART_DONE = "response.reasoning_summary_part.done"
CONTENT_PART_ADDED = "response.content_part.added"
OUTPUT_TEXT_DELTA = "response.output_text.delta"
OUTPUT_TEXT_DONE = "response.output_text.done"
CONTENT_PART_DONE = "response.content_part.done"
OUTPUT_ITEM_DONE = "response.output_item.done"
RESPONSE_COMPLETED = "response.completed"
RESPONSE_INCOMPLETE = "response.incomplete"
RESPONSE_FAILED = "response.failed"
