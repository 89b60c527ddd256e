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
