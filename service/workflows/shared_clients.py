"""Model clients shared by every request of a worker.

A team is rebuilt per request (it holds conversation state), but its model clients are not:
an `OpenAIChatCompletionClient` owns an HTTP connection pool and a TLS context, which are
costly to create and should be reused. At load time the registry instantiates each model
client once and replaces it in the workflow JSON by a `SharedModelClient` reference; loading
the team per request then resolves the reference to the shared instance.
"""

from __future__ import annotations

import itertools
from typing import Any

from autogen_core import Component, ComponentBase
from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel

SHARED_CLIENT_PROVIDER = "service.workflows.shared_clients.SharedModelClient"

_clients: dict[str, ChatCompletionClient] = {}
_sequence = itertools.count(1)


class SharedModelClientConfig(BaseModel):
    key: str


class SharedModelClient(ComponentBase[SharedModelClientConfig], Component[SharedModelClientConfig]):
    """A component reference that loads as an already-built, shared `ChatCompletionClient`."""

    component_type = "model"
    component_config_schema = SharedModelClientConfig
    component_provider_override = SHARED_CLIENT_PROVIDER

    def _to_config(self) -> SharedModelClientConfig:  # never instantiated: a reference only
        raise NotImplementedError

    @classmethod
    def _from_config(cls, config: SharedModelClientConfig) -> Any:
        try:
            return _clients[config.key]
        except KeyError:
            raise ValueError(f"shared model client {config.key!r} is not loaded") from None


def share(client: ChatCompletionClient, label: str) -> dict[str, Any]:
    """Keep `client` for reuse and return the component JSON that refers to it."""
    key = f"{label}#{next(_sequence)}"
    _clients[key] = client
    return {"provider": SHARED_CLIENT_PROVIDER, "component_type": "model", "config": {"key": key}}


async def release(reference: dict[str, Any]) -> None:
    """Close and forget a shared client made by `share`."""
    client = _clients.pop(reference["config"]["key"], None)
    if client is not None:
        await client.close()
