"""``/v1/studies``: run a research study as a low-priority sidecar job, poll it, fetch figures.

Admin keys only: a study is unmetered compute (minutes on a CPU, longer on the full preset) on
the workers (or the gateway's own machine), outside every budget, so it is an operator's tool,
not a tenant's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import AdminKey
from gateway.deps import StudiesDep
from service.schemas import ErrorEnvelope
from workers.studies.store import StudyRecord

router = APIRouter(prefix="/v1/studies", tags=["studies"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 422, 429)
}


class StudyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Literal["quick", "full"] = "quick"
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class StudyCreated(BaseModel):
    id: str
    status: str


class StudyView(BaseModel):
    id: str
    name: str
    status: str
    params: dict[str, Any]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    worker: str | None = Field(default=None, description="the consumer running (or that ran) it")
    result: dict[str, Any] | None = Field(
        default=None, description="result.json, once the study succeeded"
    )


def view(record: StudyRecord) -> StudyView:
    return StudyView(
        id=record.id,
        name=record.name,
        status=record.status,
        params=record.params,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        progress=record.progress,
        error=record.error,
        worker=record.worker,
        result=record.result if record.status == "succeeded" else None,
    )


class StudyList(BaseModel):
    data: list[StudyView] = Field(description="the newest studies first")
    available: list[str] = Field(description="the study names this gateway can run")


@router.get("", response_model=StudyList, responses=ERRORS)
async def list_studies(
    key: AdminKey, studies: StudiesDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> StudyList:
    """The newest studies with their status (results included once they succeeded)."""
    records = await studies.recent(key, limit)
    return StudyList(data=[view(record) for record in records], available=studies.available())


@router.post("/{name}", status_code=202, response_model=StudyCreated, responses=ERRORS)
async def create_study(
    name: str, key: AdminKey, studies: StudiesDep, body: StudyCreate | None = None
) -> StudyCreated:
    """Queue study ``name`` (gp, ssm, lora); poll ``GET /v1/studies/{id}``."""
    body = body or StudyCreate()
    record = await studies.submit(key, name, body.preset, body.device, body.seed)
    return StudyCreated(id=record.id, status=record.status)


@router.get("/{study_id}", response_model=StudyView, responses=ERRORS)
async def get_study(study_id: str, key: AdminKey, studies: StudiesDep) -> StudyView:
    record = await studies.get(key, study_id)
    return view(record)


@router.get(
    "/{study_id}/figures/{file}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
)
async def get_figure(study_id: str, file: str, key: AdminKey, studies: StudiesDep) -> Response:
    """A figure the study's result lists (PNG, stored in Redis with the result); any other
    name is 404."""
    data = await studies.figure(key, study_id, file)
    return Response(content=data, media_type="image/png")
