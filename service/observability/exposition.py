"""The `/metrics` page of one worker: rendered off the event loop, one render at a time, and shared
by every scraper for `METRICS_CACHE_S`.

In multiprocess mode a render reads and parses every worker's metric files in Python: tens of
milliseconds that hold the GIL, so the event loop of the worker (and its chat streams) waits while
it runs, thread or not. Unbounded, eight clients scraping in a loop made authenticated chat 18.9x
slower. Here a flood costs at most one render per `ttl_s` per worker, whatever the number of scrapers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# How long a scraper waits for the render in progress before it gets 503 (Prometheus' own scrape
# timeout is 10 s by default).
RENDER_WAIT_S = 10.0


class MetricsBusy(Exception):
    """The render in progress did not finish within `RENDER_WAIT_S`."""


class MetricsPage:
    """The rendered exposition text, cached per worker.

    A scraper gets a text whose render started at most `ttl_s` before the scraper arrived; with
    `ttl_s=0`, one that started after it arrived (concurrent scrapers still share one render).
    """

    def __init__(
        self, render: Callable[[], bytes], ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._render = render
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._body = b""
        self._started_at = float("-inf")
        self.renders = 0

    def _fresh_for(self, arrived: float) -> bool:
        return self._started_at >= arrived - self._ttl_s

    async def get(self) -> bytes:
        """The page.

        Raises:
            MetricsBusy: another render held the page for longer than `RENDER_WAIT_S`.
        """
        arrived = self._clock()
        if self._fresh_for(arrived):
            return self._body
        try:
            async with asyncio.timeout(RENDER_WAIT_S):
                await self._lock.acquire()
        except TimeoutError:
            raise MetricsBusy from None
        try:
            if not self._fresh_for(arrived):
                started = self._clock()
                self._body = await asyncio.to_thread(self._render)
                self._started_at = started
                self.renders += 1
            return self._body
        finally:
            self._lock.release()
