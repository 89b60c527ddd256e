"""Admin password sign-in lockout: failed attempts counted per user name and client address in Redis.

After ``ADMIN_LOGIN_MAX_FAILURES`` failures within ``ADMIN_LOGIN_WINDOW_SECONDS`` (10 in 15 minutes) that
user name is refused from that address until the window ends, with a message on the login page saying so;
even the right password is refused meanwhile, or the lockout would not slow a guesser down. Keying on the
pair means a guesser locks out only their own address, never the real admin signing in from elsewhere. A
successful sign-in is never counted and clears the pair's failures.

The window is fixed (it starts at the first failure): ``SET key 0 EX window NX`` then ``INCR``, in one
transaction. (``routiq.throttle`` counts per minute; a lockout needs a longer window and must not count
successful attempts.) If Redis is unreachable the attempt is allowed and a warning logged: a broken Redis
must not lock every admin out, and the password is still checked.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from redis.exceptions import RedisError

from routiq.throttle import client_ip

logger = logging.getLogger(__name__)

LOCKED = "locked"  # the ValidationError code of a refused attempt


def _redis() -> Any:
    import django_rq

    return django_rq.get_connection("default")


def _key(*, username: str, ip: str) -> str:
    # Hashed: a user name typed into the form must not become part of a Redis key name. Casefolded so that
    # "Admin" and "admin" share one count.
    digest = hashlib.sha256(f"{username.casefold()}\0{ip}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"admin-login:failures:{digest}"


def lockout_seconds(*, username: str, ip: str) -> int | None:
    """Seconds until ``username`` may try again from ``ip``; None when it is not locked out."""
    key = _key(username=username, ip=ip)
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.get(key)
        pipe.ttl(key)
        count, ttl = pipe.execute()
    except RedisError as exc:
        logger.warning("admin login: Redis unavailable, lockout not checked: %s", exc)
        return None
    if count is None or int(count) < settings.ADMIN_LOGIN_MAX_FAILURES:
        return None
    return max(int(ttl), 1)


def failure_record(*, username: str, ip: str) -> None:
    key = _key(username=username, ip=ip)
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.set(key, 0, ex=settings.ADMIN_LOGIN_WINDOW_SECONDS, nx=True)
        pipe.incr(key)
        _, count = pipe.execute()
    except RedisError as exc:
        logger.warning("admin login: Redis unavailable, failure not counted: %s", exc)
        return
    if count == settings.ADMIN_LOGIN_MAX_FAILURES:
        logger.warning("admin login: a user name locked out after %s failures from %s", count, ip)


def failures_clear(*, username: str, ip: str) -> None:
    try:
        _redis().delete(_key(username=username, ip=ip))
    except RedisError as exc:
        logger.warning("admin login: Redis unavailable, failures not cleared: %s", exc)


class LockoutAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing a locked-out user name and address before checking the password."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if not (username and password):
            return super().clean()  # an incomplete form is not an attempt
        ip = client_ip(self.request) if self.request is not None else "unknown"
        wait = lockout_seconds(username=username, ip=ip)
        if wait is not None:
            minutes = math.ceil(wait / 60)
            raise ValidationError(
                "Too many failed sign-in attempts for this user name from your address. Try again in "
                f"{minutes} minute{'s' if minutes != 1 else ''}.",
                code=LOCKED,
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            failure_record(username=username, ip=ip)
            raise
        failures_clear(username=username, ip=ip)
        return cleaned

    def is_locked_out(self) -> bool:
        return any(error.code == LOCKED for error in self.errors.as_data().get("__all__", []))
