"""Public probes: liveness, readiness and Prometheus metrics. They never show configuration,
keys or document text."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.deps import services_of
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(request: Request) -> Response:
    services = getattr(request.app.state, "services", None)
    if services is None:  # starting or stopping
        body = Readiness(status="not_ready", store=False, engines=False, runner=False)
    else:
        body = await services.readiness()
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ready" else 503)


# HEAD probes (load balancers, uptime checkers): the GET's status, no body.
@router.head("/health", include_in_schema=False)
async def health_head() -> Response:
    return Response(status_code=200)


@router.head("/ready", include_in_schema=False)
async def ready_head(request: Request) -> Response:
    return Response(status_code=(await ready(request)).status_code)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    text = await services_of(request).metrics_text()
    return Response(text, media_type=CONTENT_TYPE_LATEST)
