"""Components built once per worker and shared by every request: model clients, tools, workbenches.

A team is rebuilt per request (it holds conversation state), but what it uses need not be:
- a model client owns an HTTP connection pool and a TLS context, costly to create;
- a `FunctionTool` compiles the Python source of its workflow file when it loads (once per worker,
  not once per request);
- an MCP workbench starts its server (a process, 1.7-2.6 s) when first used.
At load time the registry builds each of these once and puts a `Shared*` reference in its place in
the workflow JSON; loading the team per request then resolves the reference to the shared instance.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

from autogen_core import Component, ComponentBase
from pydantic import BaseModel

_instances: dict[str, Any] = {}
_sequence = itertools.count(1)


class SharedReferenceConfig(BaseModel):
    key: str


class _SharedReference(ComponentBase[SharedReferenceConfig], Component[SharedReferenceConfig]):
    """A component reference that loads as an already-built, shared instance."""

    component_config_schema = SharedReferenceConfig
    component_type: ClassVar[str] = "shared"  # each concrete reference names its own

    def _to_config(self) -> SharedReferenceConfig:  # never instantiated: a reference only
        raise NotImplementedError

    @classmethod
    def _from_config(cls, config: SharedReferenceConfig) -> Any:
        try:
            return _instances[config.key]
        except KeyError:
            raise ValueError(f"shared component {config.key!r} is not loaded") from None


class SharedModelClient(_SharedReference):
    component_type = "model"
    component_provider_override = "service.workflows.shared.SharedModelClient"


class SharedTool(_SharedReference):
    component_type = "tool"
    component_provider_override = "service.workflows.shared.SharedTool"


class SharedWorkbench(_SharedReference):
    component_type = "workbench"
    component_provider_override = "service.workflows.shared.SharedWorkbench"


_REFERENCE_BY_TYPE: dict[str, type[_SharedReference]] = {
    kind.component_type: kind for kind in (SharedModelClient, SharedTool, SharedWorkbench)
}
SHARED_PROVIDERS = frozenset(str(kind.component_provider_override) for kind in _REFERENCE_BY_TYPE.values())


def share(instance: Any, component_type: str, label: str) -> dict[str, Any]:
    """Keep `instance` for reuse and return the component JSON that refers to it."""
    key = f"{label}#{next(_sequence)}"
    _instances[key] = instance
    reference = _REFERENCE_BY_TYPE[component_type]
    return {
        "provider": reference.component_provider_override,
        "component_type": component_type,
        "config": {"key": key},
    }


def forget(reference: dict[str, Any]) -> Any:
    """Drop a shared instance made by `share` and return it (the caller closes it)."""
    return _instances.pop(reference["config"]["key"], None)


def get(reference: dict[str, Any]) -> Any:
    """The shared instance a reference made by `share` stands for (None once forgotten)."""
    return _instances.get(reference["config"]["key"])
