"""``Annotated`` dependency aliases the routes use: settings, the store and the services.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a worker thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.documents import DocumentService
from gateway.execution import TaskExecutor
from gateway.metrics import Metrics
from gateway.pool import EnginePool
from gateway.runner import TaskRunner
from gateway.settings import Settings
from gateway.store import Store
from gateway.tasks import BudgetService, TaskService


@dataclass
class Services:
    """Everything the lifespan builds, kept on ``app.state.services``."""

    settings: Settings
    store: Store
    pool: EnginePool
    documents: DocumentService
    budgets: BudgetService
    executor: TaskExecutor
    runner: TaskRunner
    tasks: TaskService
    metrics: Metrics


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
