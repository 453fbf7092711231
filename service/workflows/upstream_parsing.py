"""Chat completion chunks parsed by pydantic's compiled validator instead of the `openai` SDK's own
Python construction (`UPSTREAM_PARSING=lean`, the default).

The SDK turns every event of a stream into a `ChatCompletionChunk` with `construct_type`, which walks
the model's type hints in Python for every field of every chunk: about 0.2 ms per chunk, most of the
client-side CPU of a streamed model call (docs/runtime.md, "The upstream path"). The same model's
`model_validate` (pydantic-core) builds an equal object in a fifteenth of the time. A chunk that
does not validate (a provider off the schema) falls back to the SDK's lenient construction, so what
the SDK accepted before it still accepts, unchanged; extra fields (`reasoning_content`, ...) are kept
either way.

The SDK client under each autogen-ext model client gets this one override, applied at load
(`lean_parsing`): its class becomes a subclass of its own class (OpenAI or Azure OpenAI) that
overrides the SDK's response-data hook for chat completions and their chunks; every other response
is left to the SDK.
"""

from __future__ import annotations

from typing import Any, cast

import httpx2
import pydantic
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

_VALIDATED: frozenset[type[pydantic.BaseModel]] = frozenset({ChatCompletionChunk, ChatCompletion})


class LeanParsing(AsyncOpenAI):
    """The override, mixed into the SDK client's own class (see the module docstring)."""

    def _process_response_data(self, *, data: object, cast_to: type[Any], response: httpx2.Response) -> Any:
        if cast_to in _VALIDATED and isinstance(data, dict):
            try:
                return cast_to.model_validate(data)
            except pydantic.ValidationError:
                pass  # off the schema: the SDK's lenient construction, as without this class
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)


_lean_classes: dict[type[AsyncOpenAI], type[AsyncOpenAI]] = {}


def _lean_class(sdk_class: type[AsyncOpenAI]) -> type[AsyncOpenAI]:
    if issubclass(sdk_class, LeanParsing):
        return sdk_class
    lean = _lean_classes.get(sdk_class)
    if lean is None:
        made = type(f"Lean{sdk_class.__name__}", (LeanParsing, sdk_class), {})
        lean = _lean_classes[sdk_class] = cast(type[AsyncOpenAI], made)
    return lean


def lean_parsing(client: BaseOpenAIChatCompletionClient) -> None:
    """Parse the chat completions of an autogen-ext OpenAI (or Azure OpenAI) model client's SDK
    client with pydantic's validator (idempotent)."""
    sdk = client._client  # the openai SDK client (pinned versions; tested)
    sdk.__class__ = _lean_class(type(sdk))
