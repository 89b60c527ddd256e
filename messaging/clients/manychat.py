"""ManyChat API client (``Authorization: Bearer <token>``, one token per ManyChat page/account).

ManyChat facts (docs: api.manychat.com/swagger): every answer carries ``"status": "success"`` or
``"error"`` (errors as HTTP 400); per-endpoint rate limits stated only in prose (getInfo 10 requests/s,
findBySystemField 50/s) with no rate-limit headers, so the client paces itself, one Redis token bucket per
endpoint and token, shared by every worker; no pagination and no webhooks (a flow's External Request calls
us instead: messaging/webhooks.py). The base URL is the operator's (MANYCHAT_API_URL), never a clinic's.
"""

from __future__ import annotations

import hashlib
from typing import Any

from routiq.http import VendorHttpClient, VendorResponseError
from routiq.ratelimit import RedisRateLimiter

PROVIDER = "manychat"
DEFAULT_BASE_URL = "https://api.manychat.com"

PAGE_INFO = "fb/page/getInfo"
SUBSCRIBER_INFO = "fb/subscriber/getInfo"
FIND_BY_SYSTEM_FIELD = "fb/subscriber/findBySystemField"
# Requests per second, per endpoint, as ManyChat documents them (the page's getInfo has no stated limit:
# paced like the subscriber's).
ENDPOINT_RATES = {PAGE_INFO: 10, SUBSCRIBER_INFO: 10, FIND_BY_SYSTEM_FIELD: 50}


def manychat_ratelimit_key(token: str, endpoint: str) -> str:
    """The Redis key of one endpoint's budget for one token; the token itself never reaches Redis."""
    digest = hashlib.sha256(token.strip().encode()).hexdigest()[:24]
    return f"ratelimit:manychat:{digest}:{endpoint}"


def endpoint_limiter(redis_client: Any, token: str, endpoint: str, **options: Any) -> RedisRateLimiter:
    """A bucket that never grants more than the endpoint's per-second limit in any one second: the burst
    plus one second's refill stay within it (ManyChat counts per second, not per minute)."""
    per_second = ENDPOINT_RATES[endpoint]
    burst = max(1, per_second // 10)
    return RedisRateLimiter(redis_client, manychat_ratelimit_key(token, endpoint),
                            rate_per_minute=(per_second - burst) * 60 or 60, burst=burst, **options)


class ManyChatClient:
    def __init__(self, token: str, *, base_url: str = DEFAULT_BASE_URL, limiters: dict[str, Any] | None = None,
                 **http_options: Any) -> None:
        """``limiters``: endpoint -> limiter (see ``for_token``); ``http_options`` go to VendorHttpClient
        (timeout, max_retries, …)."""
        token = token.strip()
        if not token:
            raise ValueError("a ManyChat API token is required")
        self._token = token
        self._base_url = base_url
        self._http_options = http_options
        self._limiters = dict(limiters or {})
        self._clients: dict[str, VendorHttpClient] = {}
        self.http = self._http_for(PAGE_INFO)

    @classmethod
    def for_token(cls, token: str, *, redis_client: Any, **kwargs: Any) -> ManyChatClient:
        """A client pacing each endpoint at its documented limit, through budgets shared by all workers."""
        limiters = {endpoint: endpoint_limiter(redis_client, token, endpoint) for endpoint in ENDPOINT_RATES}
        return cls(token, limiters=limiters, **kwargs)

    def __repr__(self) -> str:
        return f"<ManyChatClient base_url={self.http.base_url!r}>"

    def _http_for(self, endpoint: str) -> VendorHttpClient:
        # One HTTP client per endpoint: the shared base acquires its limiter on every attempt (retries
        # included), so each endpoint's retries spend that endpoint's budget.
        if endpoint not in self._clients:
            self._clients[endpoint] = VendorHttpClient(
                provider=PROVIDER, base_url=self._base_url, secrets=[self._token],
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
                limiter=self._limiters.get(endpoint), **self._http_options)
        return self._clients[endpoint]

    def get_json(self, path: str, params: Any = None) -> dict[str, Any]:
        """GET ``path``; a 2xx whose ``status`` is not "success" is a VendorResponseError."""
        body = self._http_for(path).get_json(path, params)
        if body.get("status") != "success":
            raise VendorResponseError(PROVIDER, f"GET {path} did not answer with status 'success'")
        return body

    def check_connection(self) -> None:
        """The page the token belongs to: a bad token is VendorAuthError."""
        self.get_json(PAGE_INFO)

    def subscriber_info(self, subscriber_id: str) -> dict[str, Any]:
        """``getInfo``: the subscriber (id, first_name, last_name, phone, whatsapp_phone, email, …)."""
        subscriber_id = str(subscriber_id).strip()
        if not subscriber_id.isdigit():
            raise ValueError("a ManyChat subscriber id is digits")
        data = self.get_json(SUBSCRIBER_INFO, {"subscriber_id": subscriber_id}).get("data")
        if not isinstance(data, dict):
            raise VendorResponseError(PROVIDER, f"GET {SUBSCRIBER_INFO} answered without a subscriber")
        return data

    def subscribers_by_system_field(self, *, phone: str = "", email: str = "") -> list[dict[str, Any]]:
        """``findBySystemField`` by exactly one of phone (E.164, e.g. +61412345678) or email.

        The swagger leaves open whether ``data`` is one subscriber or a list; both are read, and an empty or
        null ``data`` is no match.
        """
        if bool(phone) == bool(email):
            raise ValueError("give exactly one of phone or email")
        if phone and not (phone.startswith("+") and phone[1:].isdigit()):
            raise ValueError("the phone must be in E.164 (+ and digits)")
        params = {"phone": phone} if phone else {"email": email.strip()}
        data = self.get_json(FIND_BY_SYSTEM_FIELD, params).get("data")
        if isinstance(data, dict):
            return [data] if data else []
        if isinstance(data, list):
            return [item for item in data if isinstance(item, dict)]
        return []
