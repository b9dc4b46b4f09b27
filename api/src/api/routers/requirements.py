"""`/api/requirements`: read and replace the whole requirements.txt."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from src.api.auth import admin_only
from src.api.routers.models import RequirementsOut, StrictRequest
from src.services import packages

router = APIRouter(prefix="/api/requirements", tags=["requirements"], dependencies=admin_only)

# Any string is accepted: one that is not the current hash is stale (409),
# whatever its form. The cap only keeps error answers small.
MAX_HASH_LENGTH = 128


class RequirementsIn(StrictRequest):
    content: str
    expected_hash: str | None = Field(default=None, max_length=MAX_HASH_LENGTH)


@router.get("", response_model=RequirementsOut)
def get_requirements() -> RequirementsOut:
    return RequirementsOut(**packages.current_requirements())


@router.put("", response_model=RequirementsOut)
def put_requirements(body: RequirementsIn) -> RequirementsOut:
    # 422 (bad lines) and 409 (stale expected_hash) come from the app's handlers.
    return RequirementsOut(**packages.put_requirements(body.content, body.expected_hash))
