"""Admission of a request before any work: the model exists, the request is within bounds, and the
worker has a free slot (503 at once otherwise: nothing queues without bound)."""

from __future__ import annotations

from collections.abc import Sequence

from service.contract.errors import OpenAIError, model_not_found, overloaded
from service.serving.context import ServingContext
from service.workflows.registry import Workflow


def check_bounds(texts: Sequence[str], ctx: ServingContext, param: str) -> None:
    """`MAX_MESSAGES` and `MAX_MESSAGE_CHARS` (400 above them)."""
    settings = ctx.settings
    if len(texts) > settings.max_messages:
        raise OpenAIError(
            400, f"Too many messages: at most {settings.max_messages} are accepted.", param=param
        )
    for index, text in enumerate(texts):
        if len(text) > settings.max_message_chars:
            raise OpenAIError(
                400,
                f"Message {index} is too long: at most {settings.max_message_chars} characters.",
                param=f"{param}.{index}",
            )


def admit(model: str, texts: Sequence[str], ctx: ServingContext, param: str) -> Workflow:
    """The workflow to run, a capacity slot taken for it; the caller releases the slot.

    Raises:
        OpenAIError: 404 unknown model, 400 over the bounds, 503 at capacity.
    """
    workflow = ctx.registry.get(model)
    if workflow is None:
        raise model_not_found(model)
    check_bounds(texts, ctx, param)
    if not ctx.slots.try_acquire():
        ctx.metrics.rejected.labels("overload").inc()
        raise overloaded()
    return workflow
