"""``/v1/analysis``: information-theoretic measurements over the gateway's local engine."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from analysis.mutual_information import MIEstimate
from gateway.auth import CurrentKey
from gateway.deps import ServicesDep
from service.mi import MIRequest, estimate
from service.schemas import ErrorEnvelope

router = APIRouter(prefix="/v1/analysis", tags=["analysis"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 413, 422, 429)
}


@router.post("/mi", response_model=MIEstimate, responses=ERRORS)
async def mutual_information(body: MIRequest, _: CurrentKey, services: ServicesDep) -> MIEstimate:
    """I(X; Z) of the compressions over the contexts, with every per-compression term, scored
    teacher-forced by the local engine (in process, or the workers of MGW_LOCAL_POOL)."""
    return await estimate(services.pool.local_for(services.store.redis, None), body)
