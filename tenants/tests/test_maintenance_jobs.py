"""Scheduled housekeeping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.maintenance_jobs import prune_sync_logs
from tenants.models import SyncLog, SyncStatus
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db


def test_old_sync_logs_are_pruned_for_every_organization_and_running_ones_kept(org_a, org_b):
    old = timezone.now() - timedelta(days=400)
    for organization in (org_a, org_b):
        with bind_organization(organization):
            for status in (SyncStatus.SUCCEEDED, SyncStatus.RUNNING):
                log = SyncLog.objects.create(organization=organization, provider="cliniko", resource="patients",
                                             status=status)
                SyncLog.objects.filter(pk=log.pk).update(started_at=old)
            SyncLog.objects.create(organization=organization, provider="cliniko", resource="patients")

    assert prune_sync_logs(retention_days=180) == 2

    for organization in (org_a, org_b):
        with bind_organization(organization):
            assert SyncLog.objects.count() == 2
            assert SyncLog.objects.filter(started_at=old, status=SyncStatus.RUNNING).count() == 1  # kept
            assert not SyncLog.objects.filter(started_at=old).exclude(status=SyncStatus.RUNNING).exists()
