"""ManyChat API client (``Authorization: Bearer <token>``, one token per ManyChat page/account).

ManyChat facts (docs: api.manychat.com/swagger): every answer carries ``"status": "success"`` or
``"error"``; per-endpoint rate limits (10-50 requests/s); no pagination and no webhooks. The base URL is
the operator's (MANYCHAT_API_URL), never a clinic's.
"""

from __future__ import annotations

from typing import Any

from routiq.http import VendorHttpClient, VendorResponseError

PROVIDER = "manychat"
DEFAULT_BASE_URL = "https://api.manychat.com"


class ManyChatClient:
    def __init__(self, token: str, *, base_url: str = DEFAULT_BASE_URL, **http_options: Any) -> None:
        """``http_options`` go to VendorHttpClient (timeout, max_retries, …)."""
        token = token.strip()
        if not token:
            raise ValueError("a ManyChat API token is required")
        self.http = VendorHttpClient(provider=PROVIDER, base_url=base_url, secrets=[token],
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                                     **http_options)

    def __repr__(self) -> str:
        return f"<ManyChatClient base_url={self.http.base_url!r}>"

    def get_json(self, path: str, params: Any = None) -> dict[str, Any]:
        """GET ``path``; a 2xx whose ``status`` is not "success" is a VendorResponseError."""
        body = self.http.get_json(path, params)
        if body.get("status") != "success":
            raise VendorResponseError(PROVIDER, f"GET {path} did not answer with status 'success'")
        return body

    def check_connection(self) -> None:
        """The page the token belongs to: a bad token is VendorAuthError."""
        self.get_json("fb/page/getInfo")
