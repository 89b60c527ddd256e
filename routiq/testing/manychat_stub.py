"""A local HTTP server that speaks enough of ManyChat's API for the client, the linking service and tests.

What it copies from ManyChat (api.manychat.com/swagger): ``Authorization: Bearer <token>`` (401 with
``{"status": "error"}`` otherwise); answers ``{"status": "success", "data": …}``; mistakes are HTTP 400
``{"status": "error", "message": …}``; ``/fb/page/getInfo``, ``/fb/subscriber/getInfo?subscriber_id=``,
``/fb/subscriber/findBySystemField?phone=|email=`` (exactly one; phone in E.164; email case-insensitive).
Every request is recorded (``requests``: path, query, monotonic time) so tests can check pacing.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from routiq.testing.stub_server import StubError, StubServer


@dataclass(frozen=True)
class ManyChatRequest:
    path: str
    query: dict[str, str]  # the last value of each parameter, blank ones left out
    at: float


class ManyChatStub(StubServer):
    def __init__(self, *, token: str = "1234:manychat-test-token", page_name: str = "Harbour Physio") -> None:
        super().__init__()
        self.token, self.page_name = token, page_name
        self.subscribers: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(9_000_001)

    def _record(self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                body: bytes) -> ManyChatRequest:
        return ManyChatRequest(path, _last_values(query), time.monotonic())

    def add_subscriber(self, *, first_name: str = "", last_name: str = "", phone: str = "", email: str = "",
                       whatsapp_phone: str = "") -> dict[str, Any]:
        subscriber_id = str(next(self._ids))
        subscriber: dict[str, Any] = {
            "id": subscriber_id, "page_id": "1234", "status": "active", "first_name": first_name,
            "last_name": last_name, "name": f"{first_name} {last_name}".strip(), "phone": phone or None,
            "whatsapp_phone": whatsapp_phone or None, "email": email or None, "optin_phone": bool(phone),
            "optin_email": bool(email), "subscribed": "2026-01-05T09:30:00+00:00",
            "last_interaction": "2026-11-30T08:00:00+00:00", "custom_fields": [], "tags": [],
        }
        self.subscribers[subscriber_id] = subscriber
        return subscriber

    def _respond(self, method: str, path: str, query: list[tuple[str, str]], headers: Any,
                 body: bytes) -> dict:
        if headers.get("Authorization", "") != f"Bearer {self.token}":
            raise StubError(401, {"status": "error", "message": "Wrong format token"})
        params = _last_values(query)
        if path == "/fb/page/getInfo":
            return {"status": "success", "data": {"id": 1234, "name": self.page_name}}
        if path == "/fb/subscriber/getInfo":
            subscriber = self.subscribers.get(params.get("subscriber_id", ""))
            if subscriber is None:
                raise StubError(400, {"status": "error", "message": "Validation error",
                                      "details": {"messages": {"subscriber_id": ["Subscriber does not exist"]}}})
            return {"status": "success", "data": subscriber}
        if path == "/fb/subscriber/findBySystemField":
            return self._find(params)
        raise StubError(404, {"status": "error", "message": "Not found"})

    def _find(self, query: dict[str, str]) -> dict:
        fields = [name for name in ("phone", "email") if query.get(name)]
        if len(fields) != 1:
            raise StubError(400, {"status": "error", "message": "Exactly one of phone or email is required"})
        (field,) = fields
        wanted = query[field].lower() if field == "email" else query[field]
        if field == "phone" and not (wanted.startswith("+") and wanted[1:].isdigit()):
            raise StubError(400, {"status": "error", "message": "Phone must be in E.164 format"})
        found = [s for s in self.subscribers.values()
                 if (s.get(field) or "").lower() == wanted
                 or (field == "phone" and s.get("whatsapp_phone") == wanted)]
        return {"status": "success", "data": found[0] if len(found) == 1 else found}


def _last_values(query: list[tuple[str, str]]) -> dict[str, str]:
    """The last value of each parameter, blank ones left out (as ManyChat reads a query)."""
    return {key: value for key, value in query if value}
