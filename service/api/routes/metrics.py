"""`GET /metrics`: Prometheus exposition, aggregated across gunicorn workers."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(service_metrics: MetricsDep) -> Response:
    # Reading the workers' metric files is file I/O: keep it off the event loop.
    body = await asyncio.to_thread(service_metrics.render_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
