"""Request parameters a team cannot honour are refused by name, never dropped silently.

A served model is a team that runs its own tools with its own model settings. So:
- `tools` (and the legacy `functions`) are accepted and never called: chat UIs such as Open WebUI send
  their tool definitions with every request and must keep working. What a client cannot get is a
  tool call it asked for: `tool_choice: "required"` or a named function (`function_call` likewise)
  is a 400 naming `tool_choice`.
- `response_format` (chat) and `text.format` (Responses) of type `json_object` / `json_schema` are
  honoured (`service.serving.answer_format`: one formatting call on the team's answer); any other
  type is a 400.
- What a team's answer cannot carry is a 400 naming the parameter: `logprobs`, `top_logprobs`, audio
  output (`audio`, `modalities` with `"audio"`), `stop` sequences, and Responses' `background`.
- Sampling hints (`temperature`, `top_p`, `seed`, penalties, ...) stay accepted and unused: a team keeps
  the settings of its own model clients (documented in docs/clients.md).

The checks are pydantic validators: the error is the usual 400 with `param` set to the field.
"""

from __future__ import annotations

from typing import Any

MAX_SCHEMA_NAME_CHARS = 64


def check_tool_choice(value: Any) -> Any:
    """`auto` and `none` (or nothing) are what a team can honour; `required` or a named tool is refused."""
    if value is None or value in ("auto", "none"):
        return value
    if value == "required" or isinstance(value, dict):
        raise ValueError(
            "a served model is an AutoGen team that runs its own tools: it never calls a tool the client "
            "declares, so `tool_choice` can only be `auto` or `none` (client tools are accepted and "
            "ignored)"
        )
    raise ValueError("`tool_choice` must be `auto` or `none`")


def check_function_call(value: Any) -> Any:
    """The legacy form of `tool_choice`."""
    if value is None or value in ("auto", "none"):
        return value
    raise ValueError(
        "a served model never calls a function the client declares: "
        "`function_call` can only be `auto` or `none`"
    )


def _schema_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ValueError("`json_schema` must be an object with `name` and `schema`")
    name = spec.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_SCHEMA_NAME_CHARS:
        raise ValueError(f"the schema's `name` must be a string of 1-{MAX_SCHEMA_NAME_CHARS} characters")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise ValueError("the schema's `schema` must be a JSON Schema object")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ValueError("the schema's `strict` must be a boolean")
    return {"name": name, "schema": schema, **({"strict": strict} if strict is not None else {})}


def check_response_format(value: Any) -> Any:
    """Chat `response_format`: `text`, `json_object` or `json_schema` (with `json_schema.name/schema`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("`response_format` must be an object with a `type`")
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": _schema_spec(value.get("json_schema"))}
    raise ValueError(
        f"`response_format` type {str(kind)[:40]!r} cannot be honoured: "
        "use `text`, `json_object` or `json_schema`"
    )


def check_text_config(value: Any) -> Any:
    """Responses `text`: its `format` (`text`, `json_object`, or a flat `json_schema`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("`text` must be an object")
    fmt = value.get("format")
    if fmt is None:
        return value
    if not isinstance(fmt, dict):
        raise ValueError("`text.format` must be an object with a `type`")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {**value, "format": {"type": kind}}
    if kind == "json_schema":
        return {**value, "format": {"type": "json_schema", **_schema_spec(fmt)}}
    raise ValueError(
        f"`text.format` type {str(kind)[:40]!r} cannot be honoured: "
        "use `text`, `json_object` or `json_schema`"
    )


def check_logprobs(value: Any) -> Any:
    if value:
        raise ValueError("`logprobs` cannot be honoured: a team's answer carries no log probabilities")
    return value


def check_top_logprobs(value: Any) -> Any:
    if value:
        raise ValueError("`top_logprobs` cannot be honoured: a team's answer carries no log probabilities")
    return value


def check_stop(value: Any) -> Any:
    if value:
        raise ValueError("`stop` sequences cannot be honoured: a team decides when its agents stop")
    return value


def check_audio(value: Any) -> Any:
    if value:
        raise ValueError("audio output cannot be honoured: a team answers in text")
    return value


def check_modalities(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or any(item != "text" for item in value):
        raise ValueError("only the `text` modality can be honoured: a team answers in text")
    return value


def check_background(value: Any) -> Any:
    if value:
        raise ValueError("`background` responses are not offered: stream the response, or wait for it")
    return value


def chat_response_format(text_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Responses `text` config as the chat-completions `response_format` a model call takes (None:
    plain text)."""
    if not text_config:
        return None
    fmt = text_config.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    spec = {key: fmt[key] for key in ("name", "schema", "strict") if key in fmt}
    return {"type": "json_schema", "json_schema": spec}
