"""Refreshing the dashboard's figures: concurrently with readers, debounced after syncs, nightly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import OperationalError, connection, transaction
from psycopg import sql

from messaging.tests import factories
from patients.dashboard import DashboardRefreshError, dashboard_get, dashboard_refresh
from patients.jobs import (
    dashboard_job_id,
    enqueue_dashboard_refreshes,
    refresh_dashboard,
    schedule_dashboard_refresh,
    schedule_dashboard_refresh_after,
)
from patients.services import active_patients_refresh
from tenants.models import Organization, SyncLog
from tenants.rls.binding import bind_organization


def summary_total(organization) -> int | None:
    with bind_organization(organization):
        summary = dashboard_get(organization=organization).summary
    return None if summary is None else summary.total_patients


def other_connection(organization, role: str) -> psycopg.Connection:
    """A second session of the test database (sees committed rows only), as ``role``, bound to ``organization``."""
    other = psycopg.connect(**connection.get_connection_params())
    with other.cursor() as cursor:
        cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        cursor.execute("SELECT set_config('app.current_organization', %s, false)", [str(organization.pk)])
    other.commit()
    return other


def read_with_lock_timeout(organization) -> int | None:
    """The page's read, giving up after a second if anything holds a lock that blocks it."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '1s'")
        return summary_total(organization)


@pytest.mark.django_db(transaction=True)
def test_the_page_reads_the_previous_figures_while_a_refresh_runs(org_a):
    factories.contact(org_a, "First", "Patient")
    with bind_organization(org_a):
        active_patients_refresh(organization=org_a)
        dashboard_refresh(organization=org_a)
    factories.contact(org_a, "Second", "Patient")
    assert summary_total(org_a) == 1

    refresher = other_connection(org_a, settings.DATABASE_APP_ROLE)
    try:
        with refresher.cursor() as cursor:  # a refresh in progress: its transaction holds its locks
            cursor.execute(sql.SQL("SELECT {}()").format(sql.Identifier(org_a.schema_name, "refresh_patient_metrics")))
            assert read_with_lock_timeout(org_a) == 1  # not blocked, and the old figures
        refresher.commit()
    finally:
        refresher.close()
    assert read_with_lock_timeout(org_a) == 2


@pytest.mark.django_db(transaction=True)
def test_a_plain_refresh_would_block_the_page(org_a):
    """What the test above guards against: REFRESH without CONCURRENTLY locks readers out until it commits."""
    with bind_organization(org_a):
        dashboard_refresh(organization=org_a)
    owner = other_connection(org_a, connection.get_connection_params()["user"])
    try:
        with owner.cursor() as cursor:
            cursor.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(
                sql.Identifier(org_a.schema_name, "mv_active_patients_summary")))
            with pytest.raises(OperationalError, match="lock timeout"):
                read_with_lock_timeout(org_a)
        owner.rollback()
    finally:
        owner.close()


@pytest.mark.django_db
def test_refresh_needs_the_organization_bound(org_a, org_b):
    with pytest.raises(DashboardRefreshError), bind_organization(org_b):
        dashboard_refresh(organization=org_a)


@pytest.fixture
def default_queue(empty_queue):
    return empty_queue("default")


@pytest.mark.django_db
def test_refreshes_after_syncs_are_debounced_to_one_per_window(org_a, org_b, default_queue, settings):
    settings.DASHBOARD_REFRESH_DEBOUNCE_SECONDS = 300
    start = datetime(2026, 5, 1, 10, 0, 10, tzinfo=UTC)  # 10:00:10, in the window 10:00:00-10:05:00
    window = int(start.timestamp()) // 300

    first = schedule_dashboard_refresh(org_a, now=start)
    again = schedule_dashboard_refresh(org_a, now=start + timedelta(seconds=200))
    other = schedule_dashboard_refresh(org_b, now=start)
    later = schedule_dashboard_refresh(org_a, now=start + timedelta(seconds=290))  # the next window

    assert first.id == dashboard_job_id(org_a.pk, window)
    assert again is None
    assert other.id == dashboard_job_id(org_b.pk, window)
    assert later.id == dashboard_job_id(org_a.pk, window + 1)
    registry = default_queue.scheduled_job_registry
    assert sorted(registry.get_job_ids()) == sorted([first.id, other.id, later.id])
    assert registry.get_scheduled_time(first.id) == datetime(2026, 5, 1, 10, 5, tzinfo=UTC)
    assert registry.get_scheduled_time(later.id) == datetime(2026, 5, 1, 10, 10, tzinfo=UTC)
    assert first.args == (str(org_a.pk),)


@pytest.mark.django_db
def test_only_a_sync_that_changed_something_asks_for_a_refresh(org_a, default_queue,
                                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        schedule_dashboard_refresh_after(org_a, SyncLog(organization=org_a, fetched_count=40))
        schedule_dashboard_refresh_after(org_a, "skipped: no Cliniko credential")
    assert default_queue.scheduled_job_registry.get_job_ids() == []

    with django_capture_on_commit_callbacks(execute=True):
        schedule_dashboard_refresh_after(org_a, SyncLog(organization=org_a, fetched_count=40, updated_count=1))
    (job_id,) = default_queue.scheduled_job_registry.get_job_ids()
    assert job_id.startswith(f"dashboard-{org_a.pk}-")


@pytest.mark.django_db
def test_a_cliniko_sync_that_writes_schedules_a_refresh(org_a, cliniko, cliniko_credential, default_queue,
                                                        django_capture_on_commit_callbacks):
    from patients.jobs import sync_cliniko

    cliniko.seed(patients=3, appointments_per_patient=1, seed=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert sync_cliniko(str(org_a.pk), "patients").startswith("succeeded")
    (job_id,) = default_queue.scheduled_job_registry.get_job_ids()
    assert job_id.startswith(f"dashboard-{org_a.pk}-")


@pytest.mark.django_db
def test_the_refresh_job_and_the_nightly_fan_out(org_a, org_b, default_queue, django_capture_on_commit_callbacks):
    factories.contact(org_a, "Only", "Patient")
    with bind_organization(org_a):
        active_patients_refresh(organization=org_a)

    result = refresh_dashboard(str(org_a.pk))

    assert result.startswith("refreshed: as of ")
    assert summary_total(org_a) == 1
    assert summary_total(org_b) is None  # not refreshed
    active = set(Organization.objects.filter(is_active=True).values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues when the transaction commits
        assert enqueue_dashboard_refreshes() == len(active)
    assert set(default_queue.job_ids) == {f"dashboard-nightly-{pk}" for pk in active} >= {
        f"dashboard-nightly-{org_a.pk}", f"dashboard-nightly-{org_b.pk}"}
    assert refresh_dashboard("00000000-0000-0000-0000-000000000000") == "skipped: organization missing or inactive"


def test_the_schedule_runs_the_nightly_refresh():
    entries = {entry["name"]: entry for entry in settings.ROUTIQ_SCHEDULE}
    assert entries["dashboard-nightly"] == {
        "name": "dashboard-nightly", "func": "patients.jobs.enqueue_dashboard_refreshes", "every_seconds": 86400}
