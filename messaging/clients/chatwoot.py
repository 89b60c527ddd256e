"""Chatwoot application API client (account-scoped, ``api_access_token`` header).

Chatwoot facts (docs: developers.chatwoot.com):
- Self-hosted or cloud (https://app.chatwoot.com): the base URL belongs to the clinic, so it is an untrusted
  destination -- routiq.http checks and pins a public https address on every request.
- Auth is the user's or agent bot's access token in the ``api_access_token`` header.
- Application endpoints are scoped to an account: ``/api/v1/accounts/{account_id}/…``; account ids are
  integers.
- Contacts list 15 a page (``meta.count``, ``payload``), numbered pages (``page``), sortable (``sort``).
- Conversations list 25 a page under ``data.meta`` / ``data.payload``; ``status`` defaults to open, so every
  status is asked for with ``status=all``; ids are per-account display ids.
- Messages of a conversation page by message id: no cursor gives the latest 20, ``before=<id>`` the 20 before,
  ``after=<id>`` up to 100 after it, always oldest first.
- A reply is ``POST …/conversations/{id}/messages`` ``{"content", "message_type": "outgoing", "private"}``;
  it answers with the created message (its id is what the webhook echo will carry).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from routiq.http import VendorHttpClient, VendorResponseError

PROVIDER = "chatwoot"
CONTACTS_PER_PAGE = 15
CONVERSATIONS_PER_PAGE = 25
MESSAGES_AFTER_LIMIT = 100  # what ``after=`` returns at most
STATUSES = ("open", "pending", "resolved", "snoozed")


@dataclass
class ChatwootPage:
    """One page of a list: its records, its number (numbered lists) and whether a next page may exist."""

    records: list[dict]
    number: int = 0
    has_more: bool = False
    total_entries: int | None = None


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

    # -- lists ----------------------------------------------------------------------------------
    def contacts_page(self, page: int) -> ChatwootPage:
        """Contacts oldest first (``sort=created_at``): a new contact lands on the last page, so numbered pages
        stay put while a sync walks them."""
        body = self.http.get_json(self.account_path("contacts"), params={"page": page, "sort": "created_at"})
        records = _records(body.get("payload"), "contacts payload")
        meta = body["meta"] if isinstance(body.get("meta"), dict) else {}
        count = meta.get("count") if isinstance(meta.get("count"), int) else None
        has_more = len(records) >= CONTACTS_PER_PAGE and (count is None or page * CONTACTS_PER_PAGE < count)
        return ChatwootPage(records, page, has_more, count)

    def contact_pages(self, start_page: int = 1) -> Iterator[ChatwootPage]:
        page = start_page
        while True:
            result = self.contacts_page(page)
            yield result
            if not result.has_more:
                return
            page += 1

    def conversations_page(self, page: int, *, status: str = "all") -> ChatwootPage:
        """Conversations of every status (``status=all``) and every assignee, latest activity first."""
        if status not in (*STATUSES, "all"):
            raise ValueError(f"unknown conversation status {status!r}")
        body = self.http.get_json(self.account_path("conversations"), params={
            "status": status, "assignee_type": "all", "sort_by": "last_activity_at_desc", "page": page})
        data = body.get("data")
        if not isinstance(data, dict):
            raise VendorResponseError(PROVIDER, "conversations answer without data")
        records = _records(data.get("payload"), "conversations payload")
        meta = data["meta"] if isinstance(data.get("meta"), dict) else {}
        total = meta.get("all_count") if isinstance(meta.get("all_count"), int) else None
        has_more = len(records) >= CONVERSATIONS_PER_PAGE and (total is None or page * CONVERSATIONS_PER_PAGE < total)
        return ChatwootPage(records, page, has_more, total)

    def conversation_pages(self, start_page: int = 1, *, status: str = "all") -> Iterator[ChatwootPage]:
        page = start_page
        while True:
            result = self.conversations_page(page, status=status)
            yield result
            if not result.has_more:
                return
            page += 1

    def messages(self, conversation_id: int, *, after: int | None = None, before: int | None = None) -> list[dict]:
        """One batch of a conversation's messages, oldest first: ``after`` up to 100 newer than that id,
        ``before`` the 20 older, neither the latest 20."""
        params: dict[str, int] = {}
        if after is not None:
            params["after"] = int(after)
        if before is not None:
            params["before"] = int(before)
        body = self.http.get_json(self.account_path(f"conversations/{_display_id(conversation_id)}/messages"),
                                  params=params)
        return _records(body.get("payload"), "messages payload")

    def messages_after(self, conversation_id: int, after: int = 0) -> Iterator[list[dict]]:
        """Every message newer than ``after``, in batches of up to 100, oldest first."""
        while True:
            batch = self.messages(conversation_id, after=after)
            yield batch
            ids = [m["id"] for m in batch if isinstance(m, dict) and isinstance(m.get("id"), int)]
            if len(batch) < MESSAGES_AFTER_LIMIT or not ids or max(ids) <= after:
                return
            after = max(ids)

    def inboxes(self) -> dict[int, dict]:
        """Inbox id -> inbox ({id, name, channel_type}): conversations name only their inbox id."""
        body = self.http.get_json(self.account_path("inboxes"))
        return {i["id"]: i for i in _records(body.get("payload"), "inboxes payload") if isinstance(i.get("id"), int)}

    # -- writes -----------------------------------------------------------------------------
    def send_message(self, conversation_id: int, content: str, *, private: bool = False) -> dict:
        """Send an agent's reply (or a private note) into a conversation; returns the created message.
        Not retried after it may have reached Chatwoot (see VendorHttpClient.post_json)."""
        body = self.http.post_json(
            self.account_path(f"conversations/{_display_id(conversation_id)}/messages"),
            {"content": content, "message_type": "outgoing", "private": bool(private)})
        if not isinstance(body.get("id"), int):
            raise VendorResponseError(PROVIDER, "the created message has no id")
        return body


def _records(value: Any, what: str) -> list[dict]:
    """A list of objects; a page that is not one is the vendor's fault for the whole page (the sync fails
    the run and retries), unlike one bad record inside a good page (skipped by the engine)."""
    if not isinstance(value, list):
        raise VendorResponseError(PROVIDER, f"{what} is not a list")
    return [item if isinstance(item, dict) else {"id": None, "_unreadable": True} for item in value]


def _display_id(value: int | str) -> int:
    """Conversation display ids go into URL paths: integers only."""
    if isinstance(value, bool) or not str(value).isdigit():
        raise ValueError("a Chatwoot conversation id is a positive integer")
    return int(value)


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
