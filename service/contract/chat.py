"""OpenAI chat-completions wire types: the request `Input`, the response `Output` and stream chunks.

Field names and shapes follow the OpenAI API. The extensions are optional fields that clients
ignore: `stream_activity` on the request; `reasoning_content` / `reasoning` (the team's activity, the
names DeepSeek/LiteLLM and vLLM/Ollama use), `final_answer_agent` and `input_required` on the answer."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.contract import unsupported
from service.contract.activity import ActivityMode

# Hard ceilings of the schema; the configurable limits (MAX_MESSAGES, MAX_MESSAGE_CHARS) are
# checked against the settings when the request is served.
SCHEMA_MAX_MESSAGES = 100_000
SCHEMA_MAX_TEXT_CHARS = 10_000_000
SCHEMA_MAX_PARTS = 1_000

ShortText = Annotated[str, StringConstraints(max_length=256)]


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def _absent(value: object) -> bool:
    """Extension fields are left out when they say nothing (clients see OpenAI's shape)."""
    return value is None


class TextContentPart(BaseModel):
    """A `{"type": "text", "text": ...}` content part."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: Annotated[str, StringConstraints(max_length=SCHEMA_MAX_TEXT_CHARS)]


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    # A data URL (`data:image/png;base64,...`), or an http(s) URL the service fetches where allowed.
    url: Annotated[str, StringConstraints(min_length=1, max_length=SCHEMA_MAX_TEXT_CHARS)]
    detail: Literal["auto", "low", "high"] | None = None


class ImageContentPart(BaseModel):
    """A `{"type": "image_url", "image_url": {"url": ..., "detail": ...}}` part (user messages only)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextContentPart | ImageContentPart, Field(discriminator="type")]
PART_TYPES = ("text", "image_url")


def _check_parts(messages: Any) -> Any:
    """A clear message for a content part type the service does not take (pydantic's own, for a
    union of a string and a list, lists every alternative). One pass over the raw messages."""
    if not isinstance(messages, list):
        return messages
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for position, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PART_TYPES:
                raise ValueError(
                    f"message {index}, content part {position} has type {str(kind)[:40]!r}: the parts "
                    "taken are `text` and `image_url`"
                )
    return messages


class ChatMessage(BaseModel):
    """One message of the conversation. The role decides who said it; content is never parsed for roles."""

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: (
        Annotated[str, StringConstraints(max_length=SCHEMA_MAX_TEXT_CHARS)]
        | Annotated[list[ContentPart], Field(max_length=SCHEMA_MAX_PARTS)]
        | None
    ) = None
    name: ShortText | None = None

    def text(self) -> str:
        """The message text; text parts are joined with a newline (images left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if isinstance(part, TextContentPart))

    def images(self) -> list[tuple[int, ImageUrl]]:
        """The message's images, with their part positions."""
        if not isinstance(self.content, list):
            return []
        return [
            (index, part.image_url)
            for index, part in enumerate(self.content)
            if isinstance(part, ImageContentPart)
        ]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class Input(BaseModel):
    """The body of `POST /v1/chat/completions`. Unknown fields are accepted and ignored, as OpenAI does.

    `temperature`, `top_p` and `metadata` are accepted for compatibility; a served team keeps the
    sampling settings of its own model clients. `max_tokens` caps the completion tokens returned.
    `tools` are accepted and never called; what cannot be honoured (`tool_choice: "required"`,
    `logprobs`, `stop`, ...) is refused by name (`service.contract.unsupported`); `response_format`
    `json_object` / `json_schema` is honoured (`answer_format`).
    """

    model_config = ConfigDict(
        extra="ignore",
        strict=True,  # a JSON value of the wrong type is refused (no `false` for a number), as documented
        json_schema_extra={
            "examples": [{"model": "demo-team", "messages": [{"role": "user", "content": "Hello"}]}]
        },
    )

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=SCHEMA_MAX_MESSAGES)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: ShortText | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    metadata: (
        Annotated[dict[ShortText, Annotated[str, StringConstraints(max_length=512)]], Field(max_length=16)]
        | None
    ) = None
    # Extension: where the team's activity goes (default: the `STREAM_ACTIVITY` setting).
    stream_activity: ActivityMode | None = None
    # Client tools: accepted, never called (a team runs its own); see `service.contract.unsupported`.
    tools: Annotated[list[Any], Field(max_length=SCHEMA_MAX_PARTS)] | None = None
    functions: Annotated[list[Any], Field(max_length=SCHEMA_MAX_PARTS)] | None = None
    parallel_tool_calls: bool | None = None
    tool_choice: Any = None
    function_call: Any = None
    response_format: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    stop: Any = None
    audio: Any = None
    modalities: Any = None

    _tool_choice = field_validator("tool_choice")(unsupported.check_tool_choice)
    _function_call = field_validator("function_call")(unsupported.check_function_call)
    _response_format = field_validator("response_format")(unsupported.check_response_format)
    _logprobs = field_validator("logprobs")(unsupported.check_logprobs)
    _top_logprobs = field_validator("top_logprobs")(unsupported.check_top_logprobs)
    _stop = field_validator("stop")(unsupported.check_stop)
    _audio = field_validator("audio")(unsupported.check_audio)
    _modalities = field_validator("modalities")(unsupported.check_modalities)

    _parts = field_validator("messages", mode="before")(_check_parts)

    @field_validator("messages")
    @classmethod
    def _needs_a_user_message(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        for index, message in enumerate(messages):
            if message.role != "user" and isinstance(message.content, list) and message.images():
                raise ValueError(f"message {index}: only user messages may carry images, not {message.role}")
        if not any(message.role == "user" and (message.text() or message.images()) for message in messages):
            raise ValueError("at least one message with the role 'user' must have text or image content")
        return messages

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def completion_token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def answer_format(self) -> dict[str, Any] | None:
        """The JSON format asked for the answer (`response_format` as a model call takes it); None: text."""
        fmt: dict[str, Any] | None = self.response_format
        return None if fmt is None or fmt.get("type") == "text" else fmt


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


FinishReason = Literal["stop", "length"]


class InputRequired(BaseModel):
    """Extension: the run stopped because an agent waits for a person; the answer is its question."""

    agent: str
    prompt: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    name: str | None = None
    # Extension (DeepSeek/LiteLLM and vLLM/Ollama names): the team's activity, never the answer.
    reasoning_content: str | None = Field(None, exclude_if=_absent)
    reasoning: str | None = Field(None, exclude_if=_absent)


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason = "stop"


class Output(BaseModel):
    """A non-streaming `chat.completion` response."""

    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[Choice]
    usage: Usage
    # Extensions: the agent that gave the answer; set when the team waits for a person's input.
    final_answer_agent: str | None = Field(None, exclude_if=_absent)
    input_required: InputRequired | None = Field(None, exclude_if=_absent)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, Any]
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One `chat.completion.chunk` of a stream; all chunks of one stream share `id` and `created`.

    Extra fields (`final_answer_agent`, `input_required` on the finishing chunk) are allowed and
    serialized.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
