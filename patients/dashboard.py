"""The clinic dashboard: its figures (read from security-barrier views over materialized views) and their refresh.

The figures are computed by materialized views in the organization's schema (patients/migrations/0009 and
messaging/migrations/0009: what each number means is written there). The app role reads them only through
the security-barrier views, which return the bound organization's row(s) only; a refresh is the schema's
SECURITY DEFINER functions, which refuse unless the organization passed here is the one bound. Refreshes are
``CONCURRENTLY``: the page keeps reading the previous figures while one runs.

The two action lists (active patients with no upcoming appointment, conversations waiting for a reply) are
live, short, index-backed queries: a list that leads to action must not be hours old.
"""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from psycopg import sql

from messaging.models import Conversation
from patients.models import Contact
from routiq import cache
from tenants.models import Organization
from tenants.rls.binding import bound_organization_id, require_organization_id

REFRESH_FUNCTIONS = ("refresh_patient_metrics", "refresh_conversation_metrics")
TREND_MONTHS = 13  # this month and the 12 before
CHART_DAYS = 30
ACTION_LIST_LENGTH = 5


def percent(part: Decimal | int | None, whole: int | None = None) -> str:
    """"12.5%" of a rate, or of part/whole; "—" when there is nothing to divide."""
    if part is None or whole == 0:
        return "—"
    share = Decimal(part) / whole if whole is not None else Decimal(part)
    return f"{share * 100:.1f}%"


class DashboardRefreshError(RuntimeError):
    """The organization to refresh is not the bound one."""


def dashboard_refresh(*, organization: Organization) -> datetime.datetime:
    """Recompute the bound organization's figures (every materialized view of its schema); returns their time."""
    if require_organization_id() != str(organization.pk):
        raise DashboardRefreshError("bind the organization whose figures are refreshed")
    as_of = None
    with transaction.atomic(), connection.cursor() as cursor:
        for function in REFRESH_FUNCTIONS:
            cursor.execute(sql.SQL("SELECT {}()").format(sql.Identifier(organization.schema_name, function)))
            as_of = cursor.fetchone()[0]
        # Tombstoned now and once the new figures are committed: the next page reads them.
        cache.forget(figures_key(organization.pk))
    assert as_of is not None  # REFRESH_FUNCTIONS is not empty, and each returns its refresh time
    return as_of


def figures_key(organization_id) -> str:
    return cache.org_key(organization_id, "dashboard", "figures")


@dataclass(frozen=True)
class Summary:
    total_patients: int
    active_patients: int
    new_patients_30_days: int
    returning_patients: int
    active_without_upcoming: int
    avg_appointments_per_patient: Decimal
    appointments_90_days: int
    no_show_rate: Decimal | None
    cancellation_rate: Decimal | None
    computed_at: datetime.datetime

    @property
    def no_show_percent(self) -> str:
        return percent(self.no_show_rate)

    @property
    def cancellation_percent(self) -> str:
        return percent(self.cancellation_rate)


@dataclass(frozen=True)
class Month:
    month: datetime.date
    active_patients: int
    patients_seen: int
    returned_30_days: int
    returned_60_days: int
    returned_90_days: int
    follow_up_complete: bool

    @property
    def returned_percents(self) -> list[str]:
        return [percent(n, self.patients_seen) for n in (self.returned_30_days, self.returned_60_days,
                                                         self.returned_90_days)]


@dataclass(frozen=True)
class Day:
    day: datetime.date
    conversations: int
    unique_contacts: int
    messages_in: int
    messages_out: int
    waits: int
    median_first_response_seconds: Decimal | None
    p90_first_response_seconds: Decimal | None
    unanswered: int


@dataclass
class Dashboard:
    summary: Summary | None  # None until the first refresh
    months: list[Month] = field(default_factory=list)
    days: list[Day] = field(default_factory=list)
    conversations_as_of: datetime.datetime | None = None
    lapsing_patients: list[Contact] = field(default_factory=list)
    waiting_conversations: list[Conversation] = field(default_factory=list)
    time_zone: zoneinfo.ZoneInfo = field(default_factory=lambda: zoneinfo.ZoneInfo("UTC"))

    @property
    def as_of(self) -> datetime.datetime | None:
        """The older of the two refreshes: every figure on the page is at least this fresh."""
        times = [t for t in (self.summary.computed_at if self.summary else None, self.conversations_as_of) if t]
        return min(times) if times else None


def _rows(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


SUMMARY_SQL = """
SELECT total_patients, active_patients, new_patients_30_days, returning_patients, active_without_upcoming,
       avg_appointments_per_patient, appointments_90_days, no_show_rate, cancellation_rate, computed_at
FROM active_patients_summary WHERE organization_id = %s
"""
MONTHS_SQL = """
SELECT month, active_patients, patients_seen, returned_30_days, returned_60_days, returned_90_days,
       follow_up_complete
FROM active_patients_monthly WHERE organization_id = %s ORDER BY month
"""
DAYS_SQL = """
SELECT day, conversations, unique_contacts, messages_in, messages_out, waits, median_first_response_seconds,
       p90_first_response_seconds, unanswered, computed_at
FROM conversation_metrics_daily WHERE organization_id = %s ORDER BY day DESC LIMIT %s
"""
# The patient list's "Active, no upcoming appointment" (patients.selectors STATUS_SQL["lapsing"]), most
# recently seen first: active_patients_active_idx walked backwards (DESC is NULLS FIRST there: active with
# nothing booked means seen lately, so the time is never NULL, and saying so lets the index give the order).
LAPSING_SQL = """
SELECT c.*, ap.last_appointment_at
FROM active_patients ap JOIN contacts c ON c.id = ap.contact_id AND c.organization_id = ap.organization_id
WHERE ap.organization_id = %s AND ap.is_active AND ap.next_appointment_at IS NULL
  AND ap.last_appointment_at IS NOT NULL AND c.archived_at IS NULL AND c.deleted_at IS NULL
ORDER BY ap.last_appointment_at DESC LIMIT %s
"""
# The inbox's "Unanswered only", longest waiting first: conversations_unanswered_idx.
WAITING_SQL = """
SELECT cv.*, ct.first_name AS contact_first_name, ct.last_name AS contact_last_name
FROM conversations cv
LEFT JOIN contacts ct ON ct.id = cv.contact_id AND ct.organization_id = cv.organization_id
WHERE cv.organization_id = %s AND cv.unanswered_since IS NOT NULL AND cv.deleted_at IS NULL
ORDER BY cv.unanswered_since LIMIT %s
"""


def figures_get(organization: Organization) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The summary, month and day rows of the materialized views: aggregates only (no patient, no name), the
    same until the next refresh, so cached until it (dashboard_refresh forgets them) or the TTL."""
    organization_id = organization.pk
    # Only under the organization's own binding: under another, RLS would return (and we would cache) nothing.
    cacheable = bound_organization_id() == str(organization_id)
    if cacheable and (figures := cache.get(figures_key(organization_id))) is not None:
        return figures
    figures = (_rows(SUMMARY_SQL, [organization_id]), _rows(MONTHS_SQL, [organization_id]),
               _rows(DAYS_SQL, [organization_id, CHART_DAYS]))
    if cacheable:
        cache.add(figures_key(organization_id), figures, settings.CACHE_DASHBOARD_TTL_SECONDS)
    return figures


def dashboard_get(*, organization: Organization) -> Dashboard:
    organization_id = organization.pk
    summary_rows, month_rows, day_rows = figures_get(organization)
    # The action lists name patients: always live, never cached.
    return Dashboard(
        summary=Summary(*summary_rows[0]) if summary_rows else None,
        months=[Month(*row) for row in month_rows],
        days=[Day(*row[:-1]) for row in reversed(day_rows)],
        conversations_as_of=day_rows[0][-1] if day_rows else None,
        lapsing_patients=list(Contact.objects.raw(LAPSING_SQL, [organization_id, ACTION_LIST_LENGTH])),
        waiting_conversations=list(Conversation.objects.raw(WAITING_SQL, [organization_id, ACTION_LIST_LENGTH])),
        time_zone=zoneinfo.ZoneInfo(organization.time_zone),
    )


def page_queries(organization: Organization) -> dict[str, tuple[str, list, str | None]]:
    """The page's queries with their parameters and the index each is written for (the EXPLAIN tests and the
    benchmark check the plans). The figures' materialized views hold 1, 13 and 90 rows per schema: scanning
    them is the right plan, so no index is required there (their unique indexes serve the refresh)."""
    return {
        "summary": (SUMMARY_SQL, [organization.pk], None),
        "months": (MONTHS_SQL, [organization.pk], None),
        "days": (DAYS_SQL, [organization.pk, CHART_DAYS], None),
        "lapsing patients": (LAPSING_SQL, [organization.pk, ACTION_LIST_LENGTH], "active_patients_active_idx"),
        "waiting conversations": (WAITING_SQL, [organization.pk, ACTION_LIST_LENGTH], "conversations_unanswered_idx"),
    }
