"""Small stand-ins for Chatwoot and ManyChat: just enough of their real protocol for a connection check.

Chatwoot: ``api_access_token`` header, account-scoped ``/api/v1/accounts/{id}/contacts`` answering
``{"meta": {"count": …}, "payload": […]}``; 401 for a bad token, 404 for an unknown account.
ManyChat: the full stand-in of ``routiq.testing.manychat_stub`` (``/fb/page/getInfo`` and the rest).

Every stub records what it received (``requests``; ManyChat's keep path, query and arrival time, the others
path, query, headers and body), and can be told to misbehave (``routiq.testing.stub_server``):
``answer_with(status, body)`` for every request, or ``redirect_to(url)`` (a 302 to ``url``).
``RecordingServer`` answers 200 to anything and only records: the "other host" of a redirect test.
"""

from __future__ import annotations

from typing import Any

from routiq.testing.manychat_stub import ManyChatStub
from routiq.testing.stub_server import StubError, StubServer

__all__ = ["ChatwootStub", "ManyChatStub", "RecordingServer"]


class ChatwootStub(StubServer):
    def __init__(self, *, token: str, account_id: str) -> None:
        super().__init__()
        self.token, self.account_id = token, account_id

    def _respond(self, method: str, path: str, query: list[tuple[str, str]], headers: Any, body: bytes) -> dict:
        if headers.get("api_access_token") != self.token:
            raise StubError(401, {"errors": ["Invalid Access Token"]})
        if path != f"/api/v1/accounts/{self.account_id}/contacts":
            raise StubError(404, {"error": "Resource could not be found"})
        return {"meta": {"count": 1, "current_page": 1}, "payload": [{"id": 1, "name": "Ada"}]}


class RecordingServer(StubServer):
    """Answers 200 ``{}`` to anything; ``requests`` shows whether (and with what headers) it was reached."""

    def _respond(self, method: str, path: str, query: list[tuple[str, str]], headers: Any, body: bytes) -> dict:
        return {}
