"""Chatwoot application API client (account-scoped, ``api_access_token`` header).

Chatwoot facts (docs: developers.chatwoot.com):
- Self-hosted or cloud (https://app.chatwoot.com): the base URL belongs to the clinic, so it is an untrusted
  destination -- routiq.http checks and pins a public https address on every request.
- Auth is the user's or agent bot's access token in the ``api_access_token`` header.
- Application endpoints are scoped to an account: ``/api/v1/accounts/{account_id}/…``; account ids are
  integers.
- Contacts list 15 a page (``meta.count``, ``payload``).
"""

from __future__ import annotations

from typing import Any

from routiq.http import VendorHttpClient

PROVIDER = "chatwoot"


class ChatwootClient:
    def __init__(self, access_token: str, *, base_url: str, account_id: int | str,
                 allow_private_networks: bool = False, **http_options: Any) -> None:
        """``allow_private_networks``: the operator's VENDOR_ALLOW_PRIVATE_NETWORKS (local stand-ins).
        ``http_options`` go to VendorHttpClient (timeout, max_retries, …)."""
        access_token = access_token.strip()
        if not access_token:
            raise ValueError("a Chatwoot access token is required")
        self.account_id = _account_id(account_id)
        self.http = VendorHttpClient(
            provider=PROVIDER, base_url=base_url,
            headers={"api_access_token": access_token, "Accept": "application/json"}, secrets=[access_token],
            untrusted_destination=True, allow_private_networks=allow_private_networks, **http_options)

    def __repr__(self) -> str:
        return f"<ChatwootClient base_url={self.http.base_url!r} account_id={self.account_id}>"

    def account_path(self, path: str) -> str:
        """``path`` under this account's API root."""
        return f"api/v1/accounts/{self.account_id}/{path.lstrip('/')}"

    def check_connection(self) -> None:
        """One cheap authenticated, account-scoped call: a bad token is VendorAuthError, an unknown
        account VendorNotFound."""
        self.http.get_json(self.account_path("contacts"), params={"page": 1})


def _account_id(value: int | str) -> int:
    """A positive integer: it goes into the URL path, where "../1" would reach another endpoint."""
    if isinstance(value, bool):
        raise ValueError("a Chatwoot account id is a positive integer")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise ValueError("a Chatwoot account id is a positive integer")
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise ValueError("a Chatwoot account id is a positive integer")
    return value
