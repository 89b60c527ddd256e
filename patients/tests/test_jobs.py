"""The scheduler's fan-out and the sync command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from patients.jobs import enqueue_incremental_syncs
from patients.models import Contact
from routiq.testing.queues import waiting_job_ids
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db


@pytest.fixture
def sync_queue(empty_queue):
    return empty_queue("sync")


def test_fan_out_enqueues_only_organizations_with_a_cliniko_credential(
    org_a, org_b, cliniko_credential, sync_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        count = enqueue_incremental_syncs()
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_incremental_syncs()  # a second tick while the first jobs wait: nothing new

    queued = waiting_job_ids(sync_queue)
    assert count == 1
    assert queued == {f"cliniko-{org_a.pk}-patients", f"cliniko-{org_a.pk}-appointments"}


def test_sync_command_runs_in_the_foreground(org_a, cliniko, cliniko_credential, capsys):
    cliniko.seed(patients=30, appointments_per_patient=1, seed=4)

    call_command("sync", org_a.clerk_org_id, "cliniko", "--now")

    assert "patients: fetched 30, created 30" in capsys.readouterr().out
    with bind_organization(org_a):
        assert Contact.objects.count() == 30


def test_sync_command_refuses_an_unknown_organization():
    with pytest.raises(CommandError, match="No active organization"):
        call_command("sync", "org_nope", "cliniko", "--now")


def test_weekly_full_sync_fans_out_full_runs(org_a, cliniko_credential, sync_queue,
                                             django_capture_on_commit_callbacks):
    from patients.jobs import enqueue_full_syncs

    with django_capture_on_commit_callbacks(execute=True):
        enqueue_full_syncs()

    job = sync_queue.fetch_job(f"cliniko-{org_a.pk}-patients")
    assert job.args == (str(org_a.pk), "patients", True)


def test_the_fan_out_spreads_organizations_over_the_interval_each_in_its_own_place(
        org_a, org_b, cliniko_credential, sync_queue, django_capture_on_commit_callbacks, settings):
    from datetime import timedelta

    from django.utils import timezone

    from routiq.jobs import spread_start

    settings.CLINIKO_SYNC_INTERVAL_SECONDS = 900
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_incremental_syncs()
    (scheduled,) = sync_queue.scheduled_job_registry.get_job_ids()  # patients waits for its time; then appointments
    assert scheduled == f"cliniko-{org_a.pk}-patients"
    at = sync_queue.scheduled_job_registry.get_scheduled_time(scheduled)
    assert before <= at <= before + timedelta(seconds=810 + 5)  # within nine tenths of the interval
    assert sync_queue.deferred_job_registry.get_job_ids() == [f"cliniko-{org_a.pk}-appointments"]
    # Stable and spread: the same organization always lands in the same place, different ones apart.
    now = timezone.now()
    assert spread_start(org_a.pk, 900, now) == spread_start(org_a.pk, 900, now)
    places = {spread_start(f"org-{n}", 900, now) for n in range(200)}
    assert len(places) > 150 and max(places) - min(places) > timedelta(seconds=700)
