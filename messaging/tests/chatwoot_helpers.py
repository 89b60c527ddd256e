"""Helpers for the Chatwoot tests (fixtures in conftest.py): a client and a credential for a stand-in server,
runs of the sync, and the rows it wrote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

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


@dataclass(frozen=True)
class Skipped:
    """Poison records: conversations by display id (their messages go with them), messages by id."""

    conversations: frozenset[str] = frozenset()
    messages: frozenset[str] = frozenset()


def assert_database_equals_server(organization, stub: ChatwootStub, *, skipped: Skipped | None = None,
                                  lagging: frozenset[str] = frozenset()):
    """Every conversation (its status, its contact) and every message but activity ones (content, privacy,
    direction, conversation) once, nothing else; counters agree. ``skipped``: poison records, which must be
    absent; ``lagging``: display ids of conversations changed during the last run, left out with their
    messages."""
    skipped = skipped or Skipped()
    local = {i: c for i, c in conversations(organization).items() if i not in lagging}
    server = {str(c["id"]): c for c in stub.all_conversations()
              if str(c["id"]) not in skipped.conversations | lagging}
    assert set(local) == set(server)
    for display_id, conversation in server.items():
        assert local[display_id].status == conversation["status"]
        contact = local[display_id].contact
        assert contact is not None
        assert contact.chatwoot_contact_id == conversation["meta"]["sender"]["id"]
    stored = {i: m for i, m in messages(organization).items() if m.conversation.external_id not in lagging}
    expected = {str(m["id"]): m for c in server for m in stub.messages_of(int(c))
                if m["message_type"] != 2 and str(m["id"]) not in skipped.messages}
    assert set(stored) == set(expected)
    for message_id, message in expected.items():
        row = stored[message_id]
        assert (row.content, row.private, row.conversation.external_id) == (
            message["content"], message["private"], str(message["conversation_id"]))
        assert row.direction == ("inbound" if message["message_type"] == 0 else "outbound")
    for display_id, local_conversation in local.items():
        assert local_conversation.message_count == sum(
            1 for m in expected.values() if str(m["conversation_id"]) == display_id)


def assert_contacts_equal_server(organization, stub: ChatwootStub):
    """One contact per Chatwoot contact (none of them matches a patient here), no other."""
    from patients.models import Contact

    with bind_organization(organization):
        ids = list(Contact.objects.filter(chatwoot_contact_id__isnull=False).values_list("chatwoot_contact_id",
                                                                                        flat=True))
    assert sorted(cast("list[int]", ids)) == [c["id"] for c in stub.all_contacts()]  # not null, as filtered
