"""`/api/files/{path}`: workspace modules and data files, as raw text."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from src.api.auth import admin_only
from src.core import module_cache
from src.foundation.workspace_paths import (
    MAX_FILE_BYTES,
    InvalidPath,
    validate_content,
    validate_path,
)

PREFIX = "/api/files"

router = APIRouter(prefix=PREFIX, tags=["files"], dependencies=admin_only)


class FileOut(BaseModel):
    path: str
    hash: str
    size: int


class DeletedOut(BaseModel):
    path: str
    deleted: bool


def workspace_path(request: Request, path: str) -> str:
    """The validated workspace path of this request.

    The server percent-decodes the URL before routing, so `a%2Fb.py` would
    arrive as `a/b.py` and `%2E%2E` as `..`. Both the decoded path and the
    path as sent are validated: a valid path never needs encoding, so any
    encoding is refused (after the decoded form had its say, so `%00` is
    reported as a NUL character and `%2E%2E` as `..`).
    """
    validate_path(path)
    raw_path: bytes | None = request.scope.get("raw_path")
    if raw_path is not None:
        sent = raw_path.decode("latin-1")
        prefix = f"{PREFIX}/"
        if not sent.startswith(prefix):
            raise InvalidPath("path contains encoded characters, which are not accepted")
        validate_path(sent[len(prefix):])
    return path


WorkspacePath = Annotated[str, Depends(workspace_path)]


def _decode(body: bytes) -> str:
    """The file's text, or the answer saying what is wrong with the content
    (checked here, so it is not reported as a problem of the path)."""
    if len(body) > MAX_FILE_BYTES:
        raise HTTPException(
            413,  # by number: the constant was renamed across Starlette versions
            f"file content is larger than {MAX_FILE_BYTES} bytes ({len(body)} bytes)",
        )
    try:
        content = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            422,  # by number: the constant was renamed across Starlette versions
            f"file content is not valid UTF-8 (byte {exc.start}: {exc.reason})",
        ) from None
    try:
        return validate_content(content)
    except InvalidPath as exc:
        raise HTTPException(422, f"invalid file content: {exc}") from None


@router.put("/{path:path}", response_model=FileOut)
async def put_file(request: Request, path: WorkspacePath) -> FileOut:
    # The body is the file itself, whatever the Content-Type says.
    content = _decode(await request.body())
    info = await run_in_threadpool(module_cache.save_file_sync, path, content)
    return FileOut(**info)


@router.get("/{path:path}", response_class=PlainTextResponse)
def get_file(path: WorkspacePath) -> PlainTextResponse:
    content = module_cache.read_file_sync(path)
    if content is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"file {path} not found")
    return PlainTextResponse(content)


@router.delete("/{path:path}", response_model=DeletedOut)
def delete_file(path: WorkspacePath) -> DeletedOut:
    if not module_cache.delete_file_sync(path):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"file {path} not found")
    return DeletedOut(path=path, deleted=True)
