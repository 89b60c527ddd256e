"""The dashboard's patient figures as materialized views, in every organization's schema (tenants/rls/matviews.py
says how they keep the second wall: no grant on the materialized views, security-barrier views filtered on
the bound organization, an owner-run refresh that refuses any other organization).

* ``mv_active_patients_summary`` / ``active_patients_summary`` — one row: current patients (Cliniko patients
  neither archived nor deleted; leads are not patients), active ones (active_patients.is_active, the patient
  list's "Active"), new in the last 30 days (by Cliniko's creation time), returning (active with two or more
  appointments attended or booked), active without an upcoming appointment (due for a rebooking: the list's
  "Active, no upcoming appointment"), the average appointments per patient, and over the appointments that
  started in the last 90 days (deleted ones aside, whoever the patient): the no-show rate (did not arrive /
  not cancelled) and the cancellation rate (cancelled / all).
* ``mv_active_patients_monthly`` / ``active_patients_monthly`` — this month and the 12 before, in the
  organization's time zone. Counted over *visits*: appointments attended (not cancelled, not "did not
  arrive", not deleted, already started) of patients not deleted. ``active_patients``: patients with a visit in
  the 90 days up to the month's end (this month: up to now). The cohort: ``patients_seen`` had a visit in
  the month; ``returned_<n>_days`` came back (a later visit) within n days of their last visit that month;
  ``follow_up_complete`` once 90 days have passed since the month's end.

Both carry ``computed_at`` (the refresh's time) for the page's "as of".
"""

from django.db import migrations

from tenants.rls.matviews import (
    drop_materialized_view_sql,
    drop_refresh_function_sql,
    materialized_view_sql,
    own_organization_sql,
    quote_ident,
    refresh_function_sql,
    run_in_schema,
)

REFRESH_FUNCTION = "refresh_patient_metrics"
VIEWS = ["active_patients_summary", "active_patients_monthly"]


def summary_sql(schema: str) -> str:
    s = quote_ident(schema)
    return f"""
WITH org AS ({own_organization_sql(schema)}),
patients AS (
    SELECT coalesce(c.source_created_at, c.created_at) AS added_at, coalesce(ap.is_active, false) AS is_active,
           ap.next_appointment_at, coalesce(ap.appointment_count, 0) AS appointment_count
    FROM org JOIN {s}.contacts c ON c.organization_id = org.id
    LEFT JOIN {s}.active_patients ap ON ap.contact_id = c.id
    WHERE c.cliniko_patient_id IS NOT NULL AND c.archived_at IS NULL AND c.deleted_at IS NULL
),
recent AS (
    SELECT count(*) AS booked,
           count(*) FILTER (WHERE a.cancelled_at IS NOT NULL) AS cancelled,
           count(*) FILTER (WHERE a.cancelled_at IS NULL) AS held,
           count(*) FILTER (WHERE a.cancelled_at IS NULL AND a.did_not_arrive) AS no_shows
    FROM org JOIN {s}.appointments a ON a.organization_id = org.id
    WHERE a.starts_at > now() - interval '90 days' AND a.starts_at <= now() AND a.deleted_at IS NULL
)
SELECT org.id AS organization_id,
       p.total_patients, p.active_patients, p.new_patients_30_days, p.returning_patients,
       p.active_without_upcoming, p.avg_appointments_per_patient,
       recent.booked AS appointments_90_days,
       round(recent.no_shows::numeric / nullif(recent.held, 0), 4) AS no_show_rate,
       round(recent.cancelled::numeric / nullif(recent.booked, 0), 4) AS cancellation_rate,
       now() AS computed_at
FROM org CROSS JOIN recent CROSS JOIN (
    SELECT count(*) AS total_patients,
           count(*) FILTER (WHERE is_active) AS active_patients,
           count(*) FILTER (WHERE added_at > now() - interval '30 days') AS new_patients_30_days,
           count(*) FILTER (WHERE is_active AND appointment_count >= 2) AS returning_patients,
           count(*) FILTER (WHERE is_active AND next_appointment_at IS NULL) AS active_without_upcoming,
           coalesce(round(avg(appointment_count), 2), 0) AS avg_appointments_per_patient
    FROM patients
) p
"""


def monthly_sql(schema: str) -> str:
    # One row per patient and month with a visit (first and last visit that month, the next month's first visit):
    # a hash aggregate and a window over those rows, not over every visit. A patient is active at a month's end
    # when their latest visiting month up to it has its last visit within 90 days of that end: each row answers
    # for its own month and the months before the patient's next visiting month, at most three months on (four
    # months is always more than 90 days), so each (patient, month) is counted once, by an equi-join.
    s = quote_ident(schema)
    return f"""
WITH org AS ({own_organization_sql(schema)}),
months AS (
    SELECT m::date AS month, (m AT TIME ZONE org.time_zone) AS month_start,
           least((m + interval '1 month') AT TIME ZONE org.time_zone, now()) AS month_end,
           (m + interval '1 month') AT TIME ZONE org.time_zone AS full_month_end
    FROM org, generate_series(date_trunc('month', now() AT TIME ZONE org.time_zone) - interval '12 months',
                              date_trunc('month', now() AT TIME ZONE org.time_zone), interval '1 month') AS m
),
visiting_months AS MATERIALIZED (
    SELECT v.contact_id, v.month, v.last_visit,
           lead(v.first_visit) OVER w AS next_visit, lead(v.month) OVER w AS next_month
    FROM (
        SELECT a.contact_id, date_trunc('month', a.starts_at AT TIME ZONE org.time_zone)::date AS month,
               min(a.starts_at) AS first_visit, max(a.starts_at) AS last_visit
        FROM org JOIN {s}.appointments a ON a.organization_id = org.id
        WHERE a.starts_at >= (SELECT min(month_start) FROM months) - interval '90 days' AND a.starts_at <= now()
          AND a.cancelled_at IS NULL AND NOT a.did_not_arrive AND a.deleted_at IS NULL AND a.contact_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM {s}.contacts c WHERE c.id = a.contact_id AND c.deleted_at IS NOT NULL)
        GROUP BY a.contact_id, 2
    ) v
    WINDOW w AS (PARTITION BY v.contact_id ORDER BY v.month)
),
active AS (
    SELECT m.month, count(*) AS active_patients
    FROM visiting_months v
    CROSS JOIN generate_series(0, 3) AS later(n)
    JOIN months m ON m.month = (v.month + later.n * interval '1 month')::date
    WHERE (v.next_month IS NULL OR m.month < v.next_month) AND v.last_visit > m.month_end - interval '90 days'
    GROUP BY m.month
),
cohort AS (
    SELECT month, count(*) AS patients_seen,
           count(*) FILTER (WHERE next_visit <= last_visit + interval '30 days') AS returned_30_days,
           count(*) FILTER (WHERE next_visit <= last_visit + interval '60 days') AS returned_60_days,
           count(*) FILTER (WHERE next_visit <= last_visit + interval '90 days') AS returned_90_days
    FROM visiting_months GROUP BY month
)
SELECT org.id AS organization_id, m.month, coalesce(active.active_patients, 0) AS active_patients,
       coalesce(cohort.patients_seen, 0) AS patients_seen,
       coalesce(cohort.returned_30_days, 0) AS returned_30_days,
       coalesce(cohort.returned_60_days, 0) AS returned_60_days,
       coalesce(cohort.returned_90_days, 0) AS returned_90_days,
       m.full_month_end + interval '90 days' <= now() AS follow_up_complete,
       now() AS computed_at
FROM org CROSS JOIN months m
LEFT JOIN active ON active.month = m.month
LEFT JOIN cohort ON cohort.month = m.month
"""


def forward_sql(schema: str) -> list[str]:
    return [
        *materialized_view_sql(schema, "active_patients_summary", summary_sql(schema), ["organization_id"]),
        *materialized_view_sql(schema, "active_patients_monthly", monthly_sql(schema), ["organization_id", "month"]),
        *refresh_function_sql(schema, REFRESH_FUNCTION, VIEWS),
    ]


def reverse_sql(schema: str) -> list[str]:
    statements = drop_refresh_function_sql(schema, REFRESH_FUNCTION)
    for name in reversed(VIEWS):
        statements += drop_materialized_view_sql(schema, name)
    return statements


class Migration(migrations.Migration):
    dependencies = [("patients", "0008_contact_matching"), ("tenants", "0012_organization_time_zone_retention")]

    operations = [migrations.RunPython(run_in_schema(forward_sql), run_in_schema(reverse_sql))]
