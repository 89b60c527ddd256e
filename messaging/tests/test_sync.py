"""The Chatwoot sync end to end, against a local server that speaks Chatwoot's API, as the app role."""

from __future__ import annotations

import pytest
from django.conf import settings

from messaging.chatwoot_records import message_row
from messaging.services import messages_upsert
from messaging.sync import chatwoot_client
from messaging.tests.chatwoot_helpers import (
    assert_database_equals_server,
    client_for,
    connect,
    conversations,
    messages,
    run,
    run_all,
)
from patients.models import Contact
from routiq.http import VendorUnavailable
from tenants.models import SyncCheckpoint, SyncLog, SyncStatus
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db


def test_first_sync_mirrors_contacts_conversations_and_messages(org_a, chatwoot, private_networks):
    chatwoot.seed(conversations=40, messages_per_conversation=(1, 6), seed=3)
    long_thread = chatwoot.add_conversation(chatwoot.add_contact("Long Thread", phone_number="+61412345678")["id"])
    for n in range(230):  # more than two pages of after= (100 each)
        chatwoot.add_message(long_thread["id"], f"message {n}", message_type="incoming" if n % 3 else "outgoing")

    logs = run_all(org_a, client_for(chatwoot))

    assert [log.status for log in logs] == [SyncStatus.SUCCEEDED] * 3
    assert logs[0].created_count == 41  # contacts: a lead each (no patients to match)
    assert logs[1].created_count == 41
    assert_database_equals_server(org_a, chatwoot)
    thread = conversations(org_a)[str(long_thread["id"])]
    assert thread.message_count == 230
    assert thread.last_message_preview == "message 229"
    with bind_organization(org_a):
        assert Contact.objects.filter(chatwoot_contact_id__isnull=False).count() == 41


def test_every_status_is_synced(org_a, chatwoot, private_networks):
    contact = chatwoot.add_contact("Stella Status", email="stella@example.com")
    for status in ("open", "pending", "resolved", "snoozed"):
        chatwoot.add_conversation(contact["id"], status=status)

    run(org_a, client_for(chatwoot), "conversations")

    assert sorted(c.status for c in conversations(org_a).values()) == ["open", "pending", "resolved", "snoozed"]
    assert {r.param("status") for r in chatwoot.requests if r.path.endswith("/conversations")} == {"all"}


def test_incremental_sync_reads_only_what_changed(org_a, chatwoot, private_networks):
    chatwoot.seed(conversations=60, messages_per_conversation=(2, 4), seed=5)
    client = client_for(chatwoot)
    run_all(org_a, client)
    with bind_organization(org_a):
        mark = SyncCheckpoint.objects.get(provider="chatwoot", stream="messages").high_water_mark
    overlap = {str(c["id"]) for c in chatwoot.all_conversations()
               if c["last_activity_at"] >= mark.timestamp() - settings.SYNC_OVERLAP_SECONDS}
    chatwoot.advance(minutes=30)
    changed = chatwoot.all_conversations()[10]
    chatwoot.add_message(changed["id"], "Can I come at 3 instead?")
    chatwoot.set_status(changed["id"], "open")
    chatwoot.reset_log()

    conversations_log = run(org_a, client, "conversations")
    messages_log = run(org_a, client, "messages")

    message_requests = {r.path.rsplit("/", 2)[-2]: r for r in chatwoot.requests if r.path.endswith("/messages")}
    # The changed conversation, and those whose activity falls in the overlap window before the mark.
    assert set(message_requests) == {str(changed["id"])} | overlap
    assert len(overlap) < 5
    newest_before = max(m["id"] for m in chatwoot.messages_of(changed["id"])[:-1])
    assert message_requests[str(changed["id"])].param("after") == str(newest_before)
    assert (messages_log.created_count, messages_log.updated_count) == (1, 0)
    assert conversations_log.fetched_count == 25  # the first page only: it reaches below the mark
    assert_database_equals_server(org_a, chatwoot)
    assert conversations(org_a)[str(changed["id"])].last_message_preview == "Can I come at 3 instead?"


def test_a_killed_sync_resumes_without_duplicates_or_loss(org_a, chatwoot, private_networks):
    chatwoot.seed(conversations=30, messages_per_conversation=(3, 5), seed=9)
    client = client_for(chatwoot)
    run(org_a, client, "contacts")
    run(org_a, client, "conversations")
    pages = []

    def break_after_five_pages(progress):
        pages.append(progress)
        if len(pages) == 5:
            chatwoot.queue_faults("status", 10, status=503)

    with pytest.raises(VendorUnavailable):
        run(org_a, client, "messages", on_page=break_after_five_pages)
    with bind_organization(org_a):
        failed = SyncLog.objects.get(resource="messages", status=SyncStatus.FAILED)
        assert SyncCheckpoint.objects.get(provider="chatwoot", stream="messages").cursor  # mid-walk
    assert "VendorUnavailable" in failed.error
    chatwoot.clear_faults()
    chatwoot.reset_log()

    resumed = run(org_a, client, "messages")

    assert_database_equals_server(org_a, chatwoot)
    assert resumed.created_count == resumed.fetched_count  # nothing fetched twice
    fetched_conversations = {r.path.rsplit("/", 2)[-2] for r in chatwoot.requests if r.path.endswith("/messages")}
    assert len(fetched_conversations) == 30 - 5  # resumed after the five committed conversations
    with bind_organization(org_a):
        checkpoint = SyncCheckpoint.objects.get(provider="chatwoot", stream="messages")
    assert checkpoint.cursor == "" and checkpoint.high_water_mark is not None


def test_rate_limits_are_waited_out(org_a, chatwoot, sleeps, private_networks):
    chatwoot.seed(conversations=3, seed=1)
    chatwoot.queue_faults("rate_limit", 2, seconds=7, path_contains="/messages")

    log = run(org_a, client_for(chatwoot, sleeps), "messages")

    assert log.status == SyncStatus.SUCCEEDED
    assert sleeps == [7.0, 7.0]  # Retry-After honoured, twice
    assert_database_equals_server(org_a, chatwoot)


def test_a_malformed_record_is_skipped_and_counted(org_a, chatwoot, private_networks):
    chatwoot.seed(conversations=2, messages_per_conversation=(3, 3), seed=2)
    bad = chatwoot.messages_of(1)[1]
    chatwoot.serve_raw("message", bad["id"], created_at="yesterday-ish")
    chatwoot.serve_raw("conversation", 2, status="archived-ish")

    conversations_log = run(org_a, client_for(chatwoot), "conversations")
    messages_log = run(org_a, client_for(chatwoot), "messages")

    assert (conversations_log.status, conversations_log.failed_count) == (SyncStatus.SUCCEEDED, 1)
    assert (messages_log.status, messages_log.failed_count) == (SyncStatus.SUCCEEDED, 1 + 3)  # + conversation 2's
    stored = messages(org_a)
    assert str(bad["id"]) not in stored
    assert {m["id"] for m in chatwoot.messages_of(1)} - {bad["id"]} == {int(i) for i in stored}


def test_private_notes_are_kept_and_marked_and_attachments_kept_as_metadata(org_a, chatwoot, private_networks):
    conversation = chatwoot.add_conversation(chatwoot.add_contact("Nora Note", phone_number="+61400111222")["id"])
    chatwoot.add_message(conversation["id"], "Here is my referral", attachments=[
        {"file_type": "image", "data_url": "https://files.example/referral%20letter.jpg"},
        {"file_type": "file", "data_url": "javascript:alert(1)"}])
    note = chatwoot.add_message(conversation["id"], "Check the referral first", message_type="outgoing",
                                private=True)
    chatwoot.add_message(conversation["id"], "Nora was resolved by Jess", message_type="activity")

    run(org_a, client_for(chatwoot), "messages")

    stored = messages(org_a)
    assert len(stored) == 2  # the activity message is not a message
    assert stored[str(note["id"])].private is True and stored[str(note["id"])].direction == "outbound"
    (with_files,) = [m for m in stored.values() if m.attachments]
    assert with_files.attachments == [
        {"type": "image", "name": "referral letter.jpg", "url": "https://files.example/referral%20letter.jpg"},
        {"type": "file", "name": "", "url": ""}]
    thread = conversations(org_a)[str(conversation["id"])]
    assert thread.last_message_preview == "Here is my referral"  # a private note is not the preview
    assert thread.unanswered_since == with_files.sent_at  # a private note does not answer the patient


def test_two_organizations_never_mix(org_a, org_b, chatwoot, chatwoot_b, private_networks):
    chatwoot.seed(conversations=5, seed=1)
    chatwoot_b.seed(conversations=4, seed=2)  # the same display ids and message ids, another account
    connect(org_a, chatwoot)
    connect(org_b, chatwoot_b)
    for organization in (org_a, org_b):
        with bind_organization(organization):
            client = chatwoot_client(organization)
        run_all(organization, client)

    assert_database_equals_server(org_a, chatwoot)
    assert_database_equals_server(org_b, chatwoot_b)
    assert all(r.headers["api_access_token"] == chatwoot.api_token for r in chatwoot.requests)
    assert all(r.headers["api_access_token"] == chatwoot_b.api_token for r in chatwoot_b.requests)
    with bind_organization(org_a):
        assert {c.organization_id for c in conversations(org_a).values()} == {org_a.pk}


def test_a_second_run_changes_nothing(org_a, chatwoot, private_networks):
    chatwoot.seed(conversations=8, seed=4)
    client = client_for(chatwoot)
    run_all(org_a, client)

    again = run_all(org_a, client, full=True)

    assert [(log.created_count, log.updated_count) for log in again[1:]] == [(0, 0), (0, 0)]
    assert_database_equals_server(org_a, chatwoot)


def test_a_message_that_came_by_webhook_does_not_hide_the_ones_before_it(org_a, chatwoot, private_networks):
    chatwoot.seed(conversations=3, seed=6)
    client = client_for(chatwoot)
    run(org_a, client, "messages")
    chatwoot.advance(hours=2)
    conversation = chatwoot.all_conversations()[0]
    missed = [chatwoot.add_message(conversation["id"], f"missed {n}") for n in range(2)]
    delivered = chatwoot.add_message(conversation["id"], "delivered by webhook")
    with bind_organization(org_a):  # the webhook path: the same mapping and upsert
        messages_upsert(organization=org_a, rows=[message_row(chatwoot.message_webhook_payload(delivered["id"]))])

    log = run(org_a, client, "messages")

    assert log.created_count == 2
    assert {str(m["id"]) for m in missed} <= set(messages(org_a))
    assert_database_equals_server(org_a, chatwoot)


def test_a_run_killed_inside_a_long_conversation_resumes_at_its_last_message(org_a, chatwoot, private_networks):
    thread = chatwoot.add_conversation(chatwoot.add_contact("Long Talker", phone_number="+61400999888")["id"])
    ids = [chatwoot.add_message(thread["id"], f"m{n}")["id"] for n in range(250)]
    client = client_for(chatwoot)

    def break_after_the_first_page(progress):
        chatwoot.queue_faults("status", 10, status=503)

    with pytest.raises(VendorUnavailable):
        run(org_a, client, "messages", on_page=break_after_the_first_page)
    assert len(messages(org_a)) == 100
    chatwoot.clear_faults()
    chatwoot.reset_log()

    resumed = run(org_a, client, "messages")

    assert [r.param("after") for r in chatwoot.requests if r.path.endswith("/messages")] == [
        str(ids[99]), str(ids[199])]
    assert (resumed.fetched_count, resumed.created_count) == (150, 150)
    assert sorted(int(i) for i in messages(org_a)) == ids
