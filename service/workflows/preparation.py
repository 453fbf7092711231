"""How a workflow file is prepared once per worker, before any request: its turn cap, the service's
substitutes (a UserProxyAgent that never reads stdin, text-mention conditions that keep `sources`),
its runtime, and its model clients, tools and MCP workbenches built once and shared (`shared`), each
model client instrumented (`instrumented_client`) and bounded (`upstream_http`), or replaced by the
configured real LLM (`LLM_BASE_URL`)."""

from __future__ import annotations

import copy
import logging
from typing import Any, Literal

from autogen_core import ComponentLoader
from autogen_core.models import ChatCompletionClient
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient

from service.config import Settings
from service.workflows import shared
from service.workflows.guard import TEXT_MENTION_PROVIDERS, components
from service.workflows.instrumented_client import InstrumentedChatCompletionClient
from service.workflows.lean_teams import use_lean_runtime
from service.workflows.mcp import SharedMcpWorkbench
from service.workflows.terminations import SourcedTextMentionTermination
from service.workflows.upstream_http import guard as guard_upstream
from service.workflows.upstream_parsing import lean_parsing
from service.workflows.user_proxy import USER_PROXY_PROVIDERS, ServedUserProxyAgent

logger = logging.getLogger("service.workflows.registry")

DEMO_CLIENT_PROVIDER = "service.workflows.demo_client.DemoChatCompletionClient"
DEMO_CLIENT_ALIASES = (DEMO_CLIENT_PROVIDER, "DemoChatCompletionClient")
OPENAI_CLIENT_PROVIDER = "autogen_ext.models.openai.OpenAIChatCompletionClient"
MCP_WORKBENCH_PROVIDERS = frozenset(
    {"autogen_ext.tools.mcp.McpWorkbench", "autogen_ext.tools.mcp._workbench.McpWorkbench"}
)
STATIC_WORKBENCH_PROVIDERS = frozenset(
    {"autogen_core.tools.StaticWorkbench", "autogen_core.tools.StaticStreamWorkbench"}
)
# The role a team's own model client plays, for usage and spans (agents' clients carry the agent).
TEAM_CLIENT_ROLES = {
    "autogen_agentchat.teams.SelectorGroupChat": "selector",
    "autogen_agentchat.teams.MagenticOneGroupChat": "orchestrator",
}
# What autogen-ext is told about a configured LLM (LLM_BASE_URL); conformance tests build their clients alike.
LLM_MODEL_INFO: dict[str, Any] = {
    "vision": False,
    "function_calling": True,
    "json_output": True,
    "structured_output": False,
    "family": "unknown",
    "multiple_system_messages": True,
}
_MASKED_SECRET = frozenset("*")


class WorkflowLoadError(ValueError):
    """A workflow definition that cannot be served; the message says why."""


def model_name(spec: dict[str, Any]) -> str:
    """What a model client calls its model, for `gen_ai.request.model`."""
    config = spec.get("config") or {}
    if spec.get("provider") in DEMO_CLIENT_ALIASES:
        return f"embedded-{config.get('role', 'assistant')}"
    return str(config.get("model") or config.get("azure_deployment") or spec.get("provider", "model"))


class Preparation:
    """The preparation steps of a workflow document (edited in place), with the worker's settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def cap_turns(self, document: dict[str, Any]) -> int | None:
        """Cap the team's `max_turns`; the cap, when the service's is the one that binds."""
        config = document["config"]
        cap = self._settings.max_agent_turns
        current = config.get("max_turns")
        own = current if isinstance(current, int) and current > 0 else None
        config["max_turns"] = cap if own is None else min(own, cap)
        return cap if own is None or own > cap else None

    @staticmethod
    def substitute(document: dict[str, Any]) -> None:
        """Load UserProxyAgents as the service's (no stdin), and text-mention conditions with their
        `sources` (which AgentChat's own config drops)."""
        for node in components(document):
            if node["provider"] in USER_PROXY_PROVIDERS:
                node["provider"] = ServedUserProxyAgent.component_provider_override
            elif node["provider"] in TEXT_MENTION_PROVIDERS and (node.get("config") or {}).get("sources"):
                node["provider"] = SourcedTextMentionTermination.component_provider_override

    def choose_runtime(self, document: dict[str, Any], model_id: str) -> Literal["lean", "default"] | None:
        """Load the workflow's teams on the lean runtime where they can be (`lean_teams`); the
        log names the workflows whose teams keep AgentChat's default runtime, and why."""
        teams = list(components(document, "team"))
        if not teams:
            return None
        settings = self._settings
        if settings.agent_runtime == "default" or settings.autogen_runtime_tracing:
            reason = (
                "AGENT_RUNTIME=default" if settings.agent_runtime == "default" else "runtime tracing is on"
            )
            logger.info("teams on AgentChat's default runtime", extra={"model": model_id, "reason": reason})
            return "default"
        others = use_lean_runtime(teams)
        if not others:
            return "lean"
        logger.warning(
            "teams on AgentChat's default runtime",
            extra={"model": model_id, "reason": f"team types the lean runtime does not run: {others}"},
        )
        return "default"

    def owners(self, document: dict[str, Any]) -> dict[int, tuple[str, bool]]:
        """Model client node (by identity) -> (who calls it, whether its tokens stream to the client)."""
        owners: dict[int, tuple[str, bool]] = {}
        for team in components(document, "team"):
            config = team.get("config") or {}
            if isinstance(config.get("model_client"), dict):
                role = TEAM_CLIENT_ROLES.get(team["provider"], str(config.get("name") or "team"))
                owners[id(config["model_client"])] = (role, False)
        for node in components(document, "workbench"):
            config = node.get("config") or {}
            if isinstance(config.get("model_client"), dict):
                owners[id(config["model_client"])] = ("mcp", False)
        for agent in components(document, "agent"):
            config = agent.get("config") or {}
            if isinstance(config.get("model_client"), dict):
                streams = bool(config.get("model_client_stream", False))
                owners[id(config["model_client"])] = (str(config.get("name") or "agent"), streams)
        return owners

    def instrumented(self, spec: dict[str, Any], agent: str | None, streams: bool) -> ChatCompletionClient:
        try:
            client = ChatCompletionClient.load_component(spec)
        except Exception as exc:
            raise WorkflowLoadError(
                f"cannot build model client {spec.get('provider')!r}: {exc.__class__.__name__}: {exc}"
            ) from exc
        if isinstance(client, BaseOpenAIChatCompletionClient):
            guard_upstream(
                client,
                max_event_bytes=self._settings.upstream_max_event_bytes,
                max_body_bytes=self._settings.upstream_max_body_bytes,
            )
            if self._settings.upstream_parsing == "lean":
                lean_parsing(client)
        return InstrumentedChatCompletionClient(client, agent, model_name(spec), streams)

    def share_model_clients(
        self, document: dict[str, Any], model_id: str, references: list[dict[str, Any]]
    ) -> None:
        owners = self.owners(document)
        for node in list(components(document, "model")):
            if node.get("provider") in shared.SHARED_PROVIDERS:
                raise WorkflowLoadError("workflow files may not reference shared components directly")
            agent, streams = owners.get(id(node), (None, False))
            client = self.instrumented(self.configured_client_spec(node), agent, streams)
            reference = shared.share(client, "model", model_id)
            references.append(reference)
            node.clear()
            node.update(copy.deepcopy(reference))

    def share_tools_and_workbenches(
        self, document: dict[str, Any], model_id: str, references: list[dict[str, Any]]
    ) -> None:
        for node in list(components(document, "workbench")):
            if node["provider"] in MCP_WORKBENCH_PROVIDERS:
                workbench = SharedMcpWorkbench(copy.deepcopy(node), label=f"{model_id}:mcp")
                reference = shared.share(workbench, "workbench", model_id)
                references.append(reference)
                node.clear()
                node.update(copy.deepcopy(reference))
        for node in list(components(document, "tool")):
            if node["provider"] in shared.SHARED_PROVIDERS:
                continue
            # A tool that wraps an agent or a team (AgentTool, TeamTool) holds conversation state.
            if any(item is not node for item in components(node, "agent")) or any(components(node, "team")):
                continue
            try:
                tool = ComponentLoader.load_component(node)
            except Exception as exc:
                raise WorkflowLoadError(
                    f"cannot build tool {node.get('provider')!r}: {exc.__class__.__name__}: {exc}"
                ) from exc
            reference = shared.share(tool, "tool", model_id)
            references.append(reference)
            node.clear()
            node.update(copy.deepcopy(reference))

    def configured_client_spec(self, node: dict[str, Any]) -> dict[str, Any]:
        """The embedded model gets the service's latency defaults, or becomes the configured real LLM.

        An exported file's masked `api_key` ("********") is dropped, so the client falls back to
        its provider's environment variable (`OPENAI_API_KEY`), as AutoGen Studio expects.
        """
        if node.get("provider") not in DEMO_CLIENT_ALIASES:
            own = dict(node.get("config") or {})
            key = own.get("api_key")
            if isinstance(key, str) and key and set(key) <= _MASKED_SECRET:
                del own["api_key"]
            return {**node, "config": own}
        settings = self._settings
        if settings.llm_base_url is not None:
            config: dict[str, Any] = {
                "model": settings.llm_model,
                "base_url": settings.llm_base_url,
                "api_key": settings.llm_api_key.get_secret_value() if settings.llm_api_key else "unused",
                "model_info": dict(LLM_MODEL_INFO),
                "timeout": settings.workflow_timeout_s,
                "max_retries": 1,
            }
            return {"provider": OPENAI_CLIENT_PROVIDER, "component_type": "model", "config": config}
        config = dict(node.get("config") or {})
        if config.get("ttft_ms") is None:
            config["ttft_ms"] = settings.demo_llm_ttft_ms
        if config.get("token_ms") is None:
            config["token_ms"] = settings.demo_llm_token_ms
        return {**node, "provider": DEMO_CLIENT_PROVIDER, "config": config}

    @staticmethod
    def without_token_streaming(document: dict[str, Any]) -> dict[str, Any]:
        blocking = copy.deepcopy(document)
        for agent in components(blocking, "agent"):
            config = agent.get("config")
            if isinstance(config, dict) and "model_client_stream" in config:
                config["model_client_stream"] = False
        return blocking
