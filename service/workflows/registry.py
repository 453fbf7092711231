"""Workflows as models: a registry that maps model ids to AgentChat teams (or single agents).

Workflows are AutoGen declarative components (the JSON `team.dump_component()` writes and
AutoGen Studio exports), from the built-ins shipped in the package, from `WORKFLOWS_DIR`, or
registered from Python. Each request gets a fresh team built from the prepared JSON.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from autogen_agentchat.base import ChatAgent, Team
from autogen_core import ComponentModel
from autogen_core.models import ChatCompletionClient

from service.config import Settings
from service.workflows import shared_clients
from service.workflows.instrumented_client import InstrumentedChatCompletionClient

logger = logging.getLogger(__name__)

WorkflowRunner = Team | ChatAgent
WorkflowKind = Literal["team", "agent"]

DEMO_CLIENT_PROVIDER = "service.workflows.demo_client.DemoChatCompletionClient"
OPENAI_CLIENT_PROVIDER = "autogen_ext.models.openai.OpenAIChatCompletionClient"
MODEL_ID_MAX_CHARS = 128
# What autogen-ext is told about a configured LLM (LLM_BASE_URL); conformance tests build their clients alike.
LLM_MODEL_INFO: dict[str, Any] = {
    "vision": False,
    "function_calling": True,
    "json_output": True,
    "structured_output": False,
    "family": "unknown",
    "multiple_system_messages": True,
}
_ALLOWED_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


class WorkflowLoadError(ValueError):
    """A workflow definition that cannot be served; the message says why."""


@dataclass(frozen=True)
class Workflow:
    """A served model: how to build a fresh runner (team or agent) for one request."""

    id: str
    description: str
    kind: WorkflowKind
    source: str
    created: int
    agent_names: tuple[str, ...]
    factory: Callable[[], WorkflowRunner]

    def build(self) -> WorkflowRunner:
        """A new runner (teams hold conversation state) that shares the parsed definition and clients."""
        return self.factory()


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def is_valid_model_id(model_id: str) -> bool:
    return 0 < len(model_id) <= MODEL_ID_MAX_CHARS and set(model_id) <= _ALLOWED_ID_CHARS


def _model_name(spec: dict[str, Any]) -> str:
    """What a model client calls its model, for `gen_ai.request.model`."""
    config = spec.get("config") or {}
    if spec.get("provider") in (DEMO_CLIENT_PROVIDER, "DemoChatCompletionClient"):
        return f"embedded-{config.get('role', 'assistant')}"
    return str(config.get("model") or config.get("azure_deployment") or spec.get("provider", "model"))


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _components(node: Any, component_type: str) -> Iterator[dict[str, Any]]:
    for item in _walk(node):
        if item.get("component_type") == component_type and "provider" in item:
            yield item


class WorkflowRegistry:
    """Model id -> workflow. Built once per worker in the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._workflows: dict[str, Workflow] = {}
        self._shared_references: list[dict[str, Any]] = []

    # --- lookup -----------------------------------------------------------------------------
    def get(self, model_id: str) -> Workflow | None:
        return self._workflows.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._workflows

    def all(self) -> list[Workflow]:
        return sorted(self._workflows.values(), key=lambda workflow: workflow.id)

    # --- loading ----------------------------------------------------------------------------
    def load_defaults(self) -> LoadReport:
        """Load the built-in workflows, then every `*.json` in `WORKFLOWS_DIR` (which may override).

        A malformed file is logged with its reason and skipped; the other models still load.
        """
        report = LoadReport()
        builtin = resources.files("service.workflows") / "builtin"
        sources: list[tuple[str, str, str]] = [
            (entry.name.removesuffix(".json"), entry.read_text(encoding="utf-8"), f"builtin:{entry.name}")
            for entry in sorted(builtin.iterdir(), key=lambda entry: entry.name)
            if entry.name.endswith(".json")
        ]
        if self._settings.workflows_dir is not None:
            directory = self._settings.workflows_dir
            if not directory.is_dir():
                report.failed[str(directory)] = "WORKFLOWS_DIR is not a directory"
                logger.error("WORKFLOWS_DIR is not a directory", extra={"path": str(directory)})
            else:
                for path in sorted(directory.glob("*.json")):
                    try:
                        text = path.read_text(encoding="utf-8")
                    except (OSError, UnicodeDecodeError) as exc:
                        report.failed[path.name] = f"unreadable: {exc.__class__.__name__}"
                        continue
                    sources.append((path.stem, text, str(path)))
        for model_id, text, origin in sources:
            try:
                self.register_json(model_id, text, source=origin)
            except WorkflowLoadError as exc:
                report.failed[origin] = str(exc)
                logger.error(
                    "workflow not loaded", extra={"model": model_id, "source": origin, "reason": str(exc)}
                )
            else:
                report.loaded.append(model_id)
        return report

    def register_json(self, model_id: str, text: str, *, source: str = "json") -> Workflow:
        """Register a workflow from AutoGen component JSON text."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowLoadError(f"invalid JSON at line {exc.lineno} column {exc.colno}") from None
        return self.register_component(model_id, document, source=source)

    def register_component(
        self,
        model_id: str,
        component: dict[str, Any] | ComponentModel,
        *,
        description: str | None = None,
        source: str = "python",
    ) -> Workflow:
        """Register a team or agent component (a dict or `ComponentModel`, e.g. `team.dump_component()`).

        The definition is validated by building it once; model clients are created once and shared.

        Raises:
            WorkflowLoadError: the id is invalid or the component cannot be built.
        """
        if not is_valid_model_id(model_id):
            raise WorkflowLoadError("model id must be 1-128 characters of letters, digits and -_.:")
        document = component.model_dump(mode="json") if isinstance(component, ComponentModel) else component
        if not isinstance(document, dict) or "provider" not in document or "config" not in document:
            raise WorkflowLoadError("not an AutoGen component: expected 'provider' and 'config'")
        kind = document.get("component_type")
        if kind not in ("team", "agent"):
            raise WorkflowLoadError(f"component_type must be 'team' or 'agent', got {kind!r}")
        document = copy.deepcopy(document)
        if kind == "team":
            self._cap_turns(document)
        references: list[dict[str, Any]] = []
        try:
            self._share_model_clients(document, model_id, references)
            # Token streaming happens in the instrumented model clients, not on AgentChat's bus.
            definition = ComponentModel.model_validate(self._without_token_streaming(document))
            loader: type[Team] | type[ChatAgent] = Team if kind == "team" else ChatAgent
            probe = loader.load_component(definition)
            agent_names = self._agent_names(probe)
        except WorkflowLoadError:
            self._release_later(references)
            raise
        except Exception as exc:
            self._release_later(references)
            raise WorkflowLoadError(f"cannot build the component: {exc.__class__.__name__}: {exc}") from exc
        previous = self._workflows.get(model_id)
        if previous is not None:
            logger.warning("workflow replaced", extra={"model": model_id, "source": source})
        self._shared_references.extend(references)
        workflow = Workflow(
            id=model_id,
            description=description or str(document.get("description") or model_id),
            kind=kind,
            source=source,
            created=int(time.time()),
            agent_names=agent_names,
            factory=lambda: loader.load_component(definition),
        )
        self._workflows[model_id] = workflow
        return workflow

    def register_factory(
        self,
        model_id: str,
        factory: Callable[[], WorkflowRunner],
        *,
        description: str,
        agent_names: tuple[str, ...] = (),
    ) -> Workflow:
        """Register a workflow built by Python code: `factory()` must return a new team or agent."""
        if not is_valid_model_id(model_id):
            raise WorkflowLoadError("model id must be 1-128 characters of letters, digits and -_.:")
        probe = factory()
        workflow = Workflow(
            id=model_id,
            description=description,
            kind="team" if isinstance(probe, Team) else "agent",
            source="python",
            created=int(time.time()),
            agent_names=agent_names or self._agent_names(probe),
            factory=factory,
        )
        self._workflows[model_id] = workflow
        return workflow

    async def aclose(self) -> None:
        """Close the shared model clients (their HTTP pools)."""
        references, self._shared_references = self._shared_references, []
        for reference in references:
            await shared_clients.release(reference)

    # --- helpers ----------------------------------------------------------------------------
    def _cap_turns(self, document: dict[str, Any]) -> None:
        config = document["config"]
        if isinstance(config, dict):
            current = config.get("max_turns")
            cap = self._settings.max_agent_turns
            config["max_turns"] = cap if not isinstance(current, int) or current <= 0 else min(current, cap)

    def _share_model_clients(
        self, document: dict[str, Any], model_id: str, references: list[dict[str, Any]]
    ) -> None:
        owners: dict[int, tuple[str, bool]] = {}
        for agent in _components(document, "agent"):
            config = agent.get("config")
            if isinstance(config, dict) and isinstance(config.get("model_client"), dict):
                streams = bool(config.get("model_client_stream", False))
                owners[id(config["model_client"])] = (str(config.get("name") or "agent"), streams)
        for node in list(_components(document, "model")):
            if node.get("provider") == shared_clients.SHARED_CLIENT_PROVIDER:
                raise WorkflowLoadError("workflow files may not reference shared clients directly")
            spec = self._configured_client_spec(node)
            try:
                client = ChatCompletionClient.load_component(spec)
            except Exception as exc:
                raise WorkflowLoadError(
                    f"cannot build model client {node.get('provider')!r}: {exc.__class__.__name__}"
                ) from exc
            owner: tuple[str | None, bool] = owners.get(id(node), (None, False))
            instrumented = InstrumentedChatCompletionClient(client, owner[0], _model_name(spec), owner[1])
            reference = shared_clients.share(instrumented, model_id)
            references.append(reference)
            node.clear()
            node.update(copy.deepcopy(reference))

    def _configured_client_spec(self, node: dict[str, Any]) -> dict[str, Any]:
        """The embedded model gets the service's latency defaults, or becomes the configured real LLM."""
        if node.get("provider") not in (DEMO_CLIENT_PROVIDER, "DemoChatCompletionClient"):
            return node
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
        return {**node, "config": config}

    @staticmethod
    def _without_token_streaming(document: dict[str, Any]) -> dict[str, Any]:
        blocking = copy.deepcopy(document)
        for agent in _components(blocking, "agent"):
            config = agent.get("config")
            if isinstance(config, dict) and "model_client_stream" in config:
                config["model_client_stream"] = False
        return blocking

    @staticmethod
    def _agent_names(runner: WorkflowRunner) -> tuple[str, ...]:
        participants = getattr(runner, "_participants", None)
        if participants:
            return tuple(str(participant.name) for participant in participants)
        name = getattr(runner, "name", None)
        return (str(name),) if name else ()

    def _release_later(self, references: list[dict[str, Any]]) -> None:
        # The clients of a rejected definition are closed with the others at shutdown.
        self._shared_references.extend(references)
