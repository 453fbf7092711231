"""The protocols the service speaks, registered once.

Each served API is one `ApiProtocol` in `PROTOCOLS`: its name (the `api` label of the request
metrics, created at 0 for each) and the URL prefixes of its routes (which API a rate-limited call is
counted under). Metrics, rate-limit accounting, dashboards (their `api` variable reads the label
values) and the tests' loops over APIs all read this registry: adding a protocol adds one entry here
and its own files (contract, encoder, serving parts, route); see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiProtocol:
    """One served API: `name` labels its metrics; `prefixes` are the paths of its routes."""

    name: str
    prefixes: tuple[str, ...]
    description: str = ""


CHAT_COMPLETIONS = ApiProtocol(
    "chat_completions", ("/v1/chat/completions",), "OpenAI chat completions (`POST /v1/chat/completions`)"
)
RESPONSES = ApiProtocol(
    "responses",
    ("/v1/responses", "/v1/conversations"),
    "OpenAI Responses API with stored responses and conversations",
)

PROTOCOLS: tuple[ApiProtocol, ...] = (CHAT_COMPLETIONS, RESPONSES)
# The `api` label values, in registration order.
API_NAMES: tuple[str, ...] = tuple(protocol.name for protocol in PROTOCOLS)


def protocol_of_path(path: str) -> ApiProtocol | None:
    """The protocol whose routes serve `path` (None for paths of no protocol: probes, models, pages)."""
    for protocol in PROTOCOLS:
        if path.startswith(protocol.prefixes):
            return protocol
    return None
