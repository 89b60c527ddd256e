"""Small stand-ins for Chatwoot and ManyChat: just enough of their real protocol for a connection check.

Chatwoot: ``api_access_token`` header, account-scoped ``/api/v1/accounts/{id}/contacts`` answering
``{"meta": {"count": …}, "payload": […]}``; 401 for a bad token, 404 for an unknown account.
ManyChat: ``Authorization: Bearer <token>`` on ``/fb/page/getInfo`` answering
``{"status": "success", "data": {…}}``; 401 with ``{"status": "error"}`` for a bad token.

Every stub records what it received (``requests``: path and headers), and can be told to misbehave:
``answer_with(status, body)`` for every request, or ``redirect_to(url)`` (a 302 to ``url``).
``RecordingServer`` answers 200 to anything and only records: the "other host" of a redirect test.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]


class _StubServer:
    def __init__(self) -> None:
        stub = self
        self.requests: list[ReceivedRequest] = []
        self._override: tuple[int, Any, dict[str, str]] | None = None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                stub.requests.append(ReceivedRequest(path, dict(self.headers.items())))
                if stub._override is not None:
                    status, body, extra = stub._override
                else:
                    (status, body), extra = stub.respond(path, self.headers), {}
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def respond(self, path: str, headers) -> tuple[int, dict]:
        raise NotImplementedError

    def answer_with(self, status: int, body: dict | str) -> None:
        """Answer every request with ``status`` and ``body`` (a str is sent as text/plain)."""
        self._override = (status, body, {})

    def redirect_to(self, url: str, status: int = 302) -> None:
        """Answer every request with a redirect to ``url``."""
        self._override = (status, "", {"Location": url})

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()


class ChatwootStub(_StubServer):
    def __init__(self, *, token: str, account_id: str) -> None:
        super().__init__()
        self.token, self.account_id = token, account_id

    def respond(self, path: str, headers) -> tuple[int, dict]:
        if headers.get("api_access_token") != self.token:
            return 401, {"errors": ["Invalid Access Token"]}
        if path != f"/api/v1/accounts/{self.account_id}/contacts":
            return 404, {"error": "Resource could not be found"}
        return 200, {"meta": {"count": 1, "current_page": 1}, "payload": [{"id": 1, "name": "Ada"}]}


class ManyChatStub(_StubServer):
    def __init__(self, *, token: str) -> None:
        super().__init__()
        self.token = token

    def respond(self, path: str, headers) -> tuple[int, dict]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"status": "error", "message": "Wrong format token"}
        if path != "/fb/page/getInfo":
            return 404, {"status": "error", "message": "Not found"}
        return 200, {"status": "success", "data": {"id": 1234, "name": "Harbour Physio"}}


class RecordingServer(_StubServer):
    """Answers 200 ``{}`` to anything; ``requests`` shows whether (and with what headers) it was reached."""

    def respond(self, path: str, headers) -> tuple[int, dict]:
        return 200, {}
