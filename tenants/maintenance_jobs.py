"""Scheduled housekeeping jobs for the public schema (run by the `default` worker, as the app role)."""

from __future__ import annotations

import logging

from tenants.audit_partitions import ensure_audit_partitions
from tenants.binding import unbind_all

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
