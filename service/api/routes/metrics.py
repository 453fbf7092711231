"""`GET /metrics`: Prometheus exposition, aggregated across gunicorn workers.

Behind `METRICS_TOKEN` when it is set; rendered at most once per `METRICS_CACHE_S` per worker, one
render at a time and off the event loop, so a flood of scrapers does not slow the API
(`service/observability/exposition.py`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep
from service.observability.exposition import MetricsBusy
from service.protection.auth import require_metrics_token

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
async def metrics(service_metrics: MetricsDep) -> Response:
    try:
        body = await service_metrics.page.get()
    except MetricsBusy:
        return Response(b"metrics render in progress\n", status_code=503, headers={"Retry-After": "1"})
    return Response(body, media_type=CONTENT_TYPE_LATEST)
