"""Patient pages through real HTTP requests with real signed tokens, as the app role."""

from __future__ import annotations

import csv
import html
import io
import itertools
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from patients.models import Appointment, Contact
from patients.services import active_patients_refresh
from routiq.testing.clerk_fixtures import bearer
from tenants.models import AuditLog
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
APPOINTMENT_IDS = itertools.count(1)
PATIENT_LINK = re.compile(r'<a href="/patients/[0-9a-f-]{36}/">([^<]+)</a>')


def make_contacts(organization, specs):
    with bind_organization(organization):
        contacts = [
            Contact.objects.create(organization=organization, first_name=first, last_name=last, email=email,
                                   phone_raw=phone, phone_e164=e164)
            for first, last, email, phone, e164 in specs
        ]
        active_patients_refresh(organization=organization)
    return contacts


@pytest.fixture
def clinic_a(org_a):
    return make_contacts(org_a, [
        ("Ava", "Smith", "ava.smith@example.com", "0412 345 678", "+61412345678"),
        ("Ben", "Smithers", "ben@example.com", "0499 000 111", "+61499000111"),
        ("Cleo", "Ng", "cleo.ng@mail.example", "0422 555 678", "+61422555678"),
        ("Zoë", "Ó Briain", "zoe@example.com", "", None),
        ("Dan", "Intl", "dan@example.com", "+61 433 222 111", "+61433222111"),
    ])


@pytest.fixture
def clinic_b(org_b):
    return make_contacts(org_b, [("Sam", "Smith", "sam.smith@example.com", "0412 345 999", "+61412345999")])


def names(response) -> list[str]:
    return [html.unescape(name) for name in PATIENT_LINK.findall(response.content.decode())]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("smi", ["Smith, Ava", "Smithers, Ben"]),
        ("SMITH ava", ["Smith, Ava"]),
        ("cleo.ng", ["Ng, Cleo"]),
        ("mail", ["Ng, Cleo"]),
        ("0412", ["Smith, Ava"]),
        ("+61 412", ["Smith, Ava"]),
        ("5678", ["Ng, Cleo", "Smith, Ava"]),
        ("zoë", ["Ó Briain, Zoë"]),
        ("0433 222", ["Intl, Dan"]),  # typed nationally, stored internationally
        ("2111", ["Intl, Dan"]),
        ("nobody", []),
    ],
)
def test_search_by_name_email_and_phone_digits(client, mint, org_a, clinic_a, clinic_b, query, expected):
    response = client.get("/patients/", {"q": query}, **bearer(mint(org_a)))

    assert response.status_code == 200
    assert names(response) == expected


@pytest.mark.parametrize("sort", ["name", "last_seen", "recent"])
def test_list_pages_by_keyset_without_repeating_or_skipping(client, mint, org_a, sort):
    contacts = make_contacts(org_a, [(f"P{n:03}", f"Family{n % 7}", f"p{n}@example.com", "", None)
                                     for n in range(120)])
    seen_at = timezone.now() - timedelta(days=2)
    with bind_organization(org_a):  # many share one last-seen time: ties are broken by id
        Appointment.objects.bulk_create(
            Appointment(organization=org_a, contact=contact, starts_at=seen_at - timedelta(days=n % 9),
                        cliniko_appointment_id=next(APPOINTMENT_IDS))
            for n, contact in enumerate(contacts[:90])
        )
        active_patients_refresh(organization=org_a)
    token = mint(org_a)
    seen, params = [], {"sort": sort}
    while True:
        response = client.get("/patients/", params, **bearer(token))
        seen += names(response)
        cursor = response.context["page"].next_cursor
        if cursor is None:
            break
        params = {"sort": sort, "after": cursor}

    assert len(seen) == 120 and len(set(seen)) == 120
    if sort == "name":
        assert seen == sorted(seen, key=lambda name: (name.split(", ")[0], name.split(", ")[1]))


def test_a_tampered_cursor_falls_back_to_the_first_page(client, mint, org_a, clinic_a):
    response = client.get("/patients/", {"after": "not-base64!!"}, **bearer(mint(org_a)))

    assert response.status_code == 200
    assert names(response)[0] == "Intl, Dan"


def book(organization, contact, starts_at, **fields):
    with bind_organization(organization):
        Appointment.objects.create(organization=organization, contact=contact, starts_at=starts_at,
                                   cliniko_appointment_id=next(APPOINTMENT_IDS), **fields)
        active_patients_refresh(organization=organization)


def test_filters_archived_and_inactive(client, mint, org_a, clinic_a):
    ava, ben = clinic_a[0], clinic_a[1]
    book(org_a, ava, timezone.now() + timedelta(days=7))  # Ava is active: she is booked
    book(org_a, ben, timezone.now() - timedelta(days=400))  # Ben was seen, long ago: inactive
    with bind_organization(org_a):
        Contact.objects.filter(last_name="Ng").update(archived_at="2025-01-01T00:00:00Z")
    token = mint(org_a)

    archived = client.get("/patients/", {"status": "archived"}, **bearer(token))
    current = client.get("/patients/", {"status": "current"}, **bearer(token))
    active = client.get("/patients/", {"status": "active"}, **bearer(token))
    inactive = client.get("/patients/", {"status": "inactive"}, **bearer(token))

    assert names(archived) == ["Ng, Cleo"]
    assert names(current) == ["Intl, Dan", "Smith, Ava", "Smithers, Ben", "Ó Briain, Zoë"]
    assert names(active) == ["Smith, Ava"]
    assert names(inactive) == ["Intl, Dan", "Smithers, Ben", "Ó Briain, Zoë"]


def test_filters_no_upcoming_and_not_seen_for_n_days(client, mint, org_a, clinic_a):
    ava, ben, cleo = clinic_a[0], clinic_a[1], clinic_a[2]
    book(org_a, ava, timezone.now() + timedelta(days=7))
    book(org_a, ben, timezone.now() - timedelta(days=10))
    book(org_a, cleo, timezone.now() - timedelta(days=200))
    token = mint(org_a)

    no_upcoming = client.get("/patients/", {"status": "no_upcoming"}, **bearer(token))
    not_seen_30 = client.get("/patients/", {"status": "not_seen", "days": "30"}, **bearer(token))
    not_seen_5 = client.get("/patients/", {"status": "not_seen", "days": "5"}, **bearer(token))

    assert names(no_upcoming) == ["Intl, Dan", "Ng, Cleo", "Smithers, Ben", "Ó Briain, Zoë"]
    # Never seen counts as not seen; Ava's only appointment is ahead of her.
    assert names(not_seen_30) == ["Intl, Dan", "Ng, Cleo", "Smith, Ava", "Ó Briain, Zoë"]
    assert names(not_seen_5) == ["Intl, Dan", "Ng, Cleo", "Smith, Ava", "Smithers, Ben", "Ó Briain, Zoë"]


def test_sorts_by_last_seen_and_recently_added(client, mint, org_a, clinic_a):
    ava, cleo = clinic_a[0], clinic_a[2]
    book(org_a, cleo, timezone.now() - timedelta(days=3))
    book(org_a, ava, timezone.now() - timedelta(days=30))
    with bind_organization(org_a):
        for age, contact in enumerate(clinic_a):  # the last created is the most recent
            Contact.objects.filter(pk=contact.pk).update(created_at=timezone.now() - timedelta(days=10 - age))
    token = mint(org_a)

    last_seen = names(client.get("/patients/", {"sort": "last_seen"}, **bearer(token)))
    recent = names(client.get("/patients/", {"sort": "recent"}, **bearer(token)))

    assert last_seen[:2] == ["Ng, Cleo", "Smith, Ava"] and len(last_seen) == 5
    assert recent == ["Intl, Dan", "Ó Briain, Zoë", "Ng, Cleo", "Smithers, Ben", "Smith, Ava"]


def test_search_never_returns_another_clinics_patients(client, mint, org_a, org_b, clinic_a, clinic_b):
    response = client.get("/patients/", {"q": "sam"}, **bearer(mint(org_a)))
    response_b = client.get("/patients/", {"q": "sam"}, **bearer(mint(org_b)))

    assert names(response) == []
    assert names(response_b) == ["Smith, Sam"]


def test_export_streams_the_filtered_list_and_is_audited(client, mint, org_a, clinic_a, clinic_b):
    response = client.get("/patients/export.csv", {"q": "smi"}, **bearer(mint(org_a)))

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert [row[1] for row in rows[1:]] == ["Smith", "Smithers"]
    with bind_organization(org_a):
        assert AuditLog.objects.filter(action="patients.exported").count() == 1


def test_export_never_contains_another_clinics_patients(client, mint, org_a, clinic_a, clinic_b):
    response = client.get("/patients/export.csv", **bearer(mint(org_a)))

    body = b"".join(response.streaming_content).decode()
    assert "Sam" not in body and "Ava" in body


def test_export_neutralises_spreadsheet_formulas(client, mint, org_a):
    make_contacts(org_a, [("=HYPERLINK(\"x\")", "Evil", "", "", None)])

    body = b"".join(client.get("/patients/export.csv", **bearer(mint(org_a))).streaming_content).decode()

    assert "'=HYPERLINK" in body


def test_viewing_a_patient_writes_exactly_one_audit_row(client, mint, org_a, clinic_a):
    patient = clinic_a[0]

    response = client.get(f"/patients/{patient.pk}/", **bearer(mint(org_a)))

    assert response.status_code == 200 and b"Ava" in response.content
    with bind_organization(org_a):
        rows = AuditLog.objects.filter(action="patient.viewed", object_id=str(patient.pk))
        assert rows.count() == 1
        assert rows.get().actor.clerk_user_id == "user_test_alice"


def test_another_clinics_patient_is_404_and_not_audited(client, mint, org_a, clinic_b):
    response = client.get(f"/patients/{clinic_b[0].pk}/", **bearer(mint(org_a)))

    assert response.status_code == 404
    assert b"Sam" not in response.content
    with bind_organization(org_a):
        assert not AuditLog.objects.filter(action="patient.viewed").exists()


def test_empty_list_tells_an_admin_to_connect_cliniko(client, mint, org_a):
    response = client.get("/patients/", **bearer(mint(org_a, role="admin")))

    assert b"Connect Cliniko" in response.content and b"/settings/integrations/" in response.content


def test_search_as_you_type_returns_only_the_results_fragment(client, mint, org_a, clinic_a):
    response = client.get("/patients/", {"q": "ava"}, HTTP_HX_REQUEST="true", **bearer(mint(org_a)))

    assert b"<html" not in response.content
    assert names(response) == ["Smith, Ava"]


def test_a_capped_search_says_so(client, mint, org_a, clinic_a, monkeypatch):
    monkeypatch.setattr("patients.selectors.SEARCH_CANDIDATE_CAP", 1)

    response = client.get("/patients/", {"q": "smi"}, **bearer(mint(org_a)))

    assert response.context["page"].search_truncated is True
    assert b"showing the first matches only" in response.content
    assert len(names(response)) == 1
