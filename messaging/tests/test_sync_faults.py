"""The Chatwoot sync under drawn fault schedules, and a worker SIGKILLed mid-page (routiq/testing/sync_faults.py).

Every example: a stand-in Chatwoot account with two pages of contacts and of conversations and a few messages
in each; a schedule of faults on its requests; maybe a conversation that gains a message or is resolved while
the runs page past it, or a contact added meanwhile; maybe a poison conversation or message. Contacts, then
conversations, then messages are synced, each run again after a failure as RQ would, until it succeeds. Then
the database must equal the stand-in's data: every contact, conversation (status, contact) and message once,
the poison record (and a poison conversation's messages) absent and counted as skipped, every run in
sync_logs. A conversation that changed during the runs may lag until the next runs (incremental runs stop at
the last run's mark); the next runs, with no faults, must leave everything exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.sync import RESOURCES
from messaging.tests.chatwoot_helpers import (
    TOKEN_A,
    Skipped,
    assert_contacts_equal_server,
    assert_database_equals_server,
    client_for,
    connect,
    messages,
    run,
    run_all,
)
from routiq.testing.chatwoot_stub import ChatwootStub
from routiq.testing.sync_faults import (
    CLIENT_TIMEOUT,
    FAULT_SETTINGS,
    arm,
    assert_every_attempt_logged,
    kill_mid_page,
    log_ids,
    rolled_back,
    run_until_success,
    schedules,
)
from tenants.models import SyncLog, SyncStatus
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
PATHS = ("", "/contacts", "/conversations", "/messages", "/inboxes")
CONVERSATIONS = 27  # two pages of 25; as many contacts, two pages of 15


@dataclass(frozen=True)
class Change:
    kind: str  # "message" (activity: the conversation jumps to the top), "resolve" or "contact"
    conversation: int  # display id
    after_page: int  # lands after this many written pages, counted over every run


CHANGES = st.none() | st.builds(Change, kind=st.sampled_from(("message", "resolve", "contact")),
                                conversation=st.integers(1, CONVERSATIONS), after_page=st.integers(1, 12))
POISONS = st.none() | st.builds(lambda kind, n: (kind, n), st.sampled_from(("conversation", "message")),
                                st.integers(1, CONVERSATIONS))


def apply(change: Change, stub: ChatwootStub) -> None:
    stub.advance(minutes=1)
    if change.kind == "message":
        stub.add_message(change.conversation, "Can I come in earlier?")
    elif change.kind == "resolve":  # Chatwoot notes the resolution in the thread, which is activity
        stub.set_status(change.conversation, "resolved")
        stub.add_message(change.conversation, "Conversation was marked resolved by Jess", message_type="activity")
    else:
        stub.add_contact("Late Arrival", phone_number="+61400000999")


def poison(stub: ChatwootStub, kind: str, display_id: int) -> Skipped:
    """Serve one record the mapping cannot store; what must be absent (a conversation's messages too: a
    message is stored with its conversation)."""
    if kind == "conversation":
        stub.serve_raw("conversation", display_id, status="archived-ish")
        return Skipped(conversations=frozenset({str(display_id)}),
                       messages=frozenset(str(m["id"]) for m in stub.messages_of(display_id)))
    message = stub.messages_of(display_id)[0]
    stub.serve_raw("message", message["id"], created_at="yesterday-ish")
    return Skipped(messages=frozenset({str(message["id"])}))


@settings(FAULT_SETTINGS, max_examples=25)  # three resources a run, one page per conversation: the dearer vendor
@given(schedule=schedules(PATHS, requests=30), change=CHANGES, poisoned=POISONS)
def test_any_fault_schedule_ends_with_the_database_equal_to_chatwoot(org_a, private_networks, schedule, change,
                                                                      poisoned):
    with ChatwootStub(api_token=TOKEN_A, account_id=7) as stub, rolled_back():
        stub.seed(conversations=CONVERSATIONS, messages_per_conversation=(1, 4), seed=31)
        skipped = poison(stub, *poisoned) if poisoned is not None else Skipped()
        on_page = arm(stub, schedule, change=(lambda: apply(change, stub)) if change else None,
                      after_page=change.after_page if change else 0)
        client = client_for(stub, timeout=CLIENT_TIMEOUT)
        logs = []
        for resource in RESOURCES:
            before = log_ids(org_a, "chatwoot")
            attempts = run_until_success(lambda resource=resource: run(org_a, client, resource, on_page=on_page),
                                         attempts=len(schedule) + 2)
            logs += assert_every_attempt_logged(org_a, provider="chatwoot", resource=resource, attempts=attempts,
                                                before=before)

        lagging = frozenset({str(change.conversation)}) if change is not None else frozenset()
        assert_database_equals_server(org_a, stub, skipped=skipped, lagging=lagging)
        if poisoned is not None:
            assert sum(log.failed_count for log in logs) >= 1
        else:
            assert all(log.failed_count == 0 for log in logs)

        if change is not None:  # the next scheduled runs, with no faults, settle what changed during these
            stub.clear_faults()
            assert [log.status for log in run_all(org_a, client)] == [SyncStatus.SUCCEEDED] * 3
            assert_database_equals_server(org_a, stub, skipped=skipped)
        assert_contacts_equal_server(org_a, stub)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_page_resumes_exactly_and_its_lock_does_not_block_the_next_run(org_a, chatwoot,
                                                                                            private_networks):
    chatwoot.seed(conversations=CONVERSATIONS, messages_per_conversation=(2, 4), seed=32)
    connect(org_a, chatwoot)
    client = client_for(chatwoot)
    run(org_a, client, "contacts")
    run(org_a, client, "conversations")

    # inboxes, the first conversations page, then one messages request per conversation: three conversations
    # written, the fourth's messages held by the stand-in, and the worker dies waiting for them.
    kill_mid_page("messaging.jobs.sync_chatwoot", str(org_a.pk), "messages", stub=chatwoot, held_request=5)

    with bind_organization(org_a):
        killed = SyncLog.objects.get(provider="chatwoot", resource="messages")
    assert (killed.status, killed.finished_at) == (SyncStatus.RUNNING, None)
    assert killed.fetched_count == len(messages(org_a)) > 0
    chatwoot.reset_log()

    resumed = run(org_a, client, "messages")

    assert resumed.status == SyncStatus.SUCCEEDED
    assert resumed.created_count == resumed.fetched_count  # nothing fetched twice
    fetched = {r.path.rsplit("/", 2)[-2] for r in chatwoot.requests if r.path.endswith("/messages")}
    assert len(fetched) == CONVERSATIONS - 3  # resumed after the three committed conversations
    assert_database_equals_server(org_a, chatwoot)
    with bind_organization(org_a):
        killed.refresh_from_db()
    assert killed.status == SyncStatus.FAILED and killed.error.startswith("interrupted")
