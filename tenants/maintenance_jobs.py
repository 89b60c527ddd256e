"""Scheduled housekeeping jobs for the public schema (run by the `default` worker, as the app role)."""

from __future__ import annotations

import logging

from tenants.rls.binding import unbind_all
from tenants.rls.partitions import ensure_audit_partitions

logger = logging.getLogger(__name__)


def create_audit_log_partitions(months_ahead: int = 3) -> str:
    """Keep audit_logs partitioned ahead of time: this month and the next ``months_ahead``. Idempotent.

    Scheduled daily (ROUTIQ_SCHEDULE "audit-partitions"); a missed run costs nothing, since three months of
    partitions already exist and rows for a month without one go to audit_logs_default.
    """
    unbind_all()  # public schema, no organization: the function needs neither
    names = ensure_audit_partitions(months_ahead=months_ahead)
    logger.info("audit log partitions present: %s", ", ".join(names))
    return f"audit log partitions present: {', '.join(names)}"


def archive_old_audit_logs() -> str:
    """Archive the audit log's months past AUDIT_LOG_RETENTION_YEARS to files (tenants/audit_archive.py). Daily."""
    from tenants.audit_archive import archive_old_audit_logs as archive

    archives = archive()
    return f"archived {len(archives)} months of audit logs, {sum(a.rows for a in archives)} rows"


def prune_sync_logs(retention_days: int | None = None) -> int:
    """Delete sync log rows older than SYNC_LOG_RETENTION_DAYS, for every organization. Daily.

    Sync logs are operational records (the audit log is the compliance record and is never pruned); the
    checkpoints that syncs resume from live in sync_checkpoints and are untouched.
    """
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from tenants.models import SyncLog, SyncStatus
    from tenants.rls.binding import platform_access

    days = settings.SYNC_LOG_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = timezone.now() - timedelta(days=days)
    with platform_access("prune sync logs"):
        deleted, _ = SyncLog.objects.filter(started_at__lt=cutoff).exclude(status=SyncStatus.RUNNING).delete()
    logger.info("sync logs pruned: %s older than %s days", deleted, days)
    return deleted


def prune_session_records() -> int:
    """Forget portal sessions that can no longer be alive and Clerk sessions ended over a day ago. Daily.

    A portal session outlives neither its absolute lifetime nor its Django session row, so its index row
    (portal_sessions) is only clutter after either. An ended Clerk session's last tokens expire within
    a minute of its end; a day keeps a wide margin for clock skew and late webhooks.
    """
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from tenants.models import EndedClerkSession, PortalSession

    now = timezone.now()
    lifetime_over = now - timedelta(seconds=settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS)
    live_keys = Session.objects.filter(expire_date__gt=now).values("session_key")
    portal = (
        PortalSession.objects.filter(created_at__lt=lifetime_over).delete()[0]
        + PortalSession.objects.exclude(session_key__in=live_keys).delete()[0]
    )
    ended, _ = EndedClerkSession.objects.filter(ended_at__lt=now - timedelta(days=1)).delete()
    logger.info("session records pruned: %s portal sessions, %s ended Clerk sessions", portal, ended)
    return portal + ended
