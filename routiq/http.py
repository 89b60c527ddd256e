"""Shared HTTP plumbing for vendor API clients, and the vendor exception types the sync code acts on.

Vendor clients know HTTP, not the database: no ORM, no settings -- configuration comes in as arguments.
Every call has a timeout; 5xx / connection errors / timeouts are retried a bounded number of times with
exponential backoff and full jitter; 429s are waited out (Retry-After or X-RateLimit-Reset) a bounded
number of times. Secrets never appear in messages, reprs or logs: error text is scrubbed of the
client's secrets, and logs carry only the URL path (no query string).
"""

from __future__ import annotations

import json
import logging
import random as _random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

Params = Mapping[str, Any] | Sequence[tuple[str, Any]] | None
Timeout = float | tuple[float, float]
# requests' transient transport failures (ConnectTimeout is both a ConnectionError and a Timeout).
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class VendorError(Exception):
    """A vendor call failed. ``retryable`` tells the sync whether trying again later can help."""

    retryable: bool = False

    def __init__(self, provider: str, message: str, *, status: int | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(f"{provider}: {message}")  # args (hence repr) hold only the scrubbed message
        self.provider = provider
        self.status = status
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class VendorAuthError(VendorError):
    """401/403: a bad or under-privileged key. Retrying cannot help; the sync must stop and say so."""


class VendorNotFound(VendorError):
    """404."""


class VendorRateLimited(VendorError):
    """429 still coming after the client's bounded waits. ``retry_after``: the vendor's last hint, seconds."""

    retryable = True

    def __init__(self, provider: str, message: str, *, status: int | None = 429,
                 retry_after: float | None = None) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after = retry_after


class VendorUnavailable(VendorError):
    """5xx, connection errors and timeouts, after bounded retries."""

    retryable = True


class VendorResponseError(VendorError):
    """2xx with a body we cannot use (not JSON, not an object, missing the expected key)."""


class VendorClientError(VendorError):
    """Any other 4xx: our request is wrong; retrying the same request cannot help."""


class Limiter(Protocol):
    def acquire(self) -> None: ...


class VendorHttpClient:
    """GET-JSON client with timeouts, retries, 429 handling and optional shared pacing (``limiter``)."""

    def __init__(self, *, provider: str, base_url: str, headers: Mapping[str, str] | None = None,
                 auth: Any = None, timeout: Timeout = (5, 30), max_retries: int = 5,
                 max_rate_limit_retries: int = 5, max_rate_limit_wait: float = 120.0,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, limiter: Limiter | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep,
                 random: Callable[[], float] = _random.random, clock: Callable[[], float] = time.time,
                 secrets: Iterable[str] = ()) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        # Headers and auth go on each request, so a caller-supplied session is never mutated.
        self.headers = dict(headers or {})
        self._auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_rate_limit_retries = max_rate_limit_retries
        self.max_rate_limit_wait = max_rate_limit_wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.limiter = limiter
        self.session = session or requests.Session()
        self._sleep, self._random, self._clock = sleep, random, clock
        self._secrets = tuple(s for s in secrets if s)
        origin = urlsplit(self.base_url)
        self._origin = (origin.scheme.lower(), origin.netloc.lower())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} provider={self.provider!r} base_url={self.base_url!r}>"

    # -- public ------------------------------------------------------------------------
    def url_for(self, url_or_path: str) -> str:
        """Absolute URLs (e.g. a ``links.next``) as is -- but only on the base URL's host, since the
        credentials go with every request; relative paths are appended to the base URL (keeping /v1)."""
        parts = urlsplit(url_or_path)
        if not parts.scheme:
            return f"{self.base_url}/{url_or_path.lstrip('/')}"
        if (parts.scheme.lower(), parts.netloc.lower()) != self._origin:
            raise VendorResponseError(self.provider, f"refusing to send credentials to another host ({parts.netloc})")
        return url_or_path

    def get_json(self, url_or_path: str, params: Params = None) -> dict[str, Any]:
        url = self.url_for(url_or_path)
        response = self._send(url, params)
        try:
            # Stdlib json keeps integers exact (19-digit ids stay ints, never floats).
            body = json.loads(response.content)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise VendorResponseError(self.provider, f"HTTP {response.status_code} from {self._path(url)} "
                                      "is not valid JSON", status=response.status_code) from None
        if not isinstance(body, dict):
            raise VendorResponseError(self.provider, f"expected a JSON object from {self._path(url)}, "
                                      f"got {type(body).__name__}", status=response.status_code)
        return body

    def backoff(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**(attempt-1)))."""
        return self._random() * min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))

    def rate_limit_wait(self, response: requests.Response) -> float | None:
        """Seconds to wait after a 429, from Retry-After (seconds or HTTP date) or X-RateLimit-Reset
        (UNIX epoch seconds), clamped to [0, max_rate_limit_wait]; None when neither header is usable."""
        wait: float | None = None
        retry_after = response.headers.get("Retry-After", "").strip()
        reset = response.headers.get("X-RateLimit-Reset", "").strip()
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                try:
                    when = parsedate_to_datetime(retry_after)
                    wait = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() - self._clock()
                except (TypeError, ValueError):
                    wait = None
        if wait is None and reset:
            try:
                value = float(reset)
                # Epoch per Cliniko; some vendors send a delta -- anything before 2001 cannot be an epoch.
                wait = value - self._clock() if value >= 1e9 else value
            except ValueError:
                wait = None
        return None if wait is None else min(max(wait, 0.0), self.max_rate_limit_wait)

    # -- internals -----------------------------------------------------------------------
    def _send(self, url: str, params: Params) -> requests.Response:
        path = self._path(url)
        failures = rate_limited = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire()  # once per attempt: retries spend the shared budget too
            try:
                response = self.session.get(url, params=params, headers=self.headers, auth=self._auth,
                                            timeout=self.timeout)
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if failures > self.max_retries:
                    raise VendorUnavailable(self.provider, self._scrub(
                        f"{type(exc).__name__} on GET {path} after {failures} attempts")) from exc
                self._pause(self.backoff(failures), f"{type(exc).__name__}", path, failures, self.max_retries)
                continue
            except requests.RequestException as exc:  # invalid URL, too many redirects: not transient
                raise VendorError(self.provider, self._scrub(f"{type(exc).__name__} on GET {path}")) from exc

            status = response.status_code
            if status == 429:
                rate_limited += 1
                hint = self.rate_limit_wait(response)
                if rate_limited > self.max_rate_limit_retries:
                    raise VendorRateLimited(self.provider, f"still rate limited on GET {path} after "
                                            f"{rate_limited} attempts", retry_after=hint)
                wait = hint if hint is not None else self.backoff(rate_limited)
                self._pause(wait, "HTTP 429", path, rate_limited, self.max_rate_limit_retries)
                continue
            if status >= 500:
                failures += 1
                if failures > self.max_retries:
                    raise VendorUnavailable(self.provider, f"HTTP {status} on GET {path} after {failures} attempts"
                                            f"{self._detail(response)}", status=status)
                self._pause(self.backoff(failures), f"HTTP {status}", path, failures, self.max_retries)
                continue
            if not 200 <= status < 300:
                raise self._error_for(status, path, response)
            return response

    def _error_for(self, status: int, path: str, response: requests.Response) -> VendorError:
        detail = self._detail(response)
        if status in (401, 403):
            return VendorAuthError(self.provider, f"credentials rejected (HTTP {status}) on GET {path}{detail}",
                                   status=status)
        if status == 404:
            return VendorNotFound(self.provider, f"HTTP 404 on GET {path}{detail}", status=status)
        return VendorClientError(self.provider, f"HTTP {status} on GET {path}{detail}", status=status)

    def _detail(self, response: requests.Response) -> str:
        """The vendor's own error message (short, scrubbed) -- it usually says what is wrong."""
        try:
            body = json.loads(response.content)
            text = (body.get("message") or body.get("error") or body.get("errors")) if isinstance(body, dict) else body
        except ValueError:
            text = response.text
        text = " ".join(str(text or "").split())[:200]
        return f": {self._scrub(text)}" if text else ""

    def _pause(self, seconds: float, reason: str, path: str, attempt: int, limit: int) -> None:
        logger.warning("%s: %s on GET %s; retry %d/%d in %.1fs", self.provider, reason, path, attempt, limit, seconds)
        if seconds > 0:
            self._sleep(seconds)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _path(self, url: str) -> str:
        return self._scrub(urlsplit(url).path or "/")
