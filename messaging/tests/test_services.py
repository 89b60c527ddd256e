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


def test_older_history_behind_a_newer_private_note_becomes_the_preview(org_a):
    """Rows older than what the conversation holds are read back, not taken from the page: here the newest
    message is a private note, so an older message arriving later is the preview and the question waits."""
    write(org_a, conversations_upsert, [conversation_row()])
    write(org_a, messages_upsert, [message(1, 0, "outbound", "Welcome"),
                                   message(9, 90, "outbound", "Note", private=True)])

    write(org_a, messages_upsert, [message(5, 50, "inbound", "Still open?")])

    stored = thread(org_a)
    assert (stored.message_count, stored.last_message_at) == (3, T0 + timedelta(minutes=90))
    assert (stored.last_message_preview, stored.unanswered_since) == ("Still open?", T0 + timedelta(minutes=50))


def test_a_question_at_the_same_second_as_the_reply_does_not_wait(org_a):
    """Unanswered means after the last reply: a message in the very second of the reply is not after it, and
    a tie in time is read back from the messages, as history is."""
    write(org_a, conversations_upsert, [conversation_row()])
    write(org_a, messages_upsert, [message(1, 0, "inbound", "Hi"), message(2, 5, "outbound", "Hello")])

    write(org_a, messages_upsert, [message(3, 5, "inbound", "Thanks")])

    stored = thread(org_a)
    assert (stored.message_count, stored.unanswered_since, stored.last_message_preview) == (3, None, "Thanks")


def test_a_message_written_then_edited_in_one_transaction_counts_once(org_a):
    """The insert-or-update flag comes from the row version: an edit in the same transaction as the insert
    (a reply and its webhook echo with other text) is an update, not a second message."""
    from django.db import transaction

    write(org_a, conversations_upsert, [conversation_row()])
    with bind_organization(org_a), transaction.atomic():
        first = messages_upsert(organization=org_a, rows=[message(1, 0, "inbound", "Hello")])
        edited = messages_upsert(organization=org_a, rows=[message(1, 0, "inbound", "Hello there")])

    assert (first.created, edited.created, edited.updated) == (1, 0, 1)
    assert (thread(org_a).message_count, thread(org_a).last_message_preview) == (1, "Hello there")


def test_a_page_of_new_messages_never_counts_or_scans_its_conversation(org_a):
    """Counters move by the rows written: counting a long thread over every monthly partition cost more than
    the write itself (580 new rows/s at 1M messages)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    write(org_a, conversations_upsert, [conversation_row()])
    write(org_a, messages_upsert, [message(1, 0, "inbound", "First")])
    with CaptureQueriesContext(connection) as queries:
        write(org_a, messages_upsert, [message(2, 5, "outbound", "Second"), message(3, 6, "inbound", "Third")])

    statements = " ".join(query["sql"] for query in queries.captured_queries)
    assert "count(" not in statements.lower()
    assert "FROM messages m WHERE m.conversation_id" not in statements
    stored = thread(org_a)
    assert (stored.message_count, stored.last_message_preview, stored.unanswered_since) == (
        3, "Third", T0 + timedelta(minutes=6))


def _concurrently(organization, first_rows, second_rows):
    """Two writers of one conversation: the first holds its transaction open until the second is blocked on
    it, then commits. Returns each writer's WriteCounts."""
    import threading

    from django.db import connection, transaction

    first_wrote, let_first_commit = threading.Event(), threading.Event()
    results, errors = {}, []

    def run(name, rows, before_commit=None):
        try:
            with bind_organization(organization), transaction.atomic():
                results[name] = messages_upsert(organization=organization, rows=rows)
                if before_commit:
                    before_commit()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))
        finally:
            connection.close()

    def hold():
        first_wrote.set()
        let_first_commit.wait(10)

    first = threading.Thread(target=run, args=("first", first_rows, hold))
    first.start()
    assert first_wrote.wait(10)
    second = threading.Thread(target=run, args=("second", second_rows))
    second.start()
    second.join(0.5)  # the second now waits on the first's uncommitted rows
    let_first_commit.set()
    first.join(10)
    second.join(10)
    assert errors == []
    return results["first"], results["second"]


@pytest.mark.django_db(transaction=True)
def test_two_writers_adding_messages_to_one_conversation_at_once_count_both(org_a):
    """A webhook and the sync writing different new messages of one conversation at the same moment: the
    second sees the first's committed counters and adds its own, so the count is 2 (a recount inside the
    second's statement saw only its own message, from before the first committed, and stored 1)."""
    write(org_a, conversations_upsert, [conversation_row()])

    _concurrently(org_a, [message(1, 0, "inbound", "From the webhook")], [message(2, 5, "inbound", "From the sync")])

    stored = thread(org_a)
    assert (stored.message_count, stored.last_message_at, stored.last_message_preview) == (
        2, T0 + timedelta(minutes=5), "From the sync")
    assert stored.unanswered_since == T0


@pytest.mark.django_db(transaction=True)
def test_two_writers_of_the_same_new_message_at_once_create_it_once(org_a):
    """The same new message written twice at once with different text (an edit racing its creation): one
    creates it, the other updates it, and the sync log's counts say so."""
    write(org_a, conversations_upsert, [conversation_row()])

    first, second = _concurrently(org_a, [message(1, 0, "inbound", "Hello")], [message(1, 0, "inbound", "Hello!")])

    assert (first.created + second.created, first.updated + second.updated) == (1, 1)
    stored = thread(org_a)
    assert (stored.message_count, stored.last_message_preview) == (1, "Hello!")


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
