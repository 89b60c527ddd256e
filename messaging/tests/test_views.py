"""Inbox, thread, timeline and match pages through real HTTP requests with real signed tokens, as the app role."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from messaging.models import Conversation
from messaging.tests import factories
from patients.models import Contact, ContactMatchCandidate
from routiq.testing.clerk_fixtures import bearer
from tenants.models import AuditLog
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)
THREAD_LINK = re.compile(r'<a href="/conversations/([0-9a-f-]{36})/">')


def thread_links(response) -> list[str]:
    return THREAD_LINK.findall(response.content.decode())


@pytest.fixture
def ava(org_a):
    return factories.contact(org_a, "Ava", "Smith", email="ava@example.com")


@pytest.fixture
def ava_thread(org_a, ava):
    thread = factories.conversation(org_a, ava, inbox_name="Front desk", assignee_name="Jo Agent")
    factories.message(org_a, thread, NOW - timedelta(minutes=3), "Can I move my booking?")
    factories.message(org_a, thread, NOW - timedelta(minutes=2), "Check her last invoice first", private=True,
                      direction="outbound", sender_name="Jo Agent")
    factories.message(org_a, thread, NOW - timedelta(minutes=1), "Here is the form", direction="outbound",
                      sender_name="Jo Agent",
                      attachments=[{"type": "file", "name": "intake.pdf", "url": "https://files.example/intake.pdf"},
                                   {"type": "file", "name": "evil.html", "url": "javascript:alert(1)"}])
    with bind_organization(org_a):
        thread.refresh_from_db()
    return thread


def test_inbox_lists_conversations_with_contact_status_and_last_message(client, mint, org_a, ava_thread):
    response = client.get("/conversations/", **bearer(mint(org_a, role="member")))

    body = response.content.decode()
    assert response.status_code == 200
    assert thread_links(response) == [str(ava_thread.pk)]
    assert "Ava Smith" in body and "Patient" in body and "Here is the form" in body and "WhatsApp" in body
    assert "Jo Agent" in body and "Open" in body


def test_inbox_pages_neither_repeat_nor_skip_over_http(client, mint, org_a, ava, monkeypatch):
    monkeypatch.setattr("messaging.selectors.PAGE_SIZE", 4)
    threads = [factories.conversation(org_a, ava) for _ in range(11)]
    for n, thread in enumerate(threads):
        factories.message(org_a, thread, NOW - timedelta(minutes=n // 2))
    token = mint(org_a)
    seen, params = [], {}
    while True:
        response = client.get("/conversations/", params, **bearer(token))
        seen += thread_links(response)
        if response.context["page"].next_cursor is None:
            break
        params = {"after": response.context["page"].next_cursor}

    assert len(seen) == 11 and len(set(seen)) == 11


def test_inbox_filters_over_http(client, mint, org_a, ava, ava_thread):
    lead = factories.contact(org_a, "Lee", "Prospect", patient=False)
    lead_thread = factories.conversation(org_a, lead, channel="Channel::Email", status="resolved")
    factories.message(org_a, lead_thread, NOW)
    token = mint(org_a)

    def listed(**params):
        return thread_links(client.get("/conversations/", params, **bearer(token)))

    assert listed(contact="lead") == [str(lead_thread.pk)]
    assert listed(contact="patient") == [str(ava_thread.pk)]
    assert listed(status="resolved", channel="Channel::Email") == [str(lead_thread.pk)]
    assert listed(status="open", channel="Channel::Email") == []


def test_the_inbox_refreshes_its_first_page_by_polling_the_results_fragment(client, mint, org_a, ava_thread):
    token = mint(org_a)
    page = client.get("/conversations/", {"status": "open"}, **bearer(token)).content.decode()
    fragment = client.get("/conversations/", {"status": "open"}, HTTP_HX_REQUEST="true", **bearer(token))

    assert 'hx-get="/conversations/?status=open" hx-trigger="every 15s"' in page
    assert b"<html" not in fragment.content and thread_links(fragment) == [str(ava_thread.pk)]
    assert b'hx-trigger="every 15s"' in fragment.content  # the swapped-in fragment keeps polling
    assert "<script>" not in page.replace('<script defer src="/static/js/htmx-2.0.4.min.js"></script>', "")


def test_the_nav_links_the_inbox(client, mint, org_a):
    response = client.get("/patients/", **bearer(mint(org_a, role="member")))

    assert b'<a href="/conversations/">Inbox</a>' in response.content


def test_thread_shows_messages_private_notes_marked_and_attachments_as_links(client, mint, org_a, ava_thread):
    response = client.get(f"/conversations/{ava_thread.pk}/", {"order": "oldest"}, **bearer(mint(org_a)))

    body = response.content.decode()
    assert response.status_code == 200
    assert body.index("Can I move my booking?") < body.index("Check her last invoice first") < body.index(
        "Here is the form")
    note = body[body.rindex("<li", 0, body.index("Check her last invoice first")):]
    assert note.startswith('<li id="message-') and "private" in note[:80] and "Private note" in note[:400]
    assert ('<a href="https://files.example/intake.pdf" rel="noopener noreferrer nofollow" target="_blank">'
            'intake.pdf</a>') in body
    assert "javascript:" not in body and "evil.html" in body
    assert "Front desk" in body and "Jo Agent" in body and "Open" in body


def test_viewing_a_thread_writes_exactly_one_audit_row(client, mint, org_a, ava_thread):
    client.get(f"/conversations/{ava_thread.pk}/", **bearer(mint(org_a, role="member")))

    with bind_organization(org_a):
        rows = AuditLog.objects.filter(action="conversation.viewed", object_id=str(ava_thread.pk))
        assert rows.count() == 1 and rows.get().object_type == "conversation"


def test_the_thread_pages_by_keyset(client, mint, org_a, ava, monkeypatch):
    monkeypatch.setattr("messaging.selectors.PAGE_SIZE", 5)
    thread = factories.conversation(org_a, ava)
    for n in range(12):
        factories.message(org_a, thread, NOW - timedelta(minutes=n // 4), content=f"note number {n:02}")
    token = mint(org_a)
    seen, params = [], {"order": "newest"}
    while True:
        response = client.get(f"/conversations/{thread.pk}/", params, **bearer(token))
        seen += re.findall(r"note number (\d\d)", response.content.decode())
        if response.context["page"].next_cursor is None:
            break
        params = {"order": "newest", "after": response.context["page"].next_cursor}

    assert sorted(seen) == [f"{n:02}" for n in range(12)] and len(seen) == 12


def test_a_message_link_opens_its_thread_at_that_message(client, mint, org_a, ava_thread):
    with bind_organization(org_a):
        first = ava_thread.messages.order_by("sent_at").first()
    token = mint(org_a)

    response = client.get(f"/conversations/messages/{first.pk}/", **bearer(token))
    thread = client.get(response["Location"], **bearer(token))

    assert response.status_code == 302 and response["Location"].startswith(f"/conversations/{ava_thread.pk}/?after=")
    assert response["Location"].endswith(f"#message-{first.pk}")
    assert [m.pk for m in thread.context["page"].messages] == [first.pk]


def test_the_reply_form_needs_a_csrf_token(mint, org_a, ava_thread):
    csrf_client = Client(enforce_csrf_checks=True)

    response = csrf_client.post(f"/conversations/{ava_thread.pk}/reply/", {"content": "hi"}, **bearer(mint(org_a)))

    assert response.status_code == 403
    with bind_organization(org_a):
        assert Conversation.objects.get(pk=ava_thread.pk).message_count == 3


def test_a_reply_to_a_manychat_thread_is_refused_with_a_message(client, mint, org_a, ava):
    thread = factories.conversation(org_a, ava, provider="manychat", channel="instagram")

    response = client.post(f"/conversations/{thread.pk}/reply/", {"content": "hi"}, follow=True,
                           **bearer(mint(org_a)))

    assert response.status_code == 200 and b"Only Chatwoot conversations can be answered here." in response.content
    with bind_organization(org_a):
        assert not thread.messages.exists()


def test_an_empty_reply_is_refused(client, mint, org_a, ava_thread):
    response = client.post(f"/conversations/{ava_thread.pk}/reply/", {"content": "   "}, follow=True,
                           **bearer(mint(org_a)))

    assert b"Write a message first" in response.content
    with bind_organization(org_a):
        assert ava_thread.messages.count() == 3


def test_the_thread_is_get_only_and_the_reply_post_only(client, mint, org_a, ava_thread):
    token = mint(org_a)

    assert client.post(f"/conversations/{ava_thread.pk}/", **bearer(token)).status_code == 405
    assert client.get(f"/conversations/{ava_thread.pk}/reply/", **bearer(token)).status_code == 405


# --- the patient's unified timeline ------------------------------------------------------------------

def test_patient_timeline_interleaves_appointments_and_messages(client, mint, org_a, ava, ava_thread):
    factories.appointment(org_a, ava, NOW + timedelta(days=2))
    factories.appointment(org_a, ava, NOW - timedelta(minutes=150))
    factories.appointment(org_a, ava, NOW - timedelta(days=3), cancelled_at=NOW - timedelta(days=4))
    factories.appointment(org_a, ava, NOW - timedelta(days=9), did_not_arrive=True)

    response = client.get(f"/patients/{ava.pk}/", **bearer(mint(org_a, role="member")))

    body = response.content.decode()
    timeline = body[body.index('id="timeline"'):]
    order = [timeline.index(text) for text in (">Booked<", "Here is the form", "Check her last invoice first",
                                               "Can I move my booking?", ">Attended<", ">Cancelled<", ">No-show<")]
    assert order == sorted(order)
    assert "Private note" in timeline and "WhatsApp" in timeline
    assert f'href="/conversations/{ava_thread.pk}/"' in timeline


def test_patient_timeline_kind_filter_and_infinite_scroll_fragment(client, mint, org_a, ava, ava_thread,
                                                                   monkeypatch):
    monkeypatch.setattr("messaging.selectors.PAGE_SIZE", 2)
    factories.appointment(org_a, ava, NOW - timedelta(days=1))
    factories.appointment(org_a, ava, NOW - timedelta(days=2))  # a third page
    token = mint(org_a)

    notes = client.get(f"/patients/{ava.pk}/", {"kind": "notes"}, **bearer(token)).content.decode()
    appointments = client.get(f"/patients/{ava.pk}/", {"kind": "appointments"}, **bearer(token)).content.decode()
    first = client.get(f"/patients/{ava.pk}/", **bearer(token))
    cursor = first.context["timeline"].next_cursor
    more = client.get(f"/patients/{ava.pk}/", {"after": cursor}, HTTP_HX_REQUEST="true", **bearer(token))

    assert "Check her last invoice first" in notes and "Can I move my booking?" not in notes
    assert "Attended" in appointments and "Here is the form" not in appointments
    assert b"Here is the form" in first.content and b"Can I move my booking?" not in first.content
    assert b"<html" not in more.content
    assert b"Can I move my booking?" in more.content and b"Here is the form" not in more.content
    assert b'hx-target="closest li"' in more.content  # the next "Older entries" item


def test_viewing_a_timeline_page_is_audited_once_per_request(client, mint, org_a, ava, ava_thread):
    client.get(f"/patients/{ava.pk}/", {"kind": "messages"}, **bearer(mint(org_a)))

    with bind_organization(org_a):
        assert AuditLog.objects.filter(action="patient.viewed", object_id=str(ava.pk)).count() == 1


def test_the_timeline_offers_a_reply_to_the_latest_conversation(client, mint, org_a, ava, ava_thread):
    response = client.get(f"/patients/{ava.pk}/", **bearer(mint(org_a, role="member")))

    body = response.content.decode()
    assert f'action="/conversations/{ava_thread.pk}/reply/"' in body
    assert '<input type="hidden" name="back" value="patient">' in body
    assert 'name="csrfmiddlewaretoken"' in body and 'name="private"' in body


# --- matches -----------------------------------------------------------------------------------------

@pytest.fixture
def waiting_lead(org_a):
    lead = factories.contact(org_a, "Sam", "Twin", patient=False, phone_e164="+61412000111", chatwoot_contact_id=77)
    one = factories.contact(org_a, "Sam", "Twin", phone_e164="+61412000111")
    two = factories.contact(org_a, "Samantha", "Twin", phone_e164="+61412000111")
    return lead, [factories.match_candidate(org_a, lead, one), factories.match_candidate(org_a, lead, two)]


def test_admins_see_leads_with_their_candidates(client, mint, org_a, waiting_lead):
    lead, candidates = waiting_lead

    response = client.get("/conversations/matches/", **bearer(mint(org_a, role="admin")))

    body = response.content.decode()
    assert response.status_code == 200
    for candidate in candidates:
        assert f'action="/conversations/matches/{candidate.pk}/link/"' in body
    assert "Samantha Twin" in body and "Same phone number" in body


def test_an_admin_picks_a_candidate_and_the_lead_is_linked(client, mint, org_a, waiting_lead):
    lead, candidates = waiting_lead
    thread = factories.conversation(org_a, lead)

    response = client.post(f"/conversations/matches/{candidates[1].pk}/link/", follow=True,
                           **bearer(mint(org_a, role="admin")))

    assert response.status_code == 200 and b"Linked to Samantha Twin" in response.content
    with bind_organization(org_a):
        patient = Contact.objects.get(pk=candidates[1].patient_id)
        assert patient.chatwoot_contact_id == 77
        assert Conversation.objects.get(pk=thread.pk).contact_id == patient.pk
        assert not ContactMatchCandidate.objects.filter(lead=lead).exists()
        assert AuditLog.objects.filter(organization=org_a).exclude(action__in=["session.started"]).filter(
            action__startswith="contact.").exists()


def test_members_get_403_on_matches(client, mint, org_a, waiting_lead):
    lead, candidates = waiting_lead
    token = mint(org_a, role="member")

    page = client.get("/conversations/matches/", **bearer(token))
    link = client.post(f"/conversations/matches/{candidates[0].pk}/link/", **bearer(token))

    assert page.status_code == 403 and link.status_code == 403
    with bind_organization(org_a):
        assert Contact.objects.get(pk=candidates[0].patient_id).chatwoot_contact_id is None


def test_members_do_not_see_the_matches_link(client, mint, org_a):
    member = client.get("/conversations/", **bearer(mint(org_a, role="member")))
    admin = client.get("/conversations/", **bearer(mint(org_a, role="admin", user_id="user_test_admin")))

    assert b"/conversations/matches/" not in member.content and b"/conversations/matches/" in admin.content


def test_an_admin_unlinks_a_wrongly_linked_contact_and_a_member_cannot(client, mint, org_a, ava, ava_thread):
    with bind_organization(org_a):
        Contact.objects.filter(pk=ava.pk).update(chatwoot_contact_id=321)
        Conversation.objects.filter(pk=ava_thread.pk).update(external_id="321")
    member = client.post(f"/conversations/matches/unlink/{ava.pk}/", {"provider": "chatwoot"},
                         **bearer(mint(org_a, role="member", user_id="user_test_member")))
    page = client.get(f"/patients/{ava.pk}/", **bearer(mint(org_a, role="admin")))

    response = client.post(f"/conversations/matches/unlink/{ava.pk}/", {"provider": "chatwoot"}, follow=True,
                           **bearer(mint(org_a, role="admin")))

    assert member.status_code == 403
    assert f'action="/conversations/matches/unlink/{ava.pk}/"'.encode() in page.content
    assert b"no longer linked to Ava Smith" in response.content
    with bind_organization(org_a):
        assert Contact.objects.get(pk=ava.pk).chatwoot_contact_id is None
        lead = Contact.objects.get(chatwoot_contact_id=321)
        assert lead.cliniko_patient_id is None
        assert Conversation.objects.get(pk=ava_thread.pk).contact_id == lead.pk
        assert AuditLog.objects.filter(action="contact.unlinked", object_id=str(ava.pk)).count() == 1


def test_members_do_not_see_the_unlink_button(client, mint, org_a, ava):
    with bind_organization(org_a):
        Contact.objects.filter(pk=ava.pk).update(chatwoot_contact_id=321)

    page = client.get(f"/patients/{ava.pk}/", **bearer(mint(org_a, role="member", user_id="user_test_member")))

    assert b"Chatwoot contact 321" in page.content and b"/unlink/" not in page.content


# --- replies through Chatwoot (a local server speaking its API) -----------------------------------------

@pytest.fixture
def chatwoot_thread(org_a, chatwoot, private_networks):
    """A Chatwoot conversation synced into clinic A, with Chatwoot connected."""
    from messaging.tests.chatwoot_helpers import client_for, connect, conversations, run

    connect(org_a, chatwoot)
    contact = chatwoot.add_contact("Reply Person", phone_number="+61400222333")
    remote = chatwoot.add_conversation(contact["id"])
    chatwoot.add_message(remote["id"], "Can I book for Friday?")
    run(org_a, client_for(chatwoot), "messages")
    return conversations(org_a)[str(remote["id"])]


def chatwoot_posts(stub):
    return [request for request in stub.requests if request.method == "POST"]


def test_a_member_replies_and_the_message_is_sent_once_and_shown(client, mint, org_a, chatwoot, chatwoot_thread):
    token = mint(org_a, role="member", user_id="user_test_member")

    response = client.post(f"/conversations/{chatwoot_thread.pk}/reply/", {"content": "Friday 9:30 is yours."},
                           **bearer(token))
    thread = client.get(response["Location"], **bearer(token))

    assert response.status_code == 302 and response["Location"] == f"/conversations/{chatwoot_thread.pk}/"
    assert len(chatwoot_posts(chatwoot)) == 1
    body = thread.content.decode()
    assert "Reply sent." in body and body.count("Friday 9:30 is yours.") == 1
    with bind_organization(org_a):
        sent = chatwoot_thread.messages.get(content="Friday 9:30 is yours.")
        assert (sent.direction, sent.private) == ("outbound", False)
        assert AuditLog.objects.filter(action="message.sent", object_id=str(chatwoot_thread.pk)).count() == 1


def test_the_webhook_echo_of_a_reply_adds_no_second_message(client, mint, org_a, chatwoot, chatwoot_thread):
    from messaging.chatwoot_records import message_row
    from messaging.services import messages_upsert

    client.post(f"/conversations/{chatwoot_thread.pk}/reply/", {"content": "See you then"}, **bearer(mint(org_a)))
    with bind_organization(org_a):
        sent = chatwoot_thread.messages.get(content="See you then")
        messages_upsert(organization=org_a,
                        rows=[message_row(chatwoot.message_webhook_payload(int(sent.external_id)))])

    thread = client.get(f"/conversations/{chatwoot_thread.pk}/", **bearer(mint(org_a)))

    assert thread.content.decode().count("See you then") == 1
    assert len(thread.context["page"].messages) == 2


def test_a_private_note_is_sent_as_one_and_marked(client, mint, org_a, chatwoot, chatwoot_thread):
    client.post(f"/conversations/{chatwoot_thread.pk}/reply/", {"content": "Prefers mornings", "private": "1"},
                **bearer(mint(org_a)))
    thread = client.get(f"/conversations/{chatwoot_thread.pk}/", **bearer(mint(org_a)))

    import json
    assert json.loads(chatwoot_posts(chatwoot)[0].body)["private"] is True
    body = thread.content.decode()
    assert "Private note added." in body
    note = body[body.rindex("<li", 0, body.index("Prefers mornings")):]
    assert "private" in note[:80] and "Private note" in note[:400]


def test_a_reply_from_the_patient_timeline_comes_back_to_it(client, mint, org_a, chatwoot, chatwoot_thread):
    with bind_organization(org_a):  # Reply Person is a lead; make them a patient so the timeline exists
        Contact.objects.filter(pk=chatwoot_thread.contact_id).update(cliniko_patient_id=99001)

    response = client.post(f"/conversations/{chatwoot_thread.pk}/reply/", {"content": "Booked!", "back": "patient"},
                           **bearer(mint(org_a)))
    timeline = client.get(response["Location"], **bearer(mint(org_a)))

    assert response["Location"] == f"/patients/{chatwoot_thread.contact_id}/#timeline"
    assert b"Reply sent." in timeline.content and b"Booked!" in timeline.content


@pytest.mark.parametrize(("status", "says"), [
    (503, b"Chatwoot did not confirm the message (vendor unavailable (HTTP 503)). It may still arrive"),
    (422, b"Chatwoot did not take the message"),
])
def test_a_reply_chatwoot_refuses_records_nothing_and_says_so(client, mint, org_a, chatwoot, chatwoot_thread, status,
                                                             says):
    chatwoot.queue_faults("status", 3, status=status, path_contains="/messages")

    response = client.post(f"/conversations/{chatwoot_thread.pk}/reply/", {"content": "Hello?"}, follow=True,
                           **bearer(mint(org_a)))

    assert response.status_code == 200
    assert says in response.content
    assert len(chatwoot_posts(chatwoot)) == 1  # never sent twice
    with bind_organization(org_a):
        assert not chatwoot_thread.messages.filter(content="Hello?").exists()


def test_a_reply_without_a_chatwoot_connection_says_so(client, mint, org_a, ava_thread):
    response = client.post(f"/conversations/{ava_thread.pk}/reply/", {"content": "hi"}, follow=True,
                           **bearer(mint(org_a)))

    assert b"Chatwoot is not connected for this clinic." in response.content
    with bind_organization(org_a):
        assert ava_thread.messages.count() == 3


# --- message search (messaging.search: full text in the organization's language, highlighted) -----------

@pytest.fixture
def searchable(org_a, ava, ava_thread):
    other = factories.contact(org_a, "Olly", "Other")
    other_thread = factories.conversation(org_a, other, status="resolved")
    factories.message(org_a, other_thread, NOW - timedelta(hours=1),
                      "Where is my invoice & receipt <script>alert(1)</script>?")
    factories.message(org_a, other_thread, NOW - timedelta(hours=2), "Nothing to see")
    return other_thread


def test_inbox_search_lists_the_conversations_of_matching_messages_with_highlights(client, mint, org_a, ava_thread,
                                                                                  searchable):
    response = client.get("/conversations/", {"q": "invoice"}, **bearer(mint(org_a)))

    body = response.content.decode()
    assert thread_links(response) == [str(ava_thread.pk), str(searchable.pk)]  # newest hit first
    assert "<mark>invoice</mark>" in body
    assert "<script>alert" not in body and "<mark>invoice</mark> &amp; receipt" in body  # escaped, then marked
    assert re.search(r'href="/conversations/messages/\d+/"', body)
    assert 'hx-trigger="every 15s"' not in body  # a search result does not reshuffle under the reader


def test_inbox_search_obeys_the_other_filters(client, mint, org_a, ava_thread, searchable):
    response = client.get("/conversations/", {"q": "invoice", "status": "resolved"}, **bearer(mint(org_a)))

    assert thread_links(response) == [str(searchable.pk)]


def test_inbox_search_with_no_match_says_so(client, mint, org_a, ava_thread, searchable):
    response = client.get("/conversations/", {"q": "zebra"}, **bearer(mint(org_a)))

    assert thread_links(response) == [] and b"No conversations match." in response.content


def test_timeline_search_finds_only_this_patients_messages(client, mint, org_a, ava, ava_thread, searchable):
    response = client.get(f"/patients/{ava.pk}/", {"q": "invoice"}, **bearer(mint(org_a)))

    body = response.content.decode()
    hits = body[body.index("Messages matching"):body.index('<ol class="timeline">')]
    assert "<mark>invoice</mark>" in hits and "Check her last" in hits
    assert "Where is my" not in hits and "alert" not in hits


def test_a_capped_search_says_more_may_match(client, mint, org_a, ava_thread, searchable, monkeypatch):
    monkeypatch.setattr("messaging.selectors.SEARCH_LIMIT", 1)

    response = client.get("/conversations/", {"q": "invoice"}, **bearer(mint(org_a)))

    assert thread_links(response) == [str(ava_thread.pk)]
    assert b"showing the conversations of the newest matches only" in response.content


def test_leads_are_marked_and_filterable_in_the_patient_list(client, mint, org_a, ava):
    factories.contact(org_a, "Lena", "Lead", patient=False)
    token = mint(org_a)

    everyone = client.get("/patients/", **bearer(token)).content.decode()
    leads = client.get("/patients/", {"status": "leads"}, **bearer(token)).content.decode()

    assert "Lead, Lena" in everyone and '<span class="badge warn">Lead</span>' in everyone
    assert "Lead, Lena" in leads and "Smith, Ava" not in leads


def test_a_thread_links_its_patient_or_lead(client, mint, org_a, ava, ava_thread):
    lead = factories.contact(org_a, "Lena", "Lead", patient=False)
    lead_thread = factories.conversation(org_a, lead)
    token = mint(org_a)

    patient_page = client.get(f"/conversations/{ava_thread.pk}/", **bearer(token)).content.decode()
    lead_page = client.get(f"/conversations/{lead_thread.pk}/", **bearer(token)).content.decode()

    assert f'<a href="/patients/{ava.pk}/">Patient record and timeline</a>' in patient_page
    assert "Lead, not matched to a patient" in lead_page and f'href="/patients/{lead.pk}/"' in lead_page
    assert 'href="/conversations/matches/"' in lead_page  # an admin's way to resolve it
