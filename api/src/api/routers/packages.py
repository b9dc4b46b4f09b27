"""`/api/packages`: install, remove or upgrade packages; what runs where;
what is outdated. Every write resolves the whole set into a lock first (422
when it cannot be resolved, 503 when the index cannot be reached: nothing
changes then)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from src.api.auth import admin_only
from src.api.routers.models import RequirementsOut, StrictRequest
from src.services import packages

router = APIRouter(prefix="/api/packages", tags=["packages"], dependencies=admin_only)


class InstallIn(StrictRequest):
    # Both optional: `{}` re-syncs the workers from the current file.
    package: str | None = None
    version: str | None = None


class InstallOut(RequirementsOut):
    changed: bool


class InstalledOut(BaseModel):
    name: str
    version: str


class HostOut(BaseModel):
    host: str
    workers: int
    installed: list[InstalledOut]
    matches_lock: bool


class PackagesOut(BaseModel):
    requirements: list[str]
    hash: str
    lock: list[str]
    hosts: list[HostOut]
    installed: list[InstalledOut]


class OutdatedOut(BaseModel):
    line: str
    name: str
    locked: str | None
    newest_allowed: str | None
    newest: str | None


HASH_HELP = "a requirements hash (default: the one in effect)"


class FailureOut(BaseModel):
    worker: str
    host: str
    package: str
    error: str


class ProgressOut(BaseModel):
    hash: str
    current_hash: str | None
    total: int  # workers that serve from now on
    ready: int  # of them, idle or busy on `hash`
    installing: int
    failed: list[FailureOut]
    done: bool  # every serving worker is ready on `hash` (there is one at least)


class UpgradeIn(StrictRequest):
    package: str | None = None  # None: every package


@router.get("", response_model=PackagesOut)
def list_packages() -> PackagesOut:
    return PackagesOut.model_validate(packages.list_packages())


@router.get("/progress", response_model=ProgressOut)
def progress(
    hash: Annotated[str | None, Query(max_length=128, description=HASH_HELP)] = None,
) -> ProgressOut:
    return ProgressOut.model_validate(packages.install_progress(hash or None))


@router.get("/outdated", response_model=list[OutdatedOut])
def outdated() -> list[OutdatedOut]:
    return [OutdatedOut.model_validate(item, from_attributes=True)
            for item in packages.outdated_packages()]


@router.post("/upgrade", response_model=InstallOut)
def upgrade(body: UpgradeIn) -> InstallOut:
    try:
        return InstallOut(**packages.upgrade_packages(body.package))
    except packages.PackageNotInRequirements as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.post("/install", response_model=InstallOut)
def install_package(body: InstallIn) -> InstallOut:
    return InstallOut(**packages.install_package(body.package, body.version))


@router.delete("/{name}", response_model=RequirementsOut)
def remove_package(name: str) -> RequirementsOut:
    try:
        return RequirementsOut(**packages.remove_package(name))
    except packages.PackageNotInRequirements as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
