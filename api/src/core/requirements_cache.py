"""Requirements cache (phase 1): requirements.txt cached in Redis.

Key `bifrost:requirements:content` holds JSON `{"content", "hash"}` where hash is
the sha256 hex digest of content, with a 24 h TTL. Redis is only a cache: the
store is the source of truth, and every reader that misses falls back to it.

Workers read with `get_requirements_sync()` before their event loop exists, so
that path uses the synchronous redis client and imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TypedDict

import redis

from src.core.settings import get_settings

logger = logging.getLogger(__name__)

REQUIREMENTS_KEY = "bifrost:requirements:content"
REQUIREMENTS_TTL_SECONDS = 86400

# The seed's retry policy: three tries one second apart, then give up on Redis.
REDIS_ATTEMPTS = 3
REDIS_RETRY_DELAY = 1.0


class CachedRequirements(TypedDict):
    content: str
    hash: str


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def get_requirements_sync(worker_id: str = "-") -> CachedRequirements | None:
    """Read the cached requirements with the sync client; never raises.

    Tries Redis `REDIS_ATTEMPTS` times on connection errors, `REDIS_RETRY_DELAY`
    seconds apart. Returns None when the key is absent, unreadable or Redis
    cannot be reached. `worker_id` only prefixes the log lines.
    """
    redis_url = get_settings().redis_url
    for attempt in range(1, REDIS_ATTEMPTS + 1):
        try:
            client = redis.from_url(redis_url, decode_responses=True, socket_timeout=5.0)
            try:
                data = client.get(REQUIREMENTS_KEY)
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt < REDIS_ATTEMPTS:
                logger.warning(
                    "[%s] Redis connection failed (attempt %d/%d): %s",
                    worker_id, attempt, REDIS_ATTEMPTS, exc,
                )
                time.sleep(REDIS_RETRY_DELAY)
                continue
            logger.warning("[%s] Redis unavailable after %d attempts", worker_id, REDIS_ATTEMPTS)
            return None
        except Exception as exc:  # any other client error: treat as a miss, never crash
            logger.warning("[%s] Could not read cached requirements: %s", worker_id, exc)
            return None
        if not data:
            return None
        return _decode(worker_id, str(data))
    return None


def _decode(worker_id: str, data: str) -> CachedRequirements | None:
    try:
        cached = json.loads(data)
    except json.JSONDecodeError as exc:
        logger.warning("[%s] Invalid JSON in cached requirements: %s", worker_id, exc)
        return None
    if not isinstance(cached, dict):
        logger.warning("[%s] Invalid cached requirements: not a JSON object", worker_id)
        return None
    content = cached.get("content", "")
    if not isinstance(content, str):
        logger.warning("[%s] Invalid cached requirements: content is not a string", worker_id)
        return None
    digest = cached.get("hash")
    return CachedRequirements(
        content=content, hash=digest if isinstance(digest, str) else content_hash(content)
    )
