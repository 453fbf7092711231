"""Workflow files are code: what the service refuses to load, checked before anything is imported.

Loading an AutoGen component imports the module its `provider` names and, for a `FunctionTool`,
runs the Python source in the file. Only an operator puts files in `WORKFLOWS_DIR`, but a file
downloaded from a gallery or written by someone else must not be able to import arbitrary modules or
run code on the server unnoticed:

- **providers**: only AutoGen's own packages (`autogen_agentchat`, `autogen_core`, `autogen_ext`) and
  the service's (`service.`) may be named, plus what `WORKFLOW_ALLOWED_PROVIDERS` adds. The check
  walks the raw JSON before any import.
- **code execution**: `CodeExecutorAgent`, code executors and code-execution tools run code that a
  model wrote, or that any message of the conversation (the API caller's included) contains. They are
  refused unless `ALLOW_CODE_EXECUTION=true`; even then prefer the container executors.
- **termination**: a `TextMentionTermination` without `sources` also matches the task's own messages,
  so a user who writes the word ends the run before any agent speaks: warned about at load.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from autogen_core._component_config import WELL_KNOWN_PROVIDERS

AUTOGEN_PROVIDER_PREFIXES: tuple[str, ...] = (
    "autogen_agentchat.",
    "autogen_core.",
    "autogen_ext.",
    "service.",
)
# Short provider names the service itself resolves (see `registry.DEMO_CLIENT_PROVIDER`).
SERVICE_ALIASES = frozenset({"DemoChatCompletionClient"})

CODE_EXECUTION_PROVIDERS: tuple[str, ...] = (
    "autogen_agentchat.agents.CodeExecutorAgent",
    "autogen_agentchat.agents._code_executor_agent.",
    "autogen_ext.code_executors.",
    "autogen_ext.tools.code_execution.",
)
TEXT_MENTION_PROVIDERS = frozenset(
    {
        "autogen_agentchat.conditions.TextMentionTermination",
        "autogen_agentchat.conditions._terminations.TextMentionTermination",
        "TextMentionTermination",
    }
)


class WorkflowRefused(ValueError):
    """The workflow names something the service does not load; the message says what and why."""


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside `node`, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def components(node: Any, component_type: str | None = None) -> Iterator[dict[str, Any]]:
    """The component objects (`provider` + `config`) inside `node`, of one type if given."""
    for item in walk(node):
        if (
            isinstance(item.get("provider"), str)
            and "config" in item
            and (component_type is None or item.get("component_type") == component_type)
        ):
            yield item


def _allowed(provider: str, extra: Iterable[str]) -> bool:
    if provider in WELL_KNOWN_PROVIDERS or provider in SERVICE_ALIASES:
        return True
    for prefix in (*AUTOGEN_PROVIDER_PREFIXES, *extra):
        if prefix.endswith(".") and provider.startswith(prefix):
            return True
        if not prefix.endswith(".") and (provider == prefix or provider.startswith(prefix + ".")):
            return True
    return False


def _runs_code(item: dict[str, Any]) -> bool:
    provider = WELL_KNOWN_PROVIDERS.get(item["provider"], item["provider"])
    if item.get("component_type") == "code_executor":
        return True
    return any(
        provider == prefix or (prefix.endswith(".") and provider.startswith(prefix))
        for prefix in CODE_EXECUTION_PROVIDERS
    )


@dataclass
class GuardReport:
    warnings: list[str] = field(default_factory=list)
    markers: tuple[str, ...] = ()


def check(
    document: dict[str, Any], *, allowed_providers: Iterable[str], allow_code_execution: bool
) -> GuardReport:
    """Refuse what the module docstring lists; return the warnings and the termination words.

    Raises:
        WorkflowRefused: a provider outside the allowlist, or code execution while it is off.
    """
    extra = tuple(allowed_providers)
    report = GuardReport()
    markers: list[str] = []
    for item in components(document):
        provider: str = item["provider"]
        if not _allowed(provider, extra):
            raise WorkflowRefused(
                f"provider {provider!r} is not allowed: only autogen_agentchat, autogen_core, autogen_ext "
                "and service components load; WORKFLOW_ALLOWED_PROVIDERS can add your own packages"
            )
        if _runs_code(item) and not allow_code_execution:
            raise WorkflowRefused(
                f"{provider!r} executes code (written by a model, or found in any message, the API "
                "caller's included); it is refused unless ALLOW_CODE_EXECUTION=true (then prefer a "
                "container executor such as DockerCommandLineCodeExecutor)"
            )
        if provider in TEXT_MENTION_PROVIDERS:
            config = item.get("config") or {}
            text = config.get("text")
            if isinstance(text, str) and text:
                markers.append(text)
            if not config.get("sources"):
                report.warnings.append(
                    f"TextMentionTermination({text!r}) has no 'sources': it also matches the user's own "
                    "messages, so a request containing that word ends the run before any agent speaks; "
                    "set sources to the agents' names"
                )
    report.markers = tuple(dict.fromkeys(markers))
    return report
