"""The dashboard's materialized views give the numbers computed directly from the base tables.

One organization is seeded with the edge cases (cancelled and no-show appointments, archived, deleted and
lead contacts, a deleted appointment, one without a patient, visits either side of a local month boundary that
UTC would put in one month, a wait with no reply, a private note that is not an answer). Each figure is
checked twice: against a literal (what the definitions say for this data) and against an independent
computation in Python from the rows, over every row of every view.
"""

from __future__ import annotations

import datetime
import zoneinfo
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.db import connection
from django.utils import timezone

from messaging.models import Conversation, Message
from messaging.tests import factories
from patients.dashboard import dashboard_get, dashboard_refresh
from patients.models import ActivePatient, Appointment, Contact
from patients.services import active_patients_refresh
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
DAY = datetime.timedelta(days=1)
LONG_AGO = timezone.now() - 400 * DAY


def local_midnight(zone: zoneinfo.ZoneInfo, date: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(date, datetime.time(), tzinfo=zone)


def first_of_month(date: datetime.date, months_back: int) -> datetime.date:
    index = date.year * 12 + date.month - 1 - months_back
    return datetime.date(index // 12, index % 12 + 1, 1)


def patient(org, name, **fields):
    fields.setdefault("source_created_at", LONG_AGO)
    return factories.contact(org, name, "Example", **fields)


@pytest.fixture
def clinic(org_a):
    zone = zoneinfo.ZoneInfo(org_a.time_zone)
    now = timezone.now()
    today = now.astimezone(zone).date()
    p = {
        "regular": patient(org_a, "Regular"),
        "lapsing": patient(org_a, "Lapsing"),
        "lapsed": patient(org_a, "Lapsed"),
        "no_show": patient(org_a, "NoShow"),
        "archived": patient(org_a, "Archived", archived_at=now - 5 * DAY),
        "deleted": patient(org_a, "Deleted", deleted_at=now - 5 * DAY, is_active=False),
        "new": patient(org_a, "New", source_created_at=now - 3 * DAY),
        "boundary": patient(org_a, "Boundary"),
        "lead": factories.contact(org_a, "Lead", "Only", patient=False, source_created_at=LONG_AGO),
    }
    visit = factories.appointment
    visit(org_a, p["regular"], now - 10 * DAY)
    visit(org_a, p["regular"], now - 40 * DAY)
    visit(org_a, p["regular"], now + 5 * DAY)  # booked ahead
    visit(org_a, p["lapsing"], now - 20 * DAY)
    visit(org_a, p["lapsing"], now - 15 * DAY, deleted_at=now - DAY)  # deleted in Cliniko: counts nowhere
    visit(org_a, p["lapsed"], now - 200 * DAY)
    visit(org_a, p["no_show"], now - 5 * DAY, did_not_arrive=True)
    visit(org_a, p["no_show"], now - 3 * DAY, cancelled_at=now - 4 * DAY)
    visit(org_a, p["archived"], now - 10 * DAY)
    visit(org_a, p["deleted"], now - 10 * DAY)
    with bind_organization(org_a):
        Appointment.objects.create(organization=org_a, contact=None, cliniko_appointment_id=990001,
                                   starts_at=now - 7 * DAY)  # its patient never synced
    # Either side of local midnight between two months, three and two months back: one hour apart, the same
    # day in UTC (Sydney is 10 or 11 hours ahead), two months in the clinic.
    boundary_month = first_of_month(today, 2)
    late = local_midnight(zone, boundary_month) - datetime.timedelta(minutes=30)
    early = local_midnight(zone, boundary_month) + datetime.timedelta(minutes=30)
    assert late.astimezone(datetime.UTC).month == early.astimezone(datetime.UTC).month
    visit(org_a, p["boundary"], late)
    visit(org_a, p["boundary"], early)

    # Conversations: two and one days back, local time.
    two_days = local_midnight(zone, today - 2 * DAY)
    one_day = local_midnight(zone, today - DAY)
    minute = datetime.timedelta(minutes=1)
    c1 = factories.conversation(org_a, p["regular"])
    for at, direction in [(10 * 60, "inbound"), (10 * 60 + 5, "outbound"), (11 * 60, "inbound"),
                          (11 * 60 + 1, "inbound"), (11 * 60 + 31, "outbound")]:
        factories.message(org_a, c1, two_days + at * minute, direction=direction)
    c2 = factories.conversation(org_a, p["lapsing"])
    factories.message(org_a, c2, two_days + 12 * 60 * minute)  # never answered
    c3 = factories.conversation(org_a, p["lead"])
    factories.message(org_a, c3, one_day + 9 * 60 * minute)
    factories.message(org_a, c3, one_day + 9 * 60 * minute + minute, direction="outbound", private=True)
    factories.message(org_a, c3, one_day + 10 * 60 * minute, direction="outbound")
    c4 = factories.conversation(org_a, p["regular"])
    factories.message(org_a, c4, one_day - 10 * minute, direction="outbound")  # 23:50 the day before
    factories.message(org_a, c4, one_day + 10 * minute)  # 00:10: a new day, a new wait, unanswered
    with bind_organization(org_a):  # as messaging.services keeps it (the factories do not)
        Conversation.objects.filter(pk=c2.pk).update(unanswered_since=two_days + 12 * 60 * minute)
        Conversation.objects.filter(pk=c4.pk).update(unanswered_since=one_day + 10 * minute)
        active_patients_refresh(organization=org_a)
        dashboard_refresh(organization=org_a)
    return {"patients": p, "zone": zone, "today": today, "boundary_month": boundary_month,
            "two_days": two_days.date(), "one_day": one_day.date()}


def view_rows(view: str, order: str) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {view} ORDER BY {order}")
        columns = [column.name for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def rate(part: int, whole: int) -> Decimal | None:
    return None if not whole else (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), ROUND_HALF_UP)


# --- the direct computations, from the definitions (patients/migrations/0009, messaging/migrations/0009) ------

def summary_from_base_tables(org, now) -> dict:
    patients = list(Contact.objects.filter(cliniko_patient_id__isnull=False, archived_at__isnull=True,
                                           deleted_at__isnull=True))
    activity = {row.contact_id: row for row in ActivePatient.objects.all()}

    def active(contact):
        return contact.pk in activity and activity[contact.pk].is_active

    counts = [activity[c.pk].appointment_count if c.pk in activity else 0 for c in patients]
    recent = [a for a in Appointment.objects.filter(deleted_at__isnull=True)
              if now - 90 * DAY < a.starts_at <= now]
    held = [a for a in recent if a.cancelled_at is None]
    return {
        "organization_id": org.pk,
        "total_patients": len(patients),
        "active_patients": sum(1 for c in patients if active(c)),
        "new_patients_30_days": sum(1 for c in patients if (c.source_created_at or c.created_at) > now - 30 * DAY),
        "returning_patients": sum(1 for c in patients if active(c) and activity[c.pk].appointment_count >= 2),
        "active_without_upcoming": sum(1 for c in patients if active(c) and activity[c.pk].next_appointment_at is None),
        "avg_appointments_per_patient": (Decimal(sum(counts)) / len(counts)).quantize(Decimal("0.01")),
        "appointments_90_days": len(recent),
        "no_show_rate": rate(sum(1 for a in held if a.did_not_arrive), len(held)),
        "cancellation_rate": rate(len(recent) - len(held), len(recent)),
    }


def visits(zone) -> list[tuple]:
    now = timezone.now()
    kept = Appointment.objects.filter(contact__isnull=False, contact__deleted_at__isnull=True,
                                      cancelled_at__isnull=True, did_not_arrive=False, deleted_at__isnull=True,
                                      starts_at__lte=now)
    return sorted((a.contact_id, a.starts_at, a.id) for a in kept)


def months_from_base_tables(org, zone, today) -> list[dict]:
    now = timezone.now()
    all_visits = visits(zone)
    rows = []
    for back in range(12, -1, -1):
        month = first_of_month(today, back)
        start = local_midnight(zone, month)
        full_end = local_midnight(zone, first_of_month(today, back - 1))
        end = min(full_end, now)
        active = {contact for contact, at, _ in all_visits if end - 90 * DAY < at <= end}
        last_visit: dict = {}
        for contact, at, _ in all_visits:
            if start <= at < full_end:
                last_visit[contact] = at
        next_visit = {contact: min((at for c, at, _ in all_visits if c == contact and at > last), default=None)
                      for contact, last in last_visit.items()}

        def returned(days, last_visit=last_visit, next_visit=next_visit):
            return sum(1 for contact, last in last_visit.items()
                       if next_visit[contact] is not None and next_visit[contact] <= last + days * DAY)

        rows.append({"organization_id": org.pk, "month": month, "active_patients": len(active),
                     "patients_seen": len(last_visit), "returned_30_days": returned(30),
                     "returned_60_days": returned(60), "returned_90_days": returned(90),
                     "follow_up_complete": full_end + 90 * DAY <= now})
    return rows


def percentile(values: list[float], fraction: float) -> Decimal | None:
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return Decimal(str(value)).quantize(Decimal("0.1"), ROUND_HALF_UP)


def days_from_base_tables(org, zone, today) -> list[dict]:
    days = [today - back * DAY for back in range(89, -1, -1)]
    since = local_midnight(zone, days[0])
    messages = sorted(Message.objects.filter(private=False, sent_at__gte=since), key=lambda m: (m.sent_at, m.id))
    contact_of = dict(Conversation.objects.values_list("id", "contact_id"))
    by_conversation: dict = {}
    for message in messages:
        by_conversation.setdefault(message.conversation_id, []).append(message)
    waits = []  # (day, seconds or None)
    for thread in by_conversation.values():
        for index, message in enumerate(thread):
            if message.direction != "inbound" or (index and thread[index - 1].direction == "inbound"):
                continue
            answer = next((m.sent_at for m in thread[index + 1:] if m.direction == "outbound"), None)
            waits.append((message.sent_at.astimezone(zone).date(),
                          None if answer is None else (answer - message.sent_at).total_seconds()))
    rows = []
    for day in days:
        that_day = [m for m in messages if m.sent_at.astimezone(zone).date() == day]
        answered = [seconds for wait_day, seconds in waits if wait_day == day and seconds is not None]
        conversations = {m.conversation_id for m in that_day}
        rows.append({
            "organization_id": org.pk, "day": day, "conversations": len(conversations),
            "unique_contacts": len({contact_of[c] for c in conversations if contact_of[c] is not None}),
            "messages_in": sum(1 for m in that_day if m.direction == "inbound"),
            "messages_out": sum(1 for m in that_day if m.direction == "outbound"),
            "waits": sum(1 for wait_day, _ in waits if wait_day == day),
            "median_first_response_seconds": percentile(answered, 0.5),
            "p90_first_response_seconds": percentile(answered, 0.9),
            "unanswered": sum(1 for wait_day, seconds in waits if wait_day == day and seconds is None),
        })
    return rows


def without(rows: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in keys} for row in rows]


# --- the tests ----------------------------------------------------------------------------------------------

def test_summary_equals_the_base_tables(org_a, clinic):
    with bind_organization(org_a):
        (row,) = view_rows("active_patients_summary", "organization_id")
        direct = summary_from_base_tables(org_a, timezone.now())

    assert without([row], "computed_at") == [direct]
    assert direct == {
        "organization_id": org_a.pk,
        "total_patients": 6,  # archived, deleted and the lead are not current patients
        "active_patients": 3,  # regular, lapsing and the boundary patient (seen two months back)
        "new_patients_30_days": 1,
        "returning_patients": 2,  # regular (2 seen, 1 booked) and boundary (2 seen)
        "active_without_upcoming": 2,  # lapsing and boundary
        "avg_appointments_per_patient": Decimal("1.17"),  # (3 + 1 + 1 + 0 + 0 + 2) / 6
        "appointments_90_days": 10,  # the booking ahead, the deleted one and the one 200 days back are not
        "no_show_rate": Decimal("0.1111"),  # 1 of the 9 not cancelled
        "cancellation_rate": Decimal("0.1000"),  # 1 of 10
    }


def test_monthly_trend_and_cohorts_equal_the_base_tables(org_a, clinic):
    with bind_organization(org_a):
        rows = view_rows("active_patients_monthly", "month")
        direct = months_from_base_tables(org_a, clinic["zone"], clinic["today"])

    assert without(rows, "computed_at") == direct
    by_month = {row["month"]: row for row in rows}
    boundary, before = clinic["boundary_month"], first_of_month(clinic["boundary_month"], 1)
    # In the clinic's time zone the two visits fall in two months; the earlier one was followed an hour later.
    assert (by_month[before]["patients_seen"], by_month[before]["returned_30_days"]) == (1, 1)
    # The later one starts the next month's cohort (with the regular patient's visit 40 days back when that
    # falls in the same month, who came back 30 days later).
    regular_too = int((timezone.now() - 40 * DAY).astimezone(clinic["zone"]).date().replace(day=1) == boundary)
    assert (by_month[boundary]["patients_seen"], by_month[boundary]["returned_30_days"]) == (
        1 + regular_too, regular_too)
    assert [row["month"] for row in rows] == [first_of_month(clinic["today"], back) for back in range(12, -1, -1)]
    this_month = by_month[clinic["today"].replace(day=1)]
    assert this_month["follow_up_complete"] is False


def test_daily_conversation_metrics_equal_the_base_tables(org_a, clinic):
    with bind_organization(org_a):
        rows = view_rows("conversation_metrics_daily", "day")
        direct = days_from_base_tables(org_a, clinic["zone"], clinic["today"])

    assert without(rows, "computed_at") == direct
    by_day = {row["day"]: row for row in rows}
    assert without([by_day[clinic["two_days"]]], "computed_at", "organization_id") == [{
        # c4's reply at 23:50 local belongs here, not to the next day.
        "day": clinic["two_days"], "conversations": 3, "unique_contacts": 2, "messages_in": 4, "messages_out": 3,
        "waits": 3, "median_first_response_seconds": Decimal("1080.0"),  # 5 and 31 minutes
        "p90_first_response_seconds": Decimal("1704.0"), "unanswered": 1,
    }]
    assert without([by_day[clinic["one_day"]]], "computed_at", "organization_id") == [{
        # The private note is neither a message counted nor an answer; 23:50 the day before is not this day.
        "day": clinic["one_day"], "conversations": 2, "unique_contacts": 2, "messages_in": 2, "messages_out": 1,
        "waits": 2, "median_first_response_seconds": Decimal("3600.0"),
        "p90_first_response_seconds": Decimal("3600.0"), "unanswered": 1,
    }]
    assert len(rows) == 90


def test_the_page_data_reads_the_views_and_the_live_lists(org_a, clinic):
    with bind_organization(org_a):
        dashboard = dashboard_get(organization=org_a)

    assert dashboard.summary.active_patients == 3
    assert len(dashboard.months) == 13
    assert len(dashboard.days) == 30 and dashboard.days[-1].day == clinic["today"]
    assert [f"{c.first_name}" for c in dashboard.lapsing_patients] == ["Lapsing", "Boundary"]
    assert [c.contact_id for c in dashboard.waiting_conversations] == [
        clinic["patients"]["lapsing"].pk, clinic["patients"]["regular"].pk]
    assert dashboard.as_of is not None


def test_before_the_first_refresh_there_are_no_figures(org_a):
    with bind_organization(org_a):
        dashboard = dashboard_get(organization=org_a)

    assert (dashboard.summary, dashboard.months, dashboard.days, dashboard.as_of) == (None, [], [], None)
