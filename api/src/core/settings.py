"""Process settings, read from the environment (see README, "Settings").

Every process (API, pool, worker) reads the same variables, so a setting given
to `bifrost up` reaches the workers it starts. Relative paths are resolved
against the working directory once, here, so all processes agree on them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    redis_url: str = Field(default="redis://localhost:6379", validation_alias="REDIS_URL")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default=Path(".bifrost"), validation_alias="BIFROST_DATA_DIR")
    packages_dir_setting: Path | None = Field(default=None, validation_alias="BIFROST_PACKAGES_DIR")
    host: str = Field(default="127.0.0.1", validation_alias="BIFROST_HOST")
    port: int = Field(default=8000, validation_alias="BIFROST_PORT")
    workers: int = Field(default=2, ge=1, validation_alias="BIFROST_WORKERS")
    admin_token: str | None = Field(default=None, validation_alias="BIFROST_ADMIN_TOKEN")
    installer: Literal["auto", "uv", "pip"] = Field(
        default="auto", validation_alias="BIFROST_INSTALLER"
    )
    install_timeout: float = Field(
        default=300.0, gt=0, validation_alias="BIFROST_INSTALL_TIMEOUT"
    )
    execution_timeout: float = Field(
        default=300.0, gt=0, validation_alias="BIFROST_EXECUTION_TIMEOUT"
    )
    # How long a claimed execution may go unacknowledged before another pool
    # decides its pool died and takes it over (pools refresh their claims).
    claim_idle_seconds: float = Field(
        default=30.0, gt=0, validation_alias="BIFROST_CLAIM_IDLE_SECONDS"
    )
    wheel_cache: str = Field(default="store", validation_alias="BIFROST_WHEEL_CACHE")

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def packages_dir(self) -> Path:
        if self.packages_dir_setting is not None:
            return self.packages_dir_setting.expanduser().resolve()
        return self.data_path / "site-packages"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process; tests that change the environment call
    `get_settings.cache_clear()`."""
    return Settings()
