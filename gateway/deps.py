"""``Annotated`` dependency aliases the routes use: the services of this process.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a worker thread."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.services import Services
from service.studies import StudyService


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_studies(request: Request) -> StudyService:
    return services_of(request).studies


ServicesDep = Annotated[Services, Depends(get_services)]
StudiesDep = Annotated[StudyService, Depends(get_studies)]
