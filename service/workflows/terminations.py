"""`TextMentionTermination` with `sources` that survive the JSON.

AgentChat 0.7.5's `TextMentionTermination(text, sources=...)` watches only the named agents' messages,
but its component config keeps `text` alone: in a workflow file the condition always watches the
task's messages too, so a user who writes the word ("How do I TERMINATE a process?") ends the run
before any agent speaks. The registry loads a `TextMentionTermination` whose JSON config names
`sources` as this subclass, which reads them.
"""

from __future__ import annotations

from typing import Self

from autogen_agentchat.conditions import TextMentionTermination
from pydantic import BaseModel


class SourcedTextMentionTerminationConfig(BaseModel):
    text: str
    sources: list[str] | None = None


class SourcedTextMentionTermination(TextMentionTermination):
    component_config_schema = SourcedTextMentionTerminationConfig  # type: ignore[assignment]
    component_provider_override = "service.workflows.terminations.SourcedTextMentionTermination"

    def _to_config(self) -> SourcedTextMentionTerminationConfig:  # type: ignore[override]
        sources = list(self._sources) if self._sources is not None else None
        return SourcedTextMentionTerminationConfig(text=self._termination_text, sources=sources)

    @classmethod
    def _from_config(cls, config: SourcedTextMentionTerminationConfig) -> Self:  # type: ignore[override]
        return cls(text=config.text, sources=config.sources)
