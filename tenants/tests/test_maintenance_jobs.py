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


def test_session_records_are_pruned_once_they_cannot_matter(db, settings):
    from django.contrib.sessions.backends.db import SessionStore

    from tenants.maintenance_jobs import prune_session_records
    from tenants.models import EndedClerkSession, PortalSession, User

    user = User.objects.create(username="user_prune", clerk_user_id="user_prune")
    live = SessionStore()
    live.create()
    live_record = PortalSession.objects.create(session_key=live.session_key, clerk_session_id="sess_live", user=user)
    PortalSession.objects.create(session_key="gone" * 8, clerk_session_id="sess_gone", user=user)
    old = SessionStore()  # its Django session is still there, but its absolute lifetime is over
    old.create()
    too_old = PortalSession.objects.create(session_key=old.session_key, clerk_session_id="sess_old", user=user)
    PortalSession.objects.filter(pk=too_old.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS + 60)
    )
    recent_end = EndedClerkSession.objects.create(clerk_session_id="sess_recent", reason="revoked")
    old_end = EndedClerkSession.objects.create(clerk_session_id="sess_ended_long_ago", reason="revoked")
    EndedClerkSession.objects.filter(pk=old_end.pk).update(ended_at=timezone.now() - timedelta(days=2))

    assert prune_session_records() == 3

    assert list(PortalSession.objects.values_list("pk", flat=True)) == [live_record.pk]
    assert list(EndedClerkSession.objects.values_list("pk", flat=True)) == [recent_end.pk]
