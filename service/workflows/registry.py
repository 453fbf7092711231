"""Workflows as models: a registry that maps model ids to AgentChat teams (or single agents).

Workflows are AutoGen declarative components (the JSON `team.dump_component()` writes and AutoGen
Studio exports), from the built-ins shipped in the package, from `WORKFLOWS_DIR`, or registered from
Python. A file is checked before anything in it is imported (`guard`), then prepared once:
- its model clients, tools and MCP workbenches are built once per worker and shared (`shared`);
- its model clients are wrapped to trace, count, bound and stream every call (`instrumented_client`);
- its UserProxyAgents get an input function that never reads the server's stdin (`user_proxy`);
- a team's turns are capped at `MAX_AGENT_TURNS`.
Each request then gets a fresh team (a team holds conversation state), built by the component's class
from its config validated once at load.

A workflow file may name the agent whose text is the answer with a top-level `"answer_agent"` key
(AutoGen ignores it): that agent's text then streams to the client as the answer while it is written.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from autogen_agentchat.base import ChatAgent, Team
from autogen_core import ComponentModel

from service.config import Settings
from service.runs.execute import Runner, RunRequest
from service.runs.text import DEFAULT_MARKERS
from service.workflows import shared
from service.workflows.direct import DirectModelAgent
from service.workflows.guard import CodePolicy, WorkflowRefused, check, components
from service.workflows.mcp import SharedMcpWorkbench
from service.workflows.preparation import (
    DEMO_CLIENT_PROVIDER,
    STATIC_WORKBENCH_PROVIDERS,
    Preparation,
    WorkflowLoadError,
)

logger = logging.getLogger(__name__)

WorkflowKind = Literal["team", "agent"]

MODEL_ID_MAX_CHARS = 128
_ALLOWED_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


@dataclass(frozen=True)
class Workflow:
    """A served model: how to build a fresh runner (team or agent) for one request, and run it."""

    id: str
    description: str
    kind: WorkflowKind
    source: str
    created: int
    agent_names: tuple[str, ...]
    factory: Callable[[], Runner]
    live_answer_agent: str | None = None
    markers: tuple[str, ...] = DEFAULT_MARKERS
    service_turn_cap: int | None = None
    warnings: tuple[str, ...] = ()
    handoff_tools: frozenset[str] = frozenset()
    # The runtime its teams run on: `lean`, `default` (AgentChat's), or None (no team).
    agent_runtime: Literal["lean", "default"] | None = None

    def build(self) -> Runner:
        """A new runner (teams hold conversation state) that shares the parsed definition and clients."""
        return self.factory()

    def run_request(self, run_id: str, *, deadline_s: float, max_tokens: int | None) -> RunRequest:
        """How to run it for one request; the same whether the client streams or not (an agent
        configured to stream always streams from its model)."""
        return RunRequest(
            workflow=self.id,
            run_id=run_id,
            members=self.agent_names,
            live_answer_agent=self.live_answer_agent,
            markers=self.markers,
            deadline_s=deadline_s,
            service_turn_cap=self.service_turn_cap,
            max_tokens=max_tokens,
            handoff_tools=self.handoff_tools,
        )


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def is_valid_model_id(model_id: str) -> bool:
    return 0 < len(model_id) <= MODEL_ID_MAX_CHARS and set(model_id) <= _ALLOWED_ID_CHARS


def _agent_names(runner: Runner) -> tuple[str, ...]:
    participants = getattr(runner, "_participants", None)
    if participants:
        return tuple(str(participant.name) for participant in participants)
    name = getattr(runner, "name", None)
    return (str(name),) if name else ()


def _handoff_tools(document: dict[str, Any]) -> frozenset[str]:
    """The names of the tools through which the workflow's agents hand off (`transfer_to_<target>`)."""
    names: set[str] = set()
    for agent in components(document, "agent"):
        for handoff in (agent.get("config") or {}).get("handoffs") or []:
            if isinstance(handoff, dict) and isinstance(handoff.get("name"), str):
                names.add(handoff["name"])
            elif isinstance(handoff, str):
                names.add(f"transfer_to_{handoff}".lower())
    return frozenset(names)


def _has_tools_or_handoffs(agent_config: dict[str, Any]) -> bool:
    if agent_config.get("handoffs") or agent_config.get("tools"):
        return True
    for workbench in agent_config.get("workbench") or []:
        if not isinstance(workbench, dict) or workbench.get("provider") not in STATIC_WORKBENCH_PROVIDERS:
            return True
        if (workbench.get("config") or {}).get("tools"):
            return True
    return False


def _live_answer_agent(document: dict[str, Any], kind: WorkflowKind, members: tuple[str, ...]) -> str | None:
    """The agent whose text deltas are the answer as they stream (see the module docstring)."""
    if kind == "agent":
        config = document.get("config") or {}
        is_assistant = str(document.get("provider", "")).endswith("AssistantAgent")
        return str(config.get("name")) if is_assistant and not _has_tools_or_handoffs(config) else None
    named = document.get("answer_agent")
    if named is None:
        return None
    if not isinstance(named, str) or named not in members:
        raise WorkflowLoadError(f"answer_agent {named!r} is not one of the team's agents {list(members)}")
    for agent in components(document.get("config"), "agent"):
        config = agent.get("config") or {}
        if config.get("name") == named and _has_tools_or_handoffs(config):
            raise WorkflowLoadError(
                f"answer_agent {named!r} has tools or handoffs: its text may not be the answer as it streams"
            )
    return named


def _prepared_factory(
    loader: type[Team] | type[ChatAgent], definition: ComponentModel, built: Runner
) -> Callable[[], Runner]:
    """A factory that builds the component as `loader.load_component(definition)` does (`built` is
    one such build), with its class found and its top-level config validated once, here, instead of
    on every request.

    AgentChat's `load_component` is: find the class, validate the config with the class's schema,
    call its `_from_config` (the component protocol's constructor). The validated config is only
    read by `_from_config`, so one copy serves every request; each call still builds a fresh team or
    agent, participants included (they hold conversation state), sharing the model clients, tools
    and workbenches as before. A config of an older component version goes through `load_component`
    every time (AgentChat migrates it there).
    """
    component_class = type(built)
    schema = getattr(component_class, "component_config_schema", None)
    current = getattr(component_class, "component_version", None)
    version = definition.component_version or current
    if schema is None or current is None or version is None or version < current:
        return lambda: loader.load_component(definition)
    config = schema.model_validate(definition.config)
    from_config: Callable[[Any], Runner] = getattr(component_class, "_from_config")  # noqa: B009

    def build() -> Runner:
        return from_config(config)

    return build


class WorkflowRegistry:
    """Model id -> workflow. Built once per worker in the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._preparation = Preparation(settings)
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
        """Load the built-in workflows, every `*.json` in `WORKFLOWS_DIR` (which may override them),
        and the direct model when it is on.

        A file that cannot be served is logged with its whole reason and skipped; the others load.
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
                        report.failed[str(path)] = f"unreadable: {exc.__class__.__name__}: {exc}"
                        continue
                    sources.append((path.stem, text, str(path)))
        for model_id, text, origin in sources:
            try:
                workflow = self.register_json(model_id, text, source=origin)
            except WorkflowLoadError as exc:
                report.failed[origin] = str(exc)
            except BaseException as exc:  # what a file's code raised anywhere else: skip the file
                report.failed[origin] = f"cannot load: {exc.__class__.__name__}: {exc}"
            else:
                report.loaded.append(model_id)
                for warning in workflow.warnings:
                    logger.warning("workflow warning", extra={"model": model_id, "reason": warning})
        if self._settings.direct_model_enabled:
            self.register_direct(self._settings.direct_model_id)
            report.loaded.append(self._settings.direct_model_id)
        for origin, reason in report.failed.items():
            logger.error("workflow not loaded", extra={"source": origin, "reason": reason})
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
        answer_agent: str | None = None,
        source: str = "python",
    ) -> Workflow:
        """Register a team or agent component (a dict or `ComponentModel`, e.g. `team.dump_component()`).

        The definition is checked, then validated by building it once; shared parts are built once.

        Raises:
            WorkflowLoadError: the id is invalid, or the component is refused or cannot be built.
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
        if answer_agent is not None:
            document["answer_agent"] = answer_agent
        settings = self._settings
        try:
            report = check(
                document,
                allowed_providers=settings.workflow_allowed_providers,
                policy=CodePolicy(
                    function_tools=settings.allow_function_tools,
                    stdio_mcp=settings.allow_stdio_mcp,
                    code_execution=settings.allow_code_execution,
                ),
            )
        except WorkflowRefused as exc:
            raise WorkflowLoadError(str(exc)) from None
        for code in report.code:
            logger.info(
                "code-bearing workflow component loading",
                extra={
                    "model": model_id,
                    "source": source,
                    "kind": code.kind,
                    "provider": code.provider,
                    "component": code.name,
                    "detail": code.detail,
                },
            )
        service_turn_cap = self._preparation.cap_turns(document) if kind == "team" else None
        references: list[dict[str, Any]] = []
        try:
            self._preparation.substitute(document)
            self._preparation.share_model_clients(document, model_id, references)
            self._preparation.share_tools_and_workbenches(document, model_id, references)
            agent_runtime = self._preparation.choose_runtime(document, model_id)
            # Token streaming happens in the instrumented model clients, not on AgentChat's bus.
            definition = ComponentModel.model_validate(self._preparation.without_token_streaming(document))
            loader: type[Team] | type[ChatAgent] = Team if kind == "team" else ChatAgent
            built = loader.load_component(definition)
            agent_names = _agent_names(built)
            factory = _prepared_factory(loader, definition, built)
            live = _live_answer_agent(document, kind, agent_names)
        except WorkflowLoadError:
            self._release_later(references)
            raise
        except BaseException as exc:
            # Top-level code of a FunctionTool may raise anything, SystemExit and KeyboardInterrupt
            # included: that is this file's failure, not the worker's.
            self._release_later(references)
            raise WorkflowLoadError(f"cannot build the component: {exc.__class__.__name__}: {exc}") from exc
        if model_id in self._workflows:
            logger.warning("workflow replaced", extra={"model": model_id, "source": source})
        self._shared_references.extend(references)
        workflow = Workflow(
            id=model_id,
            description=description or str(document.get("description") or model_id),
            kind=kind,
            source=source,
            created=int(time.time()),
            agent_names=agent_names,
            factory=factory,
            live_answer_agent=live,
            markers=tuple(dict.fromkeys((*report.markers, *DEFAULT_MARKERS))),
            service_turn_cap=service_turn_cap,
            warnings=tuple(report.warnings),
            handoff_tools=_handoff_tools(document),
            agent_runtime=agent_runtime,
        )
        self._workflows[model_id] = workflow
        return workflow

    def register_factory(
        self,
        model_id: str,
        factory: Callable[[], Runner],
        *,
        description: str,
        agent_names: tuple[str, ...] = (),
        answer_agent: str | None = None,
    ) -> Workflow:
        """Register a workflow built by Python code: `factory()` must return a new team or agent.

        Code registered this way is trusted as it is: it is not guarded or prepared (use
        `register_component` for that), so its model clients are not instrumented.
        """
        if not is_valid_model_id(model_id):
            raise WorkflowLoadError("model id must be 1-128 characters of letters, digits and -_.:")
        probe = factory()
        names = agent_names or _agent_names(probe)
        workflow = Workflow(
            id=model_id,
            description=description,
            kind="team" if isinstance(probe, Team) else "agent",
            source="python",
            created=int(time.time()),
            agent_names=names,
            factory=factory,
            live_answer_agent=answer_agent,
        )
        self._workflows[model_id] = workflow
        return workflow

    def register_direct(self, model_id: str) -> Workflow:
        """The direct model: one call of the configured model (the real LLM, or the embedded one)."""
        spec = self._preparation.configured_client_spec(
            {"provider": DEMO_CLIENT_PROVIDER, "component_type": "model", "config": {"role": "assistant"}}
        )
        client = self._preparation.instrumented(spec, agent=model_id, streams=True)
        reference = shared.share(client, "model", model_id)
        self._shared_references.append(reference)
        workflow = Workflow(
            id=model_id,
            description="One call of the model behind the teams, no team: for a chat UI's titles, "
            "tags and follow-up suggestions.",
            kind="agent",
            source="builtin:direct",
            created=int(time.time()),
            agent_names=(model_id,),
            factory=lambda: DirectModelAgent(model_id, client),
            live_answer_agent=model_id,
        )
        self._workflows[model_id] = workflow
        return workflow

    async def start_shared(self) -> None:
        """Start what is shared and slow to start (MCP server sessions), so the first request does
        not wait for it. A failure is logged; the next use tries again."""
        for reference in self._shared_references:
            instance = shared.get(reference)
            if isinstance(instance, SharedMcpWorkbench):
                try:
                    await instance.start()
                except Exception as exc:
                    logger.error(
                        "MCP server could not be started; it is retried on first use",
                        extra={"reason": f"{type(exc).__name__}: {exc}"},
                    )

    async def aclose(self) -> None:
        """Close the shared model clients (their HTTP pools) and stop the MCP server sessions."""
        references, self._shared_references = self._shared_references, []
        for reference in references:
            instance = shared.forget(reference)
            close = getattr(instance, "close", None) if not isinstance(instance, SharedMcpWorkbench) else None
            try:
                if isinstance(instance, SharedMcpWorkbench):
                    await instance.stop()
                elif close is not None:
                    await close()
            except Exception:
                logger.warning("closing a shared component failed", exc_info=True)

    def _release_later(self, references: list[dict[str, Any]]) -> None:
        # The shared parts of a rejected definition are closed with the others at shutdown.
        self._shared_references.extend(references)
