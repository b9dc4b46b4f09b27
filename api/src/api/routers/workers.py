"""`/api/workers`: the fleet's state, and recycling every pool."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel

from src.api.auth import admin_only
from src.services import packages
from src.services.execution import registry
from src.services.execution.control import publish_recycle

router = APIRouter(prefix="/api/workers", tags=["workers"], dependencies=admin_only)


class RecycleOut(BaseModel):
    status: str
    subscribers: int


@router.get("")
def list_workers() -> dict[str, Any]:
    # `ready` counts workers on the hash in effect now, so it is read first.
    return registry.fleet(packages.current_requirements_hash())


@router.post("/recycle-all", status_code=status.HTTP_202_ACCEPTED, response_model=RecycleOut)
def recycle_all() -> RecycleOut:
    # 202: pools recycle asynchronously; `subscribers` says how many heard it.
    return RecycleOut(status="accepted", subscribers=publish_recycle("api"))
