"""Cancel a request handler when its client disconnects (for responses that are not streams).

Streams cancel their run themselves when the response closes; a non-streaming handler may be
awaiting a long team run, so it is raced against the client's `http.disconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from service.serving.errors import ClientGone

T = TypeVar("T")


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client has gone away (its `http.disconnect`)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it and raise `ClientGone`."""
    handler = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watcher, handler):
            if not task.done():
                task.cancel()
        # Let the cancelled work run its cleanup (team cancellation) before we return.
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
            await asyncio.wait_for(asyncio.gather(handler, watcher, return_exceptions=True), 5)
    if handler in done:
        return handler.result()
    raise ClientGone
