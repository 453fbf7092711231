"""Probes: liveness never depends on the LLM; readiness follows the workflows and draining."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import LifecycleDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: workflows loaded and not draining")
async def readyz(lifecycle: LifecycleDep) -> JSONResponse:
    if lifecycle.ready:
        return JSONResponse({"status": "ready"})
    reason = "draining" if lifecycle.draining else "starting"
    return JSONResponse({"status": reason}, status_code=503, headers={"Retry-After": "5"})
