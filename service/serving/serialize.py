"""The core function `handle_response`: any response model -> a JSON-ready dict (every API uses it)."""

from __future__ import annotations

import logging
from typing import Any

from service.observability.tracing import traced
from service.serving.errors import CoreFunctionError

logger = logging.getLogger("service.autogen_server")


@traced
def handle_response(response: Any) -> dict[str, Any]:
    """Turn a response model (an `Output`, a stream chunk, an error body) into a JSON-ready dict.

    Args:
        response: a pydantic model (anything with `model_dump`).

    Returns:
        The model as a dict of JSON types.

    Raises:
        CoreFunctionError: HTTP 500 when `response` is a `str` or has no `model_dump`, or when
            serialization fails; the cause is logged, the client sees a generic message.
    """
    if isinstance(response, str) or not hasattr(response, "model_dump"):
        logger.error("handle_response got an unserializable %s", type(response).__name__)
        raise CoreFunctionError("handle_response")
    try:
        data = response.model_dump(mode="json")
    except Exception:
        logger.exception("handle_response could not serialize %s", type(response).__name__)
        raise CoreFunctionError("handle_response") from None
    if not isinstance(data, dict):
        logger.error("handle_response: model_dump of %s returned no dict", type(response).__name__)
        raise CoreFunctionError("handle_response")
    return data
