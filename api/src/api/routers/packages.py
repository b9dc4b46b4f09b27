"""`/api/packages`: install or remove one package, list what is installed."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
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


class PackagesOut(BaseModel):
    requirements: list[str]
    installed: list[InstalledOut]


@router.get("", response_model=PackagesOut)
def list_packages() -> PackagesOut:
    listing = packages.list_packages()
    return PackagesOut(
        requirements=listing["requirements"],
        installed=[InstalledOut(**dist) for dist in listing["installed"]],
    )


@router.post("/install", response_model=InstallOut)
def install_package(body: InstallIn) -> InstallOut:
    return InstallOut(**packages.install_package(body.package, body.version))


@router.delete("/{name}", response_model=RequirementsOut)
def remove_package(name: str) -> RequirementsOut:
    try:
        return RequirementsOut(**packages.remove_package(name))
    except packages.PackageNotInRequirements as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
