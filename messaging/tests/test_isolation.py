"""Cross-clinic isolation of every messaging page and id, over HTTP with signed tokens, as the app role.

Clinic A gets the same 404 for clinic B's conversations, messages, matches and patients as for missing ones,
nothing of B's appears on A's pages, and nothing of B's changes when A posts at B's ids.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import Conversation, Message
from messaging.tests import factories
from patients.models import Contact, ContactMatchCandidate
from routiq.testing.clerk_fixtures import bearer
from tenants.models import AuditLog
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)
SECRET = "Zanzibar-only-in-clinic-B"


@pytest.fixture
def clinic_a(org_a):
    patient = factories.contact(org_a, "Ava", "Smith")
    thread = factories.conversation(org_a, patient)
    factories.message(org_a, thread, NOW, "hello from A")
    lead, twin = factories.contact(org_a, "Al", "Lead", patient=False), factories.contact(org_a, "Al", "Twin")
    factories.match_candidate(org_a, lead, twin)
    return {"patient": patient, "thread": thread}


def unused_id(organization, model) -> int:
    """An id above every row of ``model`` in ``organization``: each clinic's schema has its own sequences, so
    B's row 1 and A's row 1 are different rows, and an isolation test must aim at an id A does not have."""
    with bind_organization(organization):
        return (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000


@pytest.fixture
def clinic_b(org_a, org_b, clinic_a):
    """Clinic B: a patient with a conversation, a private note, an appointment, and a lead waiting on a match,
    under ids that clinic A does not have."""
    patient = factories.contact(org_b, "Bea", SECRET)
    thread = factories.conversation(org_b, patient, assignee_name=SECRET)
    first_id = unused_id(org_a, Message)
    message = factories.message(org_b, thread, NOW, f"hello {SECRET}", id=first_id)
    note = factories.message(org_b, thread, NOW + timedelta(seconds=1), f"note {SECRET}", private=True,
                             id=first_id + 1)
    factories.appointment(org_b, patient, NOW - timedelta(days=1))
    lead = factories.contact(org_b, "Lead", SECRET, patient=False, phone_e164="+61412000999", chatwoot_contact_id=5)
    twin = factories.contact(org_b, "Twin", SECRET, phone_e164="+61412000999")
    match = factories.match_candidate(org_b, lead, twin, id=unused_id(org_a, ContactMatchCandidate))
    factories.match_candidate(org_b, lead, patient)
    return {"patient": patient, "thread": thread, "message": message, "note": note, "match": match, "lead": lead}


def snapshot(organization) -> dict:
    with bind_organization(organization):
        return {
            "conversations": list(Conversation.objects.order_by("pk").values()),
            "messages": list(Message.objects.order_by("pk").values()),
            "contacts": list(Contact.objects.order_by("pk").values()),
            "candidates": list(ContactMatchCandidate.objects.order_by("pk").values()),
        }


@pytest.mark.parametrize("role", ["admin", "member"])
def test_every_page_of_another_clinics_ids_is_404_and_shows_nothing(client, mint, org_a, org_b, clinic_a, clinic_b,
                                                                   role):
    token = mint(org_a, role=role)
    b = clinic_b
    gets = [
        f"/conversations/{b['thread'].pk}/",
        f"/conversations/{b['thread'].pk}/?order=oldest",
        f"/conversations/messages/{b['message'].pk}/",
        f"/conversations/messages/{b['note'].pk}/",
        f"/patients/{b['patient'].pk}/",
        f"/patients/{b['patient'].pk}/?kind=messages",
        f"/patients/{b['lead'].pk}/",
    ]
    for path in gets:
        response = client.get(path, **bearer(token))
        assert (path, response.status_code) == (path, 404)
        assert SECRET.encode() not in response.content
    htmx = client.get(f"/patients/{b['patient'].pk}/", HTTP_HX_REQUEST="true", **bearer(token))
    assert htmx.status_code == 404 and SECRET.encode() not in htmx.content
    with bind_organization(org_a):
        assert not AuditLog.objects.filter(action__in=["conversation.viewed", "patient.viewed"]).exists()


def test_missing_ids_are_the_same_404(client, mint, org_a, clinic_a):
    token = mint(org_a)

    for path in (f"/conversations/{uuid.uuid4()}/", "/conversations/not-a-uuid/", "/conversations/messages/999999999/",
                 f"/patients/{uuid.uuid4()}/"):
        assert client.get(path, **bearer(token)).status_code == 404
    assert client.post("/conversations/matches/999999999/link/", **bearer(token)).status_code == 404
    assert client.post(f"/conversations/{uuid.uuid4()}/reply/", {"content": "x"}, **bearer(token)).status_code == 404


def test_posting_at_another_clinics_ids_is_404_and_changes_nothing(client, mint, org_a, org_b, clinic_a, clinic_b):
    token = mint(org_a, role="admin")
    before = snapshot(org_b)

    reply = client.post(f"/conversations/{clinic_b['thread'].pk}/reply/", {"content": "hijack"}, **bearer(token))
    link = client.post(f"/conversations/matches/{clinic_b['match'].pk}/link/", **bearer(token))

    assert reply.status_code == 404 and link.status_code == 404
    assert snapshot(org_b) == before


def test_lists_show_nothing_of_another_clinic(client, mint, org_a, org_b, clinic_a, clinic_b):
    token = mint(org_a, role="admin")

    responses = [
        client.get("/conversations/", **bearer(token)),
        client.get("/conversations/", {"contact": "lead"}, **bearer(token)),
        client.get("/conversations/", HTTP_HX_REQUEST="true", **bearer(token)),
        client.get("/conversations/matches/", **bearer(token)),
        client.get(f"/patients/{clinic_a['patient'].pk}/", **bearer(token)),
    ]

    for response in responses:
        assert response.status_code == 200
        assert SECRET.encode() not in response.content
        assert str(clinic_b["thread"].pk).encode() not in response.content
    assert str(clinic_a["thread"].pk).encode() in responses[0].content
    by_their_assignee = client.get("/conversations/", {"assignee": SECRET}, **bearer(token))
    assert by_their_assignee.context["page"].conversations == []


def test_another_clinics_cursor_restarts_at_the_first_page(client, mint, org_a, org_b, clinic_a, clinic_b,
                                                           monkeypatch):
    monkeypatch.setattr("messaging.selectors.PAGE_SIZE", 1)
    factories.message(org_b, factories.conversation(org_b, clinic_b["patient"]), NOW - timedelta(days=2))
    b_inbox = client.get("/conversations/", **bearer(mint(org_b)))
    b_cursor = b_inbox.context["page"].next_cursor

    response = client.get("/conversations/", {"after": b_cursor}, **bearer(mint(org_a)))

    assert b_cursor and response.status_code == 200
    assert response.context["page"].query.after == b_cursor
    assert [c.pk for c in response.context["page"].conversations] == [clinic_a["thread"].pk]


def test_unlinking_another_clinics_patient_is_404_and_changes_nothing(client, mint, org_a, org_b, clinic_a,
                                                                      clinic_b):
    with bind_organization(org_b):
        Contact.objects.filter(pk=clinic_b["patient"].pk).update(chatwoot_contact_id=444)
    before = snapshot(org_b)

    response = client.post(f"/conversations/matches/unlink/{clinic_b['patient'].pk}/", {"provider": "chatwoot"},
                           **bearer(mint(org_a, role="admin")))

    assert response.status_code == 404
    assert snapshot(org_b) == before


def test_searching_never_finds_another_clinics_messages(client, mint, org_a, org_b, clinic_a, clinic_b):
    token = mint(org_a)

    inbox = client.get("/conversations/", {"q": SECRET}, **bearer(token))
    timeline = client.get(f"/patients/{clinic_a['patient'].pk}/", {"q": SECRET}, **bearer(token))
    theirs = client.get("/conversations/", {"q": SECRET}, **bearer(mint(org_b)))

    assert inbox.context["page"].conversations == [] and timeline.context["hits"] == []
    assert str(clinic_b["thread"].pk).encode() not in inbox.content
    assert [c.pk for c in theirs.context["page"].conversations] == [clinic_b["thread"].pk]  # the word is there
