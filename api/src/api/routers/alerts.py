"""`/api/alerts`: install failures, one per failed package per requirements
hash, with the hosts that saw it, whether it is resolved and how its webhook
delivery went (src.core.alerts, src.services.alert_delivery)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from src.api.auth import admin_only
from src.core import alerts
from src.foundation.redis_client import get_redis

router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=admin_only)


class DeliveryOut(BaseModel):
    # pending, sending, retrying, sent, failed, no webhook
    status: str
    attempts: int
    last_error: str | None
    delivered_at: float | None


class AlertOut(BaseModel):
    id: str
    hash: str
    package: str
    error: str
    hosts: list[str]
    first_seen: float
    last_seen: float
    count: int
    resolved: bool
    resolved_at: float | None
    delivery: DeliveryOut


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


@router.get("", response_model=AlertsOut)
def list_alerts(
    open_only: Annotated[bool, Query(alias="open", description="only those not resolved")] = False,
) -> AlertsOut:
    found = alerts.list_alerts(get_redis(), open_only=open_only)
    return AlertsOut.model_validate({"alerts": found})
