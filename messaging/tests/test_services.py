"""Conversation and message writes: idempotent upserts, counters kept by the writer, replies recorded once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from messaging.chatwoot_records import ConversationRow, MessageRow, message_row
from messaging.matching import ExternalIdentity
from messaging.models import Conversation, Message
from messaging.services import ReplyNotPossible, conversations_upsert, messages_upsert, reply_send
from messaging.tests.chatwoot_helpers import connect, conversations, messages
from patients.models import Contact
from routiq.http import VendorRateLimited, VendorUnavailable
from tenants.models import AuditLog
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def conversation_row(external_id="41", *, status="open", contact_id="900", phone="0412 345 678") -> ConversationRow:
    return ConversationRow(external_id=external_id, status=status, channel="Channel::Whatsapp", inbox_name="WhatsApp",
                           assignee_name="Jess", last_activity_at=None,
                           contact=ExternalIdentity("chatwoot", contact_id, "Ada Lovelace", phone, ""))


def message(external_id, minutes, direction="inbound", content="", *, private=False, conversation="41") -> MessageRow:
    return MessageRow(conversation_external_id=conversation, external_id=str(external_id), direction=direction,
                      private=private, sender_name="", content=content or f"message {external_id}",
                      content_type="text", attachments=[], sent_at=T0 + timedelta(minutes=minutes))


def write(organization, fn, rows):
    with bind_organization(organization):
        return fn(organization=organization, rows=rows)


def thread(organization, external_id="41") -> Conversation:
    return conversations(organization)[external_id]


def test_conversation_upsert_links_its_contact_and_rewrites_only_changes(org_a):
    with bind_organization(org_a):
        patient = Contact.objects.create(organization=org_a, first_name="Ada", last_name="Lovelace",
                                         cliniko_patient_id=77, phone_e164="+61412345678")

    created = write(org_a, conversations_upsert, [conversation_row()])
    again = write(org_a, conversations_upsert, [conversation_row()])
    resolved = write(org_a, conversations_upsert, [conversation_row(status="resolved")])

    assert (created.created, again.created, again.updated, resolved.updated) == (1, 0, 0, 1)
    stored = thread(org_a)
    assert (stored.contact_id, stored.status, stored.inbox_name, stored.assignee_name) == (
        patient.pk, "resolved", "WhatsApp", "Jess")


def test_counters_follow_the_messages_whatever_order_they_arrive_in(org_a):
    write(org_a, conversations_upsert, [conversation_row()])

    write(org_a, messages_upsert, [message(5, 50, "inbound", "Are you open Saturday?"),
                                   message(6, 55, "outbound", "Note: check roster", private=True)])
    after_question = thread(org_a)
    write(org_a, messages_upsert, [message(1, 0, "inbound"), message(2, 10, "outbound")])  # older history
    after_history = thread(org_a)
    write(org_a, messages_upsert, [message(7, 60, "outbound", "Yes, 8 till 12")])
    answered = thread(org_a)

    assert after_question.message_count == 2
    assert after_question.last_message_preview == "Are you open Saturday?"  # not the private note
    assert after_question.unanswered_since == T0 + timedelta(minutes=50)  # a private note answers no one
    assert (after_history.message_count, after_history.unanswered_since) == (4, T0 + timedelta(minutes=50))
    assert after_history.last_message_at == T0 + timedelta(minutes=55)
    assert (answered.message_count, answered.unanswered_since, answered.last_message_preview) == (
        5, None, "Yes, 8 till 12")


def test_messages_upsert_is_idempotent_and_applies_edits(org_a):
    write(org_a, conversations_upsert, [conversation_row()])
    first = write(org_a, messages_upsert, [message(1, 0), message(2, 1)])
    again = write(org_a, messages_upsert, [message(1, 0), message(2, 1)])
    edited = write(org_a, messages_upsert, [message(2, 1, content="edited text")])

    assert (first.created, again.created, again.updated, edited.created, edited.updated) == (2, 0, 0, 0, 1)
    assert thread(org_a).message_count == 2
    assert messages(org_a)["2"].content == "edited text"
    assert thread(org_a).last_message_preview == "edited text"


def test_a_message_brings_its_unknown_conversation_along(org_a):
    row = message_row({"id": 3, "message_type": "incoming", "content": "hi", "created_at": "2024-05-01T09:00:00.250Z",
                       "conversation": {"id": 12, "status": "pending", "meta": {"sender": {
                           "id": 5, "name": "Webhook First", "phone_number": "+61400000001"}}}})

    counts = write(org_a, messages_upsert, [row])

    assert counts.created == 1
    created = thread(org_a, "12")
    assert (created.status, created.message_count, str(created.contact)) == ("pending", 1, "Webhook First")


def test_the_api_and_webhook_copies_of_a_message_are_one_row(org_a):
    write(org_a, conversations_upsert, [conversation_row()])
    api = message_row({"id": 88, "message_type": 1, "content": "See you", "created_at": 1714554001,
                       "conversation_id": 41})
    webhook = message_row({"id": 88, "message_type": "outgoing", "content": "See you",
                           "created_at": "2024-05-01T09:00:01.734Z", "conversation": {"id": 41, "status": "open"}})

    write(org_a, messages_upsert, [webhook])
    write(org_a, messages_upsert, [api])

    assert list(messages(org_a)) == ["88"]
    assert thread(org_a).message_count == 1


def test_writes_refuse_an_organization_that_is_not_bound(org_a, org_b):
    with bind_organization(org_b), pytest.raises(RuntimeError):
        messages_upsert(organization=org_a, rows=[message(1, 0)])


# -- replies ---------------------------------------------------------------------------------------
@pytest.fixture
def synced(org_a, chatwoot, private_networks):
    connect(org_a, chatwoot)
    contact = chatwoot.add_contact("Reply Person", phone_number="+61400222333")
    chatwoot_conversation = chatwoot.add_conversation(contact["id"])
    chatwoot.add_message(chatwoot_conversation["id"], "Can I book for Friday?")
    from messaging.tests.chatwoot_helpers import client_for, run

    run(org_a, client_for(chatwoot), "messages")
    return thread(org_a, str(chatwoot_conversation["id"]))


def reply(organization, conversation, content, **kwargs):
    with bind_organization(organization):
        return reply_send(organization=organization, conversation=conversation, content=content, actor=None,
                          **kwargs)


def test_a_reply_is_sent_once_and_its_echo_adds_nothing(org_a, chatwoot, synced):
    sent = reply(org_a, synced, "Friday 9:30 is yours.")

    posts = [r for r in chatwoot.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].path.endswith(f"/conversations/{synced.external_id}/messages")
    echo = message_row(chatwoot.message_webhook_payload(int(sent.external_id)))
    write(org_a, messages_upsert, [echo])
    stored = messages(org_a)
    assert len(stored) == 2 and stored[sent.external_id].direction == "outbound"
    answered = thread(org_a, synced.external_id)
    assert (answered.message_count, answered.unanswered_since) == (2, None)
    assert answered.last_message_preview == "Friday 9:30 is yours."
    with bind_organization(org_a):
        assert AuditLog.objects.filter(action="message.sent", object_id=str(synced.pk)).count() == 1


def test_a_private_note_is_sent_marked_and_answers_no_one(org_a, chatwoot, synced):
    note = reply(org_a, synced, "Prefers mornings", private=True)

    assert note.private is True
    assert json_body(chatwoot)["private"] is True
    assert thread(org_a, synced.external_id).unanswered_since is not None


def json_body(stub):
    import json

    return json.loads([r for r in stub.requests if r.method == "POST"][-1].body)


def test_a_failed_reply_is_not_retried_and_records_nothing(org_a, chatwoot, synced):
    chatwoot.queue_faults("status", 3, status=503, path_contains="/messages")

    with pytest.raises(VendorUnavailable):
        reply(org_a, synced, "Hello?")

    assert len([r for r in chatwoot.requests if r.method == "POST"]) == 1  # maybe sent: never sent twice
    assert len(messages(org_a)) == 1


def test_only_chatwoot_conversations_take_replies(org_a, synced):
    with bind_organization(org_a):
        manychat = Conversation.objects.create(organization=org_a, provider="manychat", external_id="sub-1")

    with pytest.raises(ReplyNotPossible):
        reply(org_a, manychat, "Hi")
    with pytest.raises(ReplyNotPossible):
        reply(org_a, synced, "   ")
    with bind_organization(org_a):
        assert Message.objects.count() == 1


def test_a_reply_waits_out_one_short_rate_limit_at_most(org_a, chatwoot, synced):
    chatwoot.queue_faults("rate_limit", 2, seconds=0.1, path_contains="/messages")

    with pytest.raises(VendorRateLimited):  # a person is waiting: no long retry loop
        reply(org_a, synced, "Hello?")

    assert [r.method for r in chatwoot.requests].count("POST") == 2
    assert len(messages(org_a)) == 1
