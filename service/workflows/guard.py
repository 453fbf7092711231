"""Workflow files are code: what the service refuses to load, checked before anything is imported.

Loading an AutoGen component imports the module its `provider` names and, for a `FunctionTool`,
runs the Python source in the file. Only an operator puts files in `WORKFLOWS_DIR`, but a file
downloaded from a gallery or written by someone else must not be able to import arbitrary modules or
run code on the server unnoticed:

- **providers**: only AutoGen's own packages (`autogen_agentchat`, `autogen_core`, `autogen_ext`),
  the service's few component classes (`SERVICE_COMPONENTS`, by exact name) and what
  `WORKFLOW_ALLOWED_PROVIDERS` adds may be named. The names are checked on the raw JSON before any
  import; a name that passes is then resolved and must be an AutoGen component class (a module that
  runs something on import, such as `service.__main__`, is never named by an allowed prefix).
- **code**, each kind behind its own operator setting, all off by default (docs/protection.md):
  - `FunctionTool`: its `source_code` and `global_imports` are executed when the tool loads, with
    the worker's rights (`ALLOW_FUNCTION_TOOLS`);
  - stdio MCP servers (`StdioServerParams`, in `McpWorkbench` or an MCP tool adapter): their
    `command` is started as a process of the worker (`ALLOW_STDIO_MCP`);
  - code execution: `CodeExecutorAgent`, code executors and code-execution tools run code that a
    model wrote, or that any message of the conversation (the API caller's included) contains
    (`ALLOW_CODE_EXECUTION`; even then prefer the container executors).
  What is allowed is reported in `GuardReport.code`, for the registry's log line per component.
- **termination**: a `TextMentionTermination` without `sources` also matches the task's own messages,
  so a user who writes the word ends the run before any agent speaks: warned about at load.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_core import is_component_class
from autogen_core._component_config import WELL_KNOWN_PROVIDERS
from autogen_core.tools import FunctionTool

AUTOGEN_PROVIDER_PREFIXES: tuple[str, ...] = (
    "autogen_agentchat.",
    "autogen_core.",
    "autogen_ext.",
)
# The service's own components a file may name, by exact name (`service.` as a prefix would admit
# any module of the service, `service.__main__` included, which starts a server when imported).
SERVICE_COMPONENTS = frozenset(
    {
        "service.workflows.demo_client.DemoChatCompletionClient",
        "service.workflows.user_proxy.ServedUserProxyAgent",
        "service.workflows.terminations.SourcedTextMentionTermination",
    }
)
# Short provider names the service itself resolves (see `registry.DEMO_CLIENT_PROVIDER`).
SERVICE_ALIASES = frozenset({"DemoChatCompletionClient"})
STDIO_SERVER_PARAMS = "StdioServerParams"
CodeKind = Literal["function_tool", "stdio_mcp", "code_execution"]

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
    if provider in WELL_KNOWN_PROVIDERS or provider in SERVICE_ALIASES or provider in SERVICE_COMPONENTS:
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


def _component_class(provider: str) -> type[Any]:
    """The class an allowed provider names, imported as AutoGen's loader would; refused unless it is
    an AutoGen component class."""
    if provider in SERVICE_ALIASES:
        provider = f"service.workflows.demo_client.{provider}"
    path = WELL_KNOWN_PROVIDERS.get(provider, provider)
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise WorkflowRefused(f"provider {provider!r} is not a dotted module.Class path")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except Exception as exc:  # an allowed package's import failed (BaseException: the file is skipped)
        raise WorkflowRefused(
            f"provider {provider!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(found, type) and is_component_class(found)):
        raise WorkflowRefused(f"provider {provider!r} is not an AutoGen component class")
    return found


def _stdio_servers(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The stdio MCP server parameters inside a component's own config (not its sub-components')."""
    found: list[dict[str, Any]] = []
    pending: list[Any] = [item.get("config")]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict) and not (isinstance(node.get("provider"), str) and "config" in node):
            if node.get("type") == STDIO_SERVER_PARAMS:
                found.append(node)
            pending.extend(node.values())
    return found


@dataclass(frozen=True)
class CodeComponent:
    """A code-bearing component that the operator's settings allow: what to name in the log."""

    kind: CodeKind
    provider: str
    name: str
    detail: str


@dataclass
class GuardReport:
    warnings: list[str] = field(default_factory=list)
    markers: tuple[str, ...] = ()
    code: list[CodeComponent] = field(default_factory=list)


@dataclass(frozen=True)
class CodePolicy:
    """Which kinds of code-bearing components the operator allows (module docstring)."""

    function_tools: bool = False
    stdio_mcp: bool = False
    code_execution: bool = False


def _refuse_code(item: dict[str, Any], cls: type[Any], policy: CodePolicy) -> list[CodeComponent]:
    """The code this component bears, if allowed.

    Raises:
        WorkflowRefused: it bears code of a kind the policy does not allow.
    """
    provider: str = item["provider"]
    config = item.get("config") or {}
    bears: list[CodeComponent] = []
    if _runs_code(item):
        if not policy.code_execution:
            raise WorkflowRefused(
                f"{provider!r} executes code (written by a model, or found in any message, the API "
                "caller's included); it is refused unless ALLOW_CODE_EXECUTION=true (then prefer a "
                "container executor such as DockerCommandLineCodeExecutor)"
            )
        bears.append(CodeComponent("code_execution", provider, str(config.get("name") or ""), ""))
    if issubclass(cls, FunctionTool):
        name = str(config.get("name") or "")
        if not policy.function_tools:
            raise WorkflowRefused(
                f"FunctionTool {name!r} carries Python source (and global_imports) that would run in the "
                "service's worker when it loads; it is refused unless ALLOW_FUNCTION_TOOLS=true"
            )
        imports = config.get("global_imports") or []
        bears.append(CodeComponent("function_tool", provider, name, f"global_imports={imports!r}"))
    for params in _stdio_servers(item):
        command = " ".join(str(part) for part in [params.get("command"), *(params.get("args") or [])])
        if not policy.stdio_mcp:
            raise WorkflowRefused(
                f"{provider!r} starts a stdio MCP server ({command!r}), a process of the service's "
                "worker; it is refused unless ALLOW_STDIO_MCP=true"
            )
        bears.append(CodeComponent("stdio_mcp", provider, str(config.get("name") or ""), command))
    return bears


def check(document: dict[str, Any], *, allowed_providers: Iterable[str], policy: CodePolicy) -> GuardReport:
    """Refuse what the module docstring lists; return the warnings, the termination words and the
    code-bearing components that load.

    Raises:
        WorkflowRefused: a provider outside the allowlist or not a component class, or code of a kind
            the policy does not allow.
    """
    extra = tuple(allowed_providers)
    items = list(components(document))
    for item in items:  # every name first: nothing is imported while any name is refused
        provider = item["provider"]
        if not _allowed(provider, extra):
            raise WorkflowRefused(
                f"provider {provider!r} is not allowed: only autogen_agentchat, autogen_core, autogen_ext "
                "and the service's own components load; WORKFLOW_ALLOWED_PROVIDERS can add your own packages"
            )
    report = GuardReport()
    markers: list[str] = []
    for item in items:
        provider = item["provider"]
        report.code.extend(_refuse_code(item, _component_class(provider), policy))
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
