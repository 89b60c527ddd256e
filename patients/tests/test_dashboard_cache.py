"""The dashboard's figures in the cache: aggregates only, per organization, gone the moment a refresh commits."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging.tests import factories
from patients.dashboard import dashboard_refresh, figures_key
from patients.services import active_patients_refresh
from patients.tests.test_dashboard_page import headline, seed
from routiq import cache
from routiq.testing.clerk_fixtures import bearer
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
FIGURE_VIEWS = ("active_patients_summary", "active_patients_monthly", "conversation_metrics_daily")


def page(client, token) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/", **bearer(token))
    assert response.status_code == 200
    return response.content.decode(), [q["sql"] for q in queries]


def figure_queries(queries: list[str]) -> list[str]:
    return [sql for sql in queries if any(f"FROM {view} " in sql for view in FIGURE_VIEWS)]


def lapsing(organization, surname: str) -> None:
    person = factories.contact(organization, "Late", surname)
    factories.appointment(organization, person, timezone.now() - timedelta(days=3))
    with bind_organization(organization):
        active_patients_refresh(organization=organization)


def test_figures_are_read_once_then_served_from_the_cache_while_the_lists_stay_live(client, mint, org_a):
    seed(org_a, "Harbour", patients=2)
    cache.clear()  # the refresh's hold has passed
    token = mint(org_a)
    first, first_queries = page(client, token)

    lapsing(org_a, "Newcomer")  # a new patient due for rebooking, no refresh yet
    second, second_queries = page(client, token)

    assert len(figure_queries(first_queries)) == 3 and figure_queries(second_queries) == []
    assert headline(first, "Patients") == headline(second, "Patients") == "2"  # figures: as of the refresh
    assert "Newcomer" in second  # the action list: live


def test_a_refresh_shows_new_figures_on_the_very_next_page(client, mint, org_a):
    seed(org_a, "Harbour", patients=2)
    cache.clear()
    token = mint(org_a)
    assert headline(page(client, token)[0], "Patients") == "2"

    lapsing(org_a, "Newcomer")
    with bind_organization(org_a):
        dashboard_refresh(organization=org_a)

    assert headline(page(client, token)[0], "Patients") == "3"


def test_the_cached_figures_hold_no_patient_and_belong_to_their_organization(client, mint, org_a, org_b):
    seed(org_a, "Harbour", patients=1)
    seed(org_b, "Zanzibar", patients=4)
    cache.clear()

    a_html, b_html = page(client, mint(org_a))[0], page(client, mint(org_b))[0]
    a_again, b_again = page(client, mint(org_a))[0], page(client, mint(org_b))[0]

    assert (headline(a_html, "Patients"), headline(b_html, "Patients")) == ("1", "4")
    assert (headline(a_again, "Patients"), headline(b_again, "Patients")) == ("1", "4")
    assert "Zanzibar" not in a_again
    for organization in (org_a, org_b):
        figures = cache.get(figures_key(organization.pk))
        blob = pickle.dumps(figures)
        assert figures is not None and b"Harbour" not in blob and b"Zanzibar" not in blob and b"P0" not in blob
        assert all(isinstance(rows, list) and all(isinstance(row, tuple) for row in rows) for rows in figures)


def test_under_another_binding_nothing_is_cached(org_a, org_b):
    from patients.dashboard import dashboard_get

    seed(org_a, "Harbour", patients=1)
    cache.clear()
    with bind_organization(org_b):
        assert dashboard_get(organization=org_a).summary is None  # RLS: A's rows are not visible bound to B

    assert cache.get(figures_key(org_a.pk)) is None
    with bind_organization(org_a):
        assert dashboard_get(organization=org_a).summary.total_patients == 1
