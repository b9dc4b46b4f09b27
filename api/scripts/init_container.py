"""Init step: migrations, then warm the module, requirements and lock caches.

Run as `python -m scripts.init_container` from `api/`, or `bifrost init`.
Exits non-zero, saying which, when the store or Redis cannot be reached.
"""

from __future__ import annotations

import logging
import sys

import redis

from src.core.lock_cache import warm_lock_cache_sync
from src.core.module_cache import warm_module_cache_sync
from src.core.requirements_cache import read_requirements, warm_requirements_cache_sync
from src.foundation.settings import get_settings
from src.store.database import StoreUnavailable, resolve_database_url
from src.store.migrate import upgrade_to_head


def main() -> int:
    print("=== Bifrost Init Container ===", flush=True)
    settings = get_settings()
    try:
        upgrade_to_head()
    except StoreUnavailable as exc:
        return _fail(f"Store unreachable ({_safe_url(resolve_database_url())}): {exc}")
    print("✓ Migrations: Applied", flush=True)
    try:
        modules = warm_module_cache_sync()
        print(f"✓ Module cache: {modules} modules loaded", flush=True)
        cached = warm_requirements_cache_sync()
        print(f"✓ Requirements cache: {'cached' if cached else 'empty'}", flush=True)
        print(f"✓ Lock cache: {'cached' if _warm_current_lock() else 'none'}", flush=True)
    except redis.RedisError as exc:
        return _fail(f"Redis unreachable ({_safe_url(settings.redis_url)}): {exc}")
    except StoreUnavailable as exc:
        return _fail(f"Store unreachable ({_safe_url(resolve_database_url())}): {exc}")
    print("=== Init Complete ===", flush=True)
    return 0


def _warm_current_lock() -> bool:
    """Cache the lock of the requirements now in effect (the hash the
    requirements cache has just been given); False when there is none."""
    current = read_requirements()
    return current is not None and warm_lock_cache_sync(current["hash"])


def _fail(message: str) -> int:
    print(f"✗ {message}", flush=True)
    print("=== Init Failed ===", flush=True)
    return 1


def _safe_url(url: str) -> str:
    """The URL without its password: init output ends up in logs."""
    from sqlalchemy import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
