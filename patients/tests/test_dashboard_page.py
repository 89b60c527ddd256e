"""The dashboard at / through real HTTP requests with real signed tokens, as the app role."""

from __future__ import annotations

import re
import zoneinfo
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from messaging.models import Conversation
from messaging.tests import factories
from patients.dashboard import dashboard_get, dashboard_refresh
from patients.services import active_patients_refresh
from routiq.testing.clerk_fixtures import bearer
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
SECRET = "Zanzibar-only-in-clinic-B"


def seed(organization, surname: str, *, patients: int) -> dict:
    now = timezone.now()
    people = [factories.contact(organization, f"P{n}", surname) for n in range(patients)]
    for person in people:
        factories.appointment(organization, person, now - timedelta(days=10))
    thread = factories.conversation(organization, people[0])
    factories.message(organization, thread, now - timedelta(hours=2), f"Can I move my booking? {surname}")
    with bind_organization(organization):
        Conversation.objects.filter(pk=thread.pk).update(unanswered_since=now - timedelta(hours=2))
        active_patients_refresh(organization=organization)
        dashboard_refresh(organization=organization)
    return {"people": people, "thread": thread}


def headline(html: str, label: str) -> str:
    match = re.search(rf"<dt>{re.escape(label)}</dt><dd>([^<]*)</dd>", html)
    return match.group(1) if match else ""


def test_the_dashboard_shows_the_clinics_figures_charts_and_action_lists(client, mint, org_a):
    clinic = seed(org_a, "Harbour", patients=3)

    response = client.get("/", **bearer(mint(org_a, role="member")))

    html = response.content.decode()
    assert response.status_code == 200
    assert (headline(html, "Patients"), headline(html, "Active"), headline(html, "Active, nothing booked")) == (
        "3", "3", "3")
    assert "Figures as of " in html and "(Australia/Sydney)" in html
    assert html.count('<svg class="chart"') == 3
    for table in ("trend-table", "cohort-table", "conversations-table"):
        assert f'id="{table}"' in html
    assert 'href="/patients/?status=lapsing&amp;sort=last_seen"' in html
    assert 'href="/conversations/?unanswered=1"' in html
    assert f'href="/conversations/{clinic["thread"].pk}/"' in html
    for person in clinic["people"]:
        assert f'href="/patients/{person.pk}/"' in html
    assert "<script" not in html.split("<main", 1)[1]  # charts are server-drawn SVG, no script


def test_the_dashboard_never_shows_another_clinics_figures_or_names(client, mint, org_a, org_b):
    seed(org_a, "Harbour", patients=1)
    seed(org_b, SECRET, patients=4)
    with bind_organization(org_b):
        counts_before = (factories.Contact.objects.count(), Conversation.objects.count())

    html = client.get("/", **bearer(mint(org_a))).content.decode()
    b_html = client.get("/", **bearer(mint(org_b))).content.decode()

    assert SECRET not in html
    assert headline(html, "Patients") == "1"
    assert headline(b_html, "Patients") == "4" and SECRET in b_html
    with bind_organization(org_b):
        assert (factories.Contact.objects.count(), Conversation.objects.count()) == counts_before


def test_before_the_first_refresh_the_page_says_so(client, mint, org_a):
    html = client.get("/", **bearer(mint(org_a))).content.decode()

    assert "The figures have not been computed yet" in html
    assert '<svg class="chart"' not in html


def test_the_lapsing_filter_of_the_patient_list_matches_the_dashboard(client, mint, org_a):
    clinic = seed(org_a, "Harbour", patients=2)
    booked = factories.contact(org_a, "Booked", "Harbour")
    factories.appointment(org_a, booked, timezone.now() - timedelta(days=3))
    factories.appointment(org_a, booked, timezone.now() + timedelta(days=3))
    with bind_organization(org_a):
        active_patients_refresh(organization=org_a)

    html = client.get("/patients/", {"status": "lapsing", "sort": "last_seen"}, **bearer(mint(org_a))).content.decode()

    assert sorted(re.findall(r'href="/patients/([0-9a-f-]{36})/"', html)) == sorted(
        str(person.pk) for person in clinic["people"])


def test_dates_on_the_page_are_in_the_organizations_time_zone(client, mint, org_a):
    seed(org_a, "Harbour", patients=1)
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")  # the organization row is the owner's to change (as the admin does)
        cursor.execute("UPDATE organizations SET time_zone = 'Pacific/Auckland' WHERE id = %s", [org_a.pk])
        cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')
    org_a.refresh_from_db()
    with bind_organization(org_a):
        as_of = dashboard_get(organization=org_a).as_of

    html = client.get("/", **bearer(mint(org_a))).content.decode()

    local = as_of.astimezone(zoneinfo.ZoneInfo("Pacific/Auckland"))
    assert f"Figures as of {local:%-d %b %Y, %H:%M} (Pacific/Auckland)" in html
    assert local.strftime("%H:%M") != as_of.astimezone(zoneinfo.ZoneInfo("Australia/Sydney")).strftime("%H:%M")
