"""The shared cache (Django's RedisCache): hot values that are safe to keep for a few seconds.

What may go in: records the sign-in middleware reads on every request (an organization, a member's identity),
aggregate dashboard figures, and public values (Clerk's JWKS). What never goes in: patient or message rows,
secrets (an organization's webhook token, a password hash), anything a cache miss would not rebuild.

Rules this module enforces, so callers cannot get them wrong:

- **Every tenant key names its organization**: ``org_key(organization_id, *parts)`` -> ``org:<uuid>:…``, and
  it refuses anything that is not an organization id. The one exception is ``lookup_key`` (Clerk org id ->
  organization id), whose value is the organization id itself. Non-tenant values use ``public_key``
  (allow-listed by the key-audit test). The deploy's CACHE_KEY_VERSION and KEY_SHAPE below are in every key.
- **Each value carries its owner** (the organization id, or "public") and ``get`` (and ``get_many``, one
  round trip for several keys) drops a value whose owner is not the key's: a key can never serve one
  organization's value to another, even if a caller built it wrongly.
- **Populate with ``add`` (set if absent), invalidate with ``forget``** (a short-lived tombstone, written now
  and again after the transaction commits). A request that read the old row just before a change cannot
  store it after the change: its ``add`` finds the tombstone. Plain delete-on-change would let it.
- **The cache is never needed**: a Redis error is logged and treated as a miss, and reads skip Redis for
  OUTAGE_BACKOFF_SECONDS afterwards so a dead Redis costs a request nothing. Tombstones are always tried.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Bump when the shape of a cached value changes in code; operators bump CACHE_KEY_VERSION instead.
KEY_SHAPE = "1"
PUBLIC = "public"
# How long a tombstone keeps a key from being repopulated: far longer than a request takes between reading a
# row and adding it to the cache. Readers in that window go to the database.
INVALIDATION_HOLD_SECONDS = 5
OUTAGE_BACKOFF_SECONDS = 5.0

_FORGOTTEN = "forgotten"
_reads_resume_at = 0.0


def org_key(organization_id: Any, *parts: Any) -> str:
    """The key of a value that belongs to one organization. Refuses a missing or malformed id (fail closed)."""
    if organization_id in (None, ""):
        raise ValueError("a tenant cache key needs an organization id")
    return ":".join(["org", str(uuid.UUID(str(organization_id))), KEY_SHAPE, *map(str, parts)])


def public_key(*parts: Any) -> str:
    """The key of a value that belongs to no organization (Clerk's JWKS)."""
    return ":".join([PUBLIC, KEY_SHAPE, *map(str, parts)])


def lookup_key(kind: str, natural_id: str) -> str:
    """The key that finds an organization's id from another id of it (its Clerk id): the value *is* the owner.

    Used only where the organization is what is being looked up, so ``org_key`` cannot be built yet."""
    if not natural_id:
        raise ValueError("a lookup key needs the id looked up")
    return ":".join(["lookup", KEY_SHAPE, kind, natural_id])


def key_owner(key: str) -> str | None:
    """The owner a value under ``key`` must have; None for a lookup key (its value names its owner)."""
    kind, _, rest = key.partition(":")
    if kind == "org":
        return rest.partition(":")[0]
    if kind == PUBLIC:
        return PUBLIC
    if kind == "lookup":
        return None
    raise ValueError(f"not a routiq cache key: {key!r}")


def _owner(key: str, value: Any) -> str:
    owner = key_owner(key)
    return str(uuid.UUID(str(value))) if owner is None else owner


def _cache():
    return caches["default"]


def _reads_paused() -> bool:
    return time.monotonic() < _reads_resume_at


def _failed(operation: str, key: str, exc: Exception) -> None:
    global _reads_resume_at
    _reads_resume_at = time.monotonic() + OUTAGE_BACKOFF_SECONDS
    logger.warning("cache unavailable, using the database: %s %s: %s: %s", operation, key,
                   exc.__class__.__name__, exc)


def reset_outage() -> None:
    """Forget a recent Redis failure (tests; Redis is back)."""
    global _reads_resume_at
    _reads_resume_at = 0.0


def enabled() -> bool:
    return settings.CACHE_ENABLED and not _reads_paused()


def get(key: str) -> Any | None:
    """The value stored under ``key``, or None (absent, forgotten, another owner's, or Redis unavailable)."""
    if not enabled():
        return None
    try:
        entry = _cache().get(key)
    except (RedisError, OSError) as exc:
        _failed("get", key, exc)
        return None
    return _checked(key, entry)


def get_many(*keys: str) -> list[Any | None]:
    """``get`` of each key, in order, in one round trip: for lookups that do not depend on each other."""
    if not enabled() or not keys:
        return [None] * len(keys)
    try:
        entries = _cache().get_many(keys)
    except (RedisError, OSError) as exc:
        _failed("get_many", ",".join(keys), exc)
        return [None] * len(keys)
    return [_checked(key, entries.get(key)) for key in keys]


def _checked(key: str, entry: Any) -> Any | None:
    """The value of an entry read under ``key``; None for a miss, a tombstone or a value of another owner."""
    if not isinstance(entry, dict) or entry.get(_FORGOTTEN):
        return None
    owner = key_owner(key)
    if owner is None:
        owner = entry.get("value")
    if entry.get("owner") != owner:
        logger.error("cache value owned by %r under key %s: ignored", entry.get("owner"), key)
        return None
    return entry.get("value")


def add(key: str, value: Any, ttl: int) -> None:
    """Store ``value`` unless the key holds anything already (a value, or a tombstone of a recent change)."""
    if not enabled() or ttl <= 0:
        return
    try:
        _cache().add(key, {"owner": _owner(key, value), "value": value}, timeout=ttl)
    except (RedisError, OSError) as exc:
        _failed("add", key, exc)


def replace(key: str, value: Any, ttl: int) -> None:
    """Overwrite a *public* value (fetched from its source, so the newest write is the right one)."""
    if key_owner(key) != PUBLIC:
        raise ValueError("only public values are replaced; tenant values are added and forgotten")
    if not enabled() or ttl <= 0:
        return
    try:
        _cache().set(key, {"owner": PUBLIC, "value": value}, timeout=ttl)
    except (RedisError, OSError) as exc:
        _failed("replace", key, exc)


def forget(*keys: str, using: str | None = None) -> None:
    """Invalidate: tombstone the keys now and again once the transaction of ``using`` commits (if one is open:
    pass the alias the change is written through)."""
    _tombstone(keys)
    transaction.on_commit(lambda: _tombstone(keys), using=using)


def _tombstone(keys: tuple[str, ...]) -> None:
    if not keys:
        return
    # Even while reads are paused and even with the cache switched off: a stale value must not outlive the
    # change that made it stale, whenever the cache is read again.
    entries = {key: {"owner": key_owner(key), _FORGOTTEN: True} for key in keys}
    try:
        _cache().set_many(entries, timeout=INVALIDATION_HOLD_SECONDS)
    except (RedisError, OSError) as exc:
        _failed("forget", ",".join(keys), exc)


def clear() -> int:
    """Delete every key of this deployment's prefix (tests, benchmarks; never RQ's keys). Returns the count."""
    cache = _cache()
    if not cache.key_prefix:
        raise ValueError("CACHE_KEY_PREFIX is empty: clearing would touch keys that are not the cache's")
    client = cache._cache.get_client(write=True)
    names = list(client.scan_iter(match=f"{cache.key_prefix}:*", count=1000))
    if names:
        client.delete(*names)
    return len(names)
