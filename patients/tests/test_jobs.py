"""The scheduler's fan-out and the sync command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from patients.jobs import enqueue_incremental_syncs
from patients.models import Contact
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

    queued = set(sync_queue.job_ids) | set(sync_queue.deferred_job_registry.get_job_ids())
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
