"""``/v1/admin``: API keys, usage and queue workers. Admin keys only."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from gateway.auth import AdminKey
from gateway.deps import ServicesDep
from service.schemas import (
    ErrorEnvelope,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyUpdate,
    KeyView,
    UsageReport,
    WorkersReport,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 422, 429)
}


@router.post("/keys", status_code=201, response_model=KeyCreated, responses=ERRORS)
async def create_key(body: KeyCreate, _: AdminKey, services: ServicesDep) -> KeyCreated:
    """Create a key. The secret is in this response only; it is stored as a hash."""
    return await services.admin.create_key(body)


@router.get("/keys", response_model=KeyList, responses=ERRORS)
async def list_keys(_: AdminKey, services: ServicesDep) -> KeyList:
    return await services.admin.list_keys()


@router.patch("/keys/{key_id}", response_model=KeyView, responses=ERRORS)
async def update_key(key_id: str, body: KeyUpdate, _: AdminKey, services: ServicesDep) -> KeyView:
    """Change a key's privacy default (``{"privacy": "pseudonymize"}``; null: the gateway's)."""
    return await services.admin.update_key(key_id, body)


@router.delete("/keys/{key_id}", status_code=204, responses=ERRORS)
async def revoke_key(key_id: str, _: AdminKey, services: ServicesDep) -> None:
    await services.admin.revoke_key(key_id)


@router.get("/usage", response_model=UsageReport, responses=ERRORS)
async def usage(
    _: AdminKey, services: ServicesDep, by: Literal["key", "protocol", "day"] = "key"
) -> UsageReport:
    """Totals by key, protocol or day (UTC): tasks by status, tokens, cost, accuracy."""
    return await services.admin.usage(by)


@router.get("/workers", response_model=WorkersReport, responses=ERRORS)
async def workers(_: AdminKey, services: ServicesDep) -> WorkersReport:
    """Local-model queue workers: every pool with its live workers and queue depth."""
    return await services.admin.workers()
