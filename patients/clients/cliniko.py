"""Cliniko REST API (v1) client: patients and individual appointments, read-only, for the sync.

Cliniko facts (docs: github.com/redguava/cliniko-api, docs.api.cliniko.com):
- The shard is the API key's suffix (``...-au2``); keys without one live on ``au1``.
- Auth is HTTP Basic with the API key as username and an empty password; a ``User-Agent`` of the form
  ``App (contact@email)`` is mandatory (requests without it may be blocked).
- 200 requests/minute per user; a 429 carries ``X-RateLimit-Reset`` (UNIX epoch seconds).
- Lists page with ``page``/``per_page`` (max 100) and absolute ``links.next``; filters are repeated
  ``q[]=field:OPvalue`` with UTC ISO datetimes.
- Ids are 19 digits (beyond 2**53), as JSON numbers or strings: they must never pass through a float.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import requests
from requests.auth import HTTPBasicAuth

from routiq.http import Timeout, VendorHttpClient, VendorResponseError
from routiq.ratelimit import RedisRateLimiter

PROVIDER = "cliniko"
DEFAULT_SHARD = "au1"
SHARD_RE = re.compile(r"^[a-z]{2}\d{1,2}$", re.IGNORECASE)
FIELD_RE = re.compile(r"^[a-z_]+$")
MAX_PER_PAGE = 100
RATE_LIMIT_PER_MINUTE = 200  # per Cliniko user
# Listing path -> the key its records come under in the response body.
RESOURCES = {
    "patients": "patients",
    "patients/archived": "patients",
    "patients/deleted": "patients",
    "individual_appointments": "individual_appointments",
    "individual_appointments/cancelled": "individual_appointments",
    "individual_appointments/deleted": "individual_appointments",
}


def cliniko_base_url(api_key: str, override: str | None = None) -> str:
    """The API root for a key: ``override`` (a credential's base URL or the CLINIKO_API_URL setting) wins."""
    if override:
        return override.rstrip("/")
    _, dash, suffix = api_key.strip().rpartition("-")
    shard = suffix.lower() if dash and SHARD_RE.match(suffix) else DEFAULT_SHARD
    return f"https://api.{shard}.cliniko.com/v1"


def cliniko_ratelimit_key(api_key: str) -> str:
    """Redis key of the key's shared request budget: a hash, never the key itself."""
    return "ratelimit:cliniko:" + hashlib.sha256(api_key.strip().encode()).hexdigest()[:16]


def cliniko_timestamp(value: datetime) -> str:
    """UTC ISO as Cliniko filters want it. Truncated to the second (Cliniko's precision), so ``>`` never
    skips a record; at worst it returns one already seen."""
    if value.tzinfo is None:
        raise ValueError("Cliniko filters need a timezone-aware datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ClinikoPage:
    records: list[dict] = field(repr=False)  # patient data: keep it out of logs and tracebacks
    next_url: str | None
    url: str
    total_entries: int | None


class ClinikoClient:
    def __init__(self, api_key: str, *, contact_email: str, base_url: str | None = None,
                 limiter: Any = None, timeout: Timeout = (5, 30), max_retries: int = 5,
                 session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep,
                 app_name: str = "RoutIQ", **http_options: Any) -> None:
        """``http_options`` go to VendorHttpClient (e.g. max_rate_limit_wait, random, clock)."""
        api_key = api_key.strip()  # pasted keys often carry a newline
        if not api_key:
            raise ValueError("a Cliniko API key is required")
        if "@" not in contact_email or any(c in contact_email for c in " ()"):
            raise ValueError("contact_email must be a plain email address (Cliniko requires it in the User-Agent)")
        self.http = VendorHttpClient(
            provider=PROVIDER, base_url=cliniko_base_url(api_key, base_url),
            headers={"User-Agent": f"{app_name} ({contact_email})", "Accept": "application/json"},
            auth=HTTPBasicAuth(api_key, ""), timeout=timeout, max_retries=max_retries, limiter=limiter,
            session=session, sleep=sleep, secrets=[api_key], **http_options)

    @classmethod
    def for_key(cls, api_key: str, *, redis_client: Any, rate_per_minute: int = RATE_LIMIT_PER_MINUTE,
                **kwargs: Any) -> ClinikoClient:
        """A client pacing itself through a Redis budget shared by every worker using this key.

        ``rate_per_minute`` is the vendor's limit. The bucket refills at ``limit - burst`` so that even
        burst + refill stays within the limit in any 60 s window.
        """
        burst = max(1, rate_per_minute // 20)
        limiter = RedisRateLimiter(redis_client, cliniko_ratelimit_key(api_key),
                                   rate_per_minute=max(1, rate_per_minute - burst), burst=burst)
        return cls(api_key, limiter=limiter, **kwargs)

    def __repr__(self) -> str:
        return f"<ClinikoClient base_url={self.http.base_url!r}>"

    def check_connection(self) -> None:
        """One cheap authenticated call; raises VendorAuthError on a bad key (the "test connection" button)."""
        self.http.get_json("patients", params={"per_page": 1})

    def pages(self, resource: str, *, updated_after: datetime | None = None, filter_field: str = "updated_at",
              per_page: int = MAX_PER_PAGE, inclusive: bool = False) -> Iterator[ClinikoPage]:
        """Pages of ``resource`` sorted by ``filter_field`` ascending, so the caller can checkpoint a
        high-water mark per committed page. ``updated_after`` filters ``filter_field > value``
        (``>=`` with ``inclusive``: resume from a mark where several records may share one second).
        """
        key = RESOURCES.get(resource)
        if key is None:
            raise ValueError(f"unknown Cliniko resource {resource!r}; expected one of {sorted(RESOURCES)}")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
        if not FIELD_RE.match(filter_field):
            raise ValueError(f"invalid filter field {filter_field!r}")
        params: list[tuple[str, Any]] = [("per_page", per_page), ("sort", filter_field), ("order", "asc")]
        if updated_after is not None:
            op = ">=" if inclusive else ">"
            params.append(("q[]", f"{filter_field}:{op}{cliniko_timestamp(updated_after)}"))
        url: str | None = f"{self.http.url_for(resource)}?{urlencode(params)}"
        seen: set[str] = set()
        while url is not None:
            seen.add(url)
            body = self.http.get_json(url)
            records = body.get(key)
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise VendorResponseError(PROVIDER, f"response for {resource} has no {key!r} list")
            links = body.get("links")
            next_url = links.get("next") if isinstance(links, dict) else None
            if next_url is not None and (not isinstance(next_url, str) or next_url in seen):
                raise VendorResponseError(PROVIDER, f"bad links.next in {resource} response")
            total = body.get("total_entries")
            yield ClinikoPage(records=records, next_url=next_url, url=url,
                              total_entries=total if isinstance(total, int) and not isinstance(total, bool) else None)
            url = next_url
