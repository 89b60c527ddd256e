"""Helpers for the Chatwoot tests (fixtures in conftest.py): a client and a credential for a stand-in server,
runs of the sync, and the rows it wrote."""

from __future__ import annotations

from messaging.clients.chatwoot import ChatwootClient
from messaging.models import Conversation, Message
from messaging.sync import sync_chatwoot
from routiq.testing.chatwoot_stub import ChatwootStub
from tenants.credentials import credential_set
from tenants.rls.binding import bind_organization

TOKEN_A, TOKEN_B = "cw-token-harbour-0001", "cw-token-summit-0002"


def client_for(stub: ChatwootStub, sleeps: list | None = None, **options) -> ChatwootClient:
    """A client for the stand-in that records its waits instead of sleeping."""
    return ChatwootClient(stub.api_token, base_url=stub.base_url, account_id=stub.account_id,
                          allow_private_networks=True,
                          sleep=sleeps.append if sleeps is not None else (lambda seconds: None),
                          random=lambda: 0.5, max_retries=2, **options)


def connect(organization, stub: ChatwootStub):
    with bind_organization(organization):
        return credential_set(organization=organization, provider="chatwoot", secret=stub.api_token,
                              base_url=stub.base_url, account_id=str(stub.account_id))


def run(organization, client, resource, **kwargs):
    with bind_organization(organization):
        return sync_chatwoot(organization=organization, resource=resource, client=client, **kwargs)


def run_all(organization, client, **kwargs):
    return [run(organization, client, resource, **kwargs) for resource in ("contacts", "conversations", "messages")]


def conversations(organization) -> dict[str, Conversation]:
    with bind_organization(organization):
        return {c.external_id: c for c in Conversation.objects.select_related("contact")}


def messages(organization) -> dict[str, Message]:
    with bind_organization(organization):
        return {m.external_id: m for m in Message.objects.select_related("conversation")}
