"""Messaging selectors as the app role: keyset pages neither repeat nor skip, filters, the interleaved timeline."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone

from messaging import selectors
from messaging.selectors import InboxQuery
from messaging.tests import factories
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


def all_inbox_pages(organization, query: InboxQuery) -> list:
    seen, query = [], replace(query, limit=7)
    with bind_organization(organization):
        while True:
            page = selectors.inbox_page(organization=organization, query=query)
            seen += page.conversations
            if page.next_cursor is None:
                return seen
            query = replace(query, after=page.next_cursor)


def test_inbox_pages_by_last_message_without_repeating_or_skipping(org_a):
    patient = factories.contact(org_a)
    threads = []
    for n in range(30):  # many share one time: ties are broken by id
        thread = factories.conversation(org_a, patient)
        factories.message(org_a, thread, NOW - timedelta(minutes=n % 4))
        threads.append(thread)
    silent = [factories.conversation(org_a, patient) for _ in range(4)]  # no message yet: listed last

    seen = all_inbox_pages(org_a, InboxQuery())

    assert [row.pk for row in seen[:30]] == [
        row.pk for row in sorted(threads, key=lambda t: (t.last_message_at, t.pk), reverse=True)]
    assert sorted(row.pk for row in seen[30:]) == sorted(row.pk for row in silent)
    assert len({row.pk for row in seen}) == 34


def test_inbox_filters(org_a):
    patient, lead = factories.contact(org_a, "Pat", "Ient"), factories.contact(org_a, "Lee", "Ad", patient=False)
    whatsapp = factories.conversation(org_a, patient, status="open", assignee_name="Jo Agent",
                                      unanswered_since=NOW)
    email = factories.conversation(org_a, lead, channel="Channel::Email", status="resolved")
    nobody = factories.conversation(org_a, None, channel="instagram", provider="manychat", status="pending")
    for thread in (whatsapp, email, nobody):
        factories.message(org_a, thread, NOW)

    def ids(**filters):
        return {row.pk for row in all_inbox_pages(org_a, InboxQuery(**filters))}

    assert ids() == {whatsapp.pk, email.pk, nobody.pk}
    assert ids(status="resolved") == {email.pk}
    assert ids(channel="Channel::Email") == {email.pk}
    assert ids(contact_kind="patient") == {whatsapp.pk}
    assert ids(contact_kind="lead") == {email.pk, nobody.pk}
    assert ids(unanswered=True) == {whatsapp.pk}
    assert ids(assignee="jo agent") == {whatsapp.pk}
    assert ids(assignee="Someone Else") == set()


def test_inbox_query_from_params_falls_back_to_any():
    query = InboxQuery.from_params({"status": "bogus", "contact": "robot", "unanswered": "1", "q": "  hi\x00 "})

    assert (query.status, query.contact_kind, query.unanswered, query.search) == ("", "", True, "hi")


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_thread_pages_neither_repeat_nor_skip(org_a, order):
    thread = factories.conversation(org_a, factories.contact(org_a))
    sent = [factories.message(org_a, thread, NOW - timedelta(minutes=n // 3), content=f"m{n}") for n in range(25)]
    seen, after = [], None
    with bind_organization(org_a):
        while True:
            page = selectors.thread_messages(organization=org_a, conversation=thread, order=order, after=after,
                                             limit=4)
            seen += page.messages
            if page.next_cursor is None:
                break
            after = page.next_cursor

    expected = sorted(sent, key=lambda m: (m.sent_at, m.pk), reverse=order == "newest")
    assert [m.pk for m in seen] == [m.pk for m in expected]


def test_a_thread_cursor_from_another_conversation_restarts_at_the_first_page(org_a):
    patient = factories.contact(org_a)
    one, two = factories.conversation(org_a, patient), factories.conversation(org_a, patient)
    for n in range(3):
        factories.message(org_a, one, NOW - timedelta(minutes=n))
        factories.message(org_a, two, NOW - timedelta(minutes=n))
    with bind_organization(org_a):
        cursor = selectors.thread_messages(organization=org_a, conversation=one, limit=1).next_cursor
        page = selectors.thread_messages(organization=org_a, conversation=two, after=cursor, limit=1)

    assert page.after is None and page.messages[0].sent_at == NOW


def test_a_message_link_cursor_starts_its_page_with_that_message(org_a):
    thread = factories.conversation(org_a, factories.contact(org_a))
    sent = [factories.message(org_a, thread, NOW - timedelta(minutes=n)) for n in range(10)]
    with bind_organization(org_a):
        cursor = selectors.thread_cursor_at(organization=org_a, message=sent[6])
        page = selectors.thread_messages(organization=org_a, conversation=thread, after=cursor, limit=2)

    assert [m.pk for m in page.messages] == [sent[6].pk, sent[7].pk]


def timeline_keys(organization, contact, kind, limit=3):
    seen, after = [], None
    with bind_organization(organization):
        while True:
            page = selectors.timeline_page(organization=organization, contact=contact, kind=kind, after=after,
                                           limit=limit, now=NOW)
            seen += [(entry.kind, entry.id) for entry in page.entries]
            if page.next_cursor is None:
                return seen
            after = page.next_cursor


@pytest.mark.parametrize("union_cap", [100, 1], ids=["union-per-conversation", "lateral-for-many-conversations"])
def test_timeline_interleaves_appointments_and_messages_newest_first_across_pages(org_a, union_cap, monkeypatch):
    monkeypatch.setattr("messaging.selectors.MAX_UNION_CONVERSATIONS", union_cap)
    patient = factories.contact(org_a)
    whatsapp, web = factories.conversation(org_a, patient), factories.conversation(org_a, patient,
                                                                                 channel="Channel::WebWidget")
    rows = []
    for n in range(8):  # the same instant in both tables: the kind, then the id, decide
        at = NOW - timedelta(hours=n // 2)
        rows.append(("appointment", factories.appointment(org_a, patient, at).pk, at))
        rows.append(("message", factories.message(org_a, whatsapp if n % 2 else web, at).pk, at))
    rows.append(("message", factories.message(org_a, web, NOW - timedelta(days=3), private=True).pk,
                 NOW - timedelta(days=3)))
    other = factories.contact(org_a, "Other", "Person")
    factories.appointment(org_a, other, NOW)
    factories.message(org_a, factories.conversation(org_a, other), NOW)

    seen = timeline_keys(org_a, patient, "all")

    expected = [(kind, pk) for kind, pk, _ in sorted(rows, key=lambda r: (r[2], r[0], r[1]), reverse=True)]
    assert seen == expected


@pytest.mark.parametrize("union_cap", [100, 0], ids=["union-per-conversation", "lateral-for-many-conversations"])
def test_timeline_kind_filter(org_a, union_cap, monkeypatch):
    monkeypatch.setattr("messaging.selectors.MAX_UNION_CONVERSATIONS", union_cap)
    patient = factories.contact(org_a)
    thread = factories.conversation(org_a, patient)
    booked = factories.appointment(org_a, patient, NOW + timedelta(days=2))
    said = factories.message(org_a, thread, NOW - timedelta(hours=1))
    noted = factories.message(org_a, thread, NOW - timedelta(hours=2), private=True, direction="outbound")

    assert timeline_keys(org_a, patient, "appointments") == [("appointment", booked.pk)]
    assert timeline_keys(org_a, patient, "messages") == [("message", said.pk)]
    assert timeline_keys(org_a, patient, "notes") == [("message", noted.pk)]
    assert timeline_keys(org_a, patient, "bogus") == [("appointment", booked.pk), ("message", said.pk),
                                                      ("message", noted.pk)]


def test_timeline_appointment_statuses(org_a):
    patient = factories.contact(org_a)
    factories.appointment(org_a, patient, NOW + timedelta(days=1))
    factories.appointment(org_a, patient, NOW - timedelta(days=1))
    factories.appointment(org_a, patient, NOW - timedelta(days=2), cancelled_at=NOW - timedelta(days=5))
    factories.appointment(org_a, patient, NOW - timedelta(days=3), did_not_arrive=True)
    factories.appointment(org_a, patient, NOW - timedelta(days=4), deleted_at=NOW)
    with bind_organization(org_a):
        page = selectors.timeline_page(organization=org_a, contact=patient, now=NOW)

    assert [entry.appointment_status for entry in page.entries] == ["booked", "attended", "cancelled", "no-show"]


def test_missing_and_other_clinics_rows_are_the_same_404(org_a, org_b):
    theirs = factories.conversation(org_b, factories.contact(org_b))
    their_message = factories.message(org_b, theirs, NOW)
    their_match = factories.match_candidate(org_b, factories.contact(org_b, patient=False), factories.contact(org_b))
    with bind_organization(org_a):
        for call in (
            lambda: selectors.conversation_get(organization=org_a, conversation_id=theirs.pk),
            lambda: selectors.message_get(organization=org_a, message_id=their_message.pk),
            lambda: selectors.match_candidate_get(organization=org_a, candidate_id=their_match.pk),
        ):
            with pytest.raises(Http404):
                call()
