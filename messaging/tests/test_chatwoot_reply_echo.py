"""A reply and its webhook echo, end to end over HTTP: the portal sends through Chatwoot's API, the Chatwoot
stand-in delivers the signed message_created webhook for that very message to the running portal, and the
thread holds one message."""

from __future__ import annotations

import pytest

from messaging.services import reply_send
from messaging.tests.chatwoot_helpers import client_for, connect, conversations, messages, run
from tenants.rls.binding import bind_organization
from tenants.webhook_endpoints import credential_webhook_secret_set

pytestmark = pytest.mark.django_db(transaction=True)
SECRET = "echo-webhook-secret"


def test_a_reply_and_its_webhook_echo_make_one_message(live_server, org_a, chatwoot, private_networks):
    connect(org_a, chatwoot)
    with bind_organization(org_a):
        credential_webhook_secret_set(organization=org_a, provider="chatwoot", secret=SECRET)
    org_a.refresh_from_db()
    chatwoot.webhook_url = f"{live_server.url}/webhooks/chatwoot/{org_a.webhook_token}/"
    chatwoot.webhook_secret = SECRET
    thread = chatwoot.add_conversation(chatwoot.add_contact("Echo Patient", phone_number="+61400333444")["id"])
    chatwoot.add_message(thread["id"], "Is 4pm free?")
    run(org_a, client_for(chatwoot), "messages")
    conversation = conversations(org_a)[str(thread["id"])]

    with bind_organization(org_a):
        sent = reply_send(organization=org_a, conversation=conversation, content="Yes, 4pm is yours.", actor=None)
    ((status, body),) = chatwoot.wait_for_webhooks(1)

    assert status == 200 and b"duplicate" not in body  # the echo was received and applied, not refused
    stored = messages(org_a)
    assert sorted(stored) == sorted([str(m["id"]) for m in chatwoot.messages_of(thread["id"])])
    assert len(stored) == 2 and stored[sent.external_id].content == "Yes, 4pm is yours."
    answered = conversations(org_a)[str(thread["id"])]
    assert (answered.message_count, answered.unanswered_since) == (2, None)
