"""Process settings, read from the environment (see README, "Settings").

Every process (API, pool, worker) reads the same variables, so a setting given
to `bifrost up` reaches the workers it starts. Relative paths are resolved
against the working directory once, here, so all processes agree on them.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    redis_url: str = Field(default="redis://localhost:6379", validation_alias="REDIS_URL")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default=Path(".bifrost"), validation_alias="BIFROST_DATA_DIR")
    packages_dir_setting: Path | None = Field(default=None, validation_alias="BIFROST_PACKAGES_DIR")
    host: str = Field(default="127.0.0.1", validation_alias="BIFROST_HOST")
    # How this machine is named in worker and package reports (a container's
    # own hostname is often a random id).
    host_name: str = Field(default_factory=socket.gethostname, min_length=1,
                           validation_alias="BIFROST_HOST_NAME")
    port: int = Field(default=8000, validation_alias="BIFROST_PORT")
    workers: int = Field(default=2, ge=1, validation_alias="BIFROST_WORKERS")
    admin_token: str | None = Field(default=None, validation_alias="BIFROST_ADMIN_TOKEN")
    # Optional read-only token: GET routes, /metrics and /api/events; 403 on writes.
    read_token: str | None = Field(default=None, validation_alias="BIFROST_READ_TOKEN")
    # Where one JSON POST per failed package per requirements hash goes.
    alert_webhook: str | None = Field(default=None, validation_alias="BIFROST_ALERT_WEBHOOK")
    # A worker whose resident memory (its own and its execution template's)
    # grew past this is replaced after the item in hand; 0: never.
    worker_max_rss_mb: int = Field(default=0, ge=0, validation_alias="BIFROST_WORKER_MAX_RSS_MB")
    installer: Literal["auto", "uv", "pip"] = Field(
        default="auto", validation_alias="BIFROST_INSTALLER"
    )
    install_timeout: float = Field(
        default=300.0, gt=0, validation_alias="BIFROST_INSTALL_TIMEOUT"
    )
    # The longest an execution may run: the default, and the most a caller may ask for.
    execution_timeout: float = Field(
        default=300.0, gt=0, validation_alias="BIFROST_EXECUTION_TIMEOUT"
    )
    # Address space an execution's process may add to what its worker already
    # maps (RLIMIT_AS); 0 leaves it unbounded.
    execution_memory_mb: int = Field(
        default=2048, ge=0, validation_alias="BIFROST_EXECUTION_MEMORY_MB"
    )
    # The largest result (or error) an execution may hand back, as JSON.
    max_result_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, validation_alias="BIFROST_MAX_RESULT_BYTES"
    )
    # The uid executions run as where the platform runs as root; 0 keeps root.
    execution_uid: int = Field(default=65534, ge=0, validation_alias="BIFROST_EXECUTION_UID")
    # Tasks (processes and threads) an execution may run at once: a pids
    # cgroup where one is writable, else RLIMIT_NPROC (not as root); 0: no bound.
    execution_max_pids: int = Field(
        default=256, ge=0, validation_alias="BIFROST_EXECUTION_MAX_PIDS"
    )
    # The executions' /dev/shm: `private` (a tmpfs of the worker's executions,
    # emptied after each, sized by BIFROST_EXECUTION_MEMORY_MB; where the
    # platform cannot mount one, none) or `none` (writes there are refused).
    execution_shm: Literal["private", "none"] = Field(
        default="private", validation_alias="BIFROST_EXECUTION_SHM"
    )
    # Of what an execution prints, the last this many bytes of stdout, and of
    # stderr, are kept in its record (the rest is counted, never logged).
    execution_output_bytes: int = Field(
        default=8192, ge=0, le=1024 * 1024, validation_alias="BIFROST_EXECUTION_OUTPUT_BYTES"
    )
    # Executions waiting in the stream beyond which new ones are refused (503).
    max_queued_executions: int = Field(
        default=100_000, ge=1, validation_alias="BIFROST_MAX_QUEUED_EXECUTIONS"
    )
    # How long a claimed execution may go unacknowledged before another pool
    # decides its pool died and takes it over (pools refresh their claims).
    claim_idle_seconds: float = Field(
        default=30.0, gt=0, validation_alias="BIFROST_CLAIM_IDLE_SECONDS"
    )
    # The fleet cache's backend: `store`, `s3://bucket/prefix` (also `gs://`,
    # `az://`), or a directory every host mounts (`file:///path`, `dir:/path`).
    wheel_cache: str = Field(default="store", validation_alias="BIFROST_WHEEL_CACHE")
    # How long a host waits for another host that fetches a lock's files
    # for the fleet, before it fetches them from the index by itself.
    fleet_wait_seconds: float = Field(
        default=300.0, ge=0, validation_alias="BIFROST_FLEET_WAIT_SECONDS"
    )
    # How soon another host takes over a fetch whose host died.
    fleet_lease_seconds: float = Field(
        default=30.0, gt=0, validation_alias="BIFROST_FLEET_LEASE_SECONDS"
    )
    # The longest `wait` a caller may ask of the executions routes, in seconds.
    max_wait_seconds: float = Field(default=60.0, gt=0, validation_alias="BIFROST_MAX_WAIT_SECONDS")
    # Seconds a client may take to send a request's line and headers.
    head_timeout: float = Field(default=10.0, gt=0, validation_alias="BIFROST_HEAD_TIMEOUT")

    @field_validator("wheel_cache")
    @classmethod
    def _wheel_cache_is_known(cls, value: str) -> str:
        """Refuse a value no backend understands at start-up, rather than in
        the first install that uses it (whether the place it names answers is
        checked when a pool starts: `fleet_blobs.check`)."""
        value = value.strip()
        schemes = ("s3://", "gs://", "az://", "abfs://", "file://")
        if value == "store" or (value.startswith(schemes) and len(value.split("://", 1)[1]) > 0
                                ) or (value.startswith("dir:") and value[4:].strip()):
            return value
        raise ValueError(
            f"BIFROST_WHEEL_CACHE={value!r} is not understood; use 'store', "
            "'s3://bucket/prefix' (or gs://, az://), or 'file:///shared/path'"
        )

    @field_validator("read_token", "alert_webhook")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("alert_webhook")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"BIFROST_ALERT_WEBHOOK must be an http(s) URL, not {value[:60]!r}")
        return value

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def packages_dir(self) -> Path:
        if self.packages_dir_setting is not None:
            return self.packages_dir_setting.expanduser().resolve()
        return self.data_path / "site-packages"


class _ProcessSettings:
    """`get_settings()`: the settings of this process, read from the
    environment once. A process that changes its environment (`bifrost up`
    naming its private Redis; tests) calls `get_settings.cache_clear()`.

    Reading and clearing hold one lock, so a read that began before a clear
    (on another thread: the API's alert sender reads them on every turn)
    cannot put the old environment's settings back after it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        # A forked child has one thread: a lock its parent held stays held.
        os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def __call__(self) -> Settings:
        settings = self._settings
        if settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = Settings()
                settings = self._settings
        return settings

    def cache_clear(self) -> None:
        with self._lock:
            self._settings = None


get_settings = _ProcessSettings()
