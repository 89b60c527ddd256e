"""A local HTTP server that speaks enough of ManyChat's API for the client, the linking service and tests.

What it copies from ManyChat (api.manychat.com/swagger): ``Authorization: Bearer <token>`` (401 with
``{"status": "error"}`` otherwise); answers ``{"status": "success", "data": …}``; mistakes are HTTP 400
``{"status": "error", "message": …}``; ``/fb/page/getInfo``, ``/fb/subscriber/getInfo?subscriber_id=``,
``/fb/subscriber/findBySystemField?phone=|email=`` (exactly one; phone in E.164; email case-insensitive).
Every request is recorded (``requests``: path, query, monotonic time) so tests can check pacing.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class ManyChatRequest:
    path: str
    query: dict[str, str]
    at: float


class ManyChatStub:
    def __init__(self, *, token: str = "1234:manychat-test-token", page_name: str = "Harbour Physio") -> None:
        self.token, self.page_name = token, page_name
        self.subscribers: dict[str, dict[str, Any]] = {}
        self.requests: list[ManyChatRequest] = []
        self._ids = itertools.count(9_000_001)
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
                with stub._lock:
                    stub.requests.append(ManyChatRequest(parts.path, query, time.monotonic()))
                status, body = stub.respond(parts.path, query, self.headers.get("Authorization", ""))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_subscriber(self, *, first_name: str = "", last_name: str = "", phone: str = "", email: str = "",
                       whatsapp_phone: str = "") -> dict[str, Any]:
        subscriber_id = str(next(self._ids))
        subscriber = {
            "id": subscriber_id, "page_id": "1234", "status": "active", "first_name": first_name,
            "last_name": last_name, "name": f"{first_name} {last_name}".strip(), "phone": phone or None,
            "whatsapp_phone": whatsapp_phone or None, "email": email or None, "optin_phone": bool(phone),
            "optin_email": bool(email), "subscribed": "2026-01-05T09:30:00+00:00",
            "last_interaction": "2026-11-30T08:00:00+00:00", "custom_fields": [], "tags": [],
        }
        self.subscribers[subscriber_id] = subscriber
        return subscriber

    def respond(self, path: str, query: dict[str, str], authorization: str) -> tuple[int, dict]:
        if authorization != f"Bearer {self.token}":
            return 401, {"status": "error", "message": "Wrong format token"}
        if path == "/fb/page/getInfo":
            return 200, {"status": "success", "data": {"id": 1234, "name": self.page_name}}
        if path == "/fb/subscriber/getInfo":
            subscriber = self.subscribers.get(query.get("subscriber_id", ""))
            if subscriber is None:
                return 400, {"status": "error", "message": "Validation error",
                             "details": {"messages": {"subscriber_id": ["Subscriber does not exist"]}}}
            return 200, {"status": "success", "data": subscriber}
        if path == "/fb/subscriber/findBySystemField":
            return self._find(query)
        return 404, {"status": "error", "message": "Not found"}

    def _find(self, query: dict[str, str]) -> tuple[int, dict]:
        fields = [name for name in ("phone", "email") if query.get(name)]
        if len(fields) != 1:
            return 400, {"status": "error", "message": "Exactly one of phone or email is required"}
        (field,) = fields
        wanted = query[field].lower() if field == "email" else query[field]
        if field == "phone" and not (wanted.startswith("+") and wanted[1:].isdigit()):
            return 400, {"status": "error", "message": "Phone must be in E.164 format"}
        found = [s for s in self.subscribers.values()
                 if (s.get(field) or "").lower() == wanted
                 or (field == "phone" and s.get("whatsapp_phone") == wanted)]
        return 200, {"status": "success", "data": found[0] if len(found) == 1 else found}
