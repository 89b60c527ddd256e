"""A small Redis-backed request throttle for public endpoints (webhooks, sign-in forms).

``routiq/ratelimit.py`` paces *our* calls to a vendor (a blocking token bucket shared by workers); this
module refuses *incoming* requests over a budget. It counts hits per (scope, key) in a fixed one-minute
window with ``INCR`` + ``EXPIRE`` in one pipeline: two round trips at most, atomic per hit, shared by every
web process. A fixed window may admit up to twice the limit across a window boundary; the limits here are
generous ceilings against floods, not exact quotas, so that is accepted for the simplicity.

If Redis is unreachable the request is *allowed* (and a warning logged): a broken limiter must not take
the webhooks or the sign-in down with it; the endpoints behind it authenticate every request anyway.

    from routiq.throttle import throttle

    @throttle(scope="webhooks:clerk", limit_per_minute=lambda: settings.WEBHOOK_RATE_LIMIT_PER_MINUTE)
    def clerk_webhook(request): ...

    wait = hit("admin-login", username, 10)   # None: allowed; else seconds until the window resets
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def client_ip(request: HttpRequest) -> str:
    """The peer address. X-Forwarded-For is not read: any client can write it, so keying on it would let
    one client spread its hits over invented addresses. Behind a proxy, the proxy must set REMOTE_ADDR."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def _redis() -> Any:
    import django_rq

    return django_rq.get_connection("default")


def _redis_key(scope: str, key: str, window: int) -> str:
    # Hash the caller's key: it may be an e-mail address or a user name, which must not sit in Redis key names.
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"throttle:{scope}:{digest}:{window}"


def hit(scope: str, key: str, limit_per_minute: int, *, clock: Callable[[], float] = time.time) -> int | None:
    """Count one hit for ``key`` in ``scope``. None when it is within the limit, else the seconds to wait."""
    now = clock()
    window = int(now // WINDOW_SECONDS)
    redis_key = _redis_key(scope, key, window)
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.incr(redis_key)
        # Longer than the window so a slightly skewed clock on another process still finds the counter.
        pipe.expire(redis_key, WINDOW_SECONDS * 2)
        count, _ = pipe.execute()
    except RedisError as exc:
        logger.warning("throttle %s: Redis unavailable, request allowed: %s", scope, exc)
        return None
    if count <= limit_per_minute:
        return None
    return max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))


def throttle(*, scope: str, limit_per_minute: int | Callable[[], int],
             key: Callable[[HttpRequest], str] = client_ip) -> Callable:
    """View decorator: 429 with Retry-After once ``key(request)`` has used ``limit_per_minute`` this minute.

    ``limit_per_minute`` may be a callable, read on every request, so a setting can be changed (or
    overridden in a test) without re-importing the view.
    """

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            limit = limit_per_minute() if callable(limit_per_minute) else limit_per_minute
            wait = hit(scope, key(request), int(limit))
            if wait is not None:
                logger.warning("throttle %s: limit of %s/min exceeded", scope, limit)
                response = HttpResponse("Too many requests.\n", status=429, content_type="text/plain")
                response["Retry-After"] = str(wait)
                return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
