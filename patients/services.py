"""Writes of patient data. The sync's writes are one set-based statement per page: a multi-row
INSERT … ON CONFLICT on the Cliniko id that skips rows whose values did not change (no dead tuples, no
trigger work) and reports which rows it inserted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection

from patients.cliniko_records import AppointmentRow, PatientRow, Tombstone
from routiq.sync import WriteCounts  # one counts type for every vendor's writes
from tenants.models import Organization
from tenants.rls.binding import require_organization_id


def _bound(organization: Organization) -> str:
    bound = require_organization_id()
    if bound != str(organization.pk):
        raise RuntimeError("The organization written to must be the bound one.")
    return bound


def column_arrays(rows: Sequence, columns: dict[str, str]) -> dict[str, list]:
    """One array parameter per column: the page becomes a single INSERT … SELECT FROM unnest(…)."""
    return {param: [getattr(row, attribute) for row in rows] for param, attribute in columns.items()}


CONTACT_COLUMNS = {"ids": "cliniko_id", "first_names": "first_name", "last_names": "last_name", "emails": "email",
                   "phones": "phone_raw", "e164s": "phone_e164", "births": "date_of_birth",
                   "created": "created_at", "updated": "updated_at", "archived": "archived_at"}
APPOINTMENT_COLUMNS = {"ids": "cliniko_id", "patient_ids": "patient_id", "starts": "starts_at", "ends": "ends_at",
                       "cancelled": "cancelled_at", "reasons": "cancellation_reason", "dna": "did_not_arrive",
                       "arrived": "patient_arrived", "notes": "notes", "created": "created_at",
                       "updated": "updated_at", "archived": "archived_at"}


def unique_last(rows: Sequence, key=lambda row: row.cliniko_id) -> list:
    """One row per Cliniko id, the last one winning: ON CONFLICT cannot touch a row twice in one statement."""
    return list({key(row): row for row in rows}.values())


CONTACTS_UPSERT = """
INSERT INTO contacts AS c (
    id, organization_id, cliniko_patient_id, first_name, last_name, email, phone_raw, phone_e164, date_of_birth,
    source_created_at, source_updated_at, archived_at, deleted_at, is_active, created_at, updated_at)
SELECT gen_random_uuid(), %(organization_id)s, r.cliniko_id, r.first_name, r.last_name, r.email, r.phone_raw,
       r.phone_e164, r.date_of_birth, r.created_at, r.updated_at, r.archived_at, NULL, true, now(), now()
FROM unnest(%(ids)s::bigint[], %(first_names)s::text[], %(last_names)s::text[], %(emails)s::text[],
            %(phones)s::text[], %(e164s)s::text[], %(births)s::date[], %(created)s::timestamptz[],
            %(updated)s::timestamptz[], %(archived)s::timestamptz[])
     AS r(cliniko_id, first_name, last_name, email, phone_raw, phone_e164, date_of_birth, created_at, updated_at,
          archived_at)
ON CONFLICT (organization_id, cliniko_patient_id) WHERE cliniko_patient_id IS NOT NULL DO UPDATE SET
    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, email = EXCLUDED.email,
    phone_raw = EXCLUDED.phone_raw, phone_e164 = EXCLUDED.phone_e164, date_of_birth = EXCLUDED.date_of_birth,
    source_created_at = EXCLUDED.source_created_at, source_updated_at = EXCLUDED.source_updated_at,
    archived_at = EXCLUDED.archived_at, deleted_at = NULL, is_active = true, updated_at = now()
WHERE (c.first_name, c.last_name, c.email, c.phone_raw, c.phone_e164, c.date_of_birth, c.source_updated_at,
       c.archived_at, c.deleted_at)
      IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.email, EXCLUDED.phone_raw,
       EXCLUDED.phone_e164, EXCLUDED.date_of_birth, EXCLUDED.source_updated_at, EXCLUDED.archived_at, NULL)
RETURNING c.id, (c.xmax = 0) AS inserted, c.archived_at IS NOT NULL AS archived
"""

# Appointments whose patient arrived after them (or in a later page) are linked once the contact exists.
LINK_APPOINTMENTS = """
UPDATE appointments a SET contact_id = c.id, updated_at = now()
FROM contacts c
WHERE c.organization_id = %(organization_id)s AND c.id = ANY(%(contact_ids)s::uuid[])
  AND a.organization_id = c.organization_id AND a.contact_id IS NULL
  AND a.cliniko_patient_id = c.cliniko_patient_id
RETURNING a.contact_id
"""


def contacts_upsert_from_cliniko(*, organization: Organization, rows: Sequence[PatientRow]) -> WriteCounts:
    organization_id = _bound(organization)
    rows = unique_last(rows)
    counts = WriteCounts()
    if not rows:
        return counts
    params: dict[str, Any] = {"organization_id": organization_id, **column_arrays(rows, CONTACT_COLUMNS)}
    with connection.cursor() as cursor:
        cursor.execute(CONTACTS_UPSERT, params)
        written = cursor.fetchall()
        inserted = [contact_id for contact_id, was_inserted, _ in written if was_inserted]
        counts.created = len(inserted)
        counts.updated = len(written) - counts.created
        counts.archived = sum(1 for _, _, archived in written if archived)
        if inserted:
            cursor.execute(LINK_APPOINTMENTS, {"organization_id": organization_id, "contact_ids": inserted})
            counts.contact_ids.update(contact_id for (contact_id,) in cursor.fetchall())
    return counts


CONTACTS_TOMBSTONES = """
UPDATE contacts c SET deleted_at = t.deleted_at, is_active = false, updated_at = now()
FROM unnest(%(ids)s::bigint[], %(deleted)s::timestamptz[]) AS t(cliniko_id, deleted_at)
WHERE c.organization_id = %(organization_id)s AND c.cliniko_patient_id = t.cliniko_id
  AND c.deleted_at IS DISTINCT FROM t.deleted_at
RETURNING c.id
"""


def contacts_mark_deleted(*, organization: Organization, tombstones: Sequence[Tombstone]) -> WriteCounts:
    """Soft delete: the row stays (history, audit), hidden from lists."""
    return WriteCounts(archived=len(apply_tombstones(CONTACTS_TOMBSTONES, organization, tombstones)))


APPOINTMENTS_UPSERT = """
INSERT INTO appointments AS a (
    organization_id, cliniko_appointment_id, cliniko_patient_id, contact_id, starts_at, ends_at, cancelled_at,
    cancellation_reason, did_not_arrive, patient_arrived, notes, source_created_at, source_updated_at,
    archived_at, deleted_at, created_at, updated_at)
SELECT %(organization_id)s, r.cliniko_id, r.patient_id, ct.id, r.starts_at, r.ends_at, r.cancelled_at,
       r.cancellation_reason, r.did_not_arrive, r.patient_arrived, r.notes, r.created_at, r.updated_at,
       r.archived_at, NULL, now(), now()
FROM unnest(%(ids)s::bigint[], %(patient_ids)s::bigint[], %(starts)s::timestamptz[], %(ends)s::timestamptz[],
            %(cancelled)s::timestamptz[], %(reasons)s::smallint[], %(dna)s::boolean[], %(arrived)s::boolean[],
            %(notes)s::text[], %(created)s::timestamptz[], %(updated)s::timestamptz[], %(archived)s::timestamptz[])
     AS r(cliniko_id, patient_id, starts_at, ends_at, cancelled_at, cancellation_reason, did_not_arrive,
          patient_arrived, notes, created_at, updated_at, archived_at)
LEFT JOIN contacts ct ON ct.organization_id = %(organization_id)s AND ct.cliniko_patient_id = r.patient_id
ON CONFLICT (organization_id, cliniko_appointment_id) DO UPDATE SET
    cliniko_patient_id = EXCLUDED.cliniko_patient_id, contact_id = coalesce(EXCLUDED.contact_id, a.contact_id),
    starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, cancelled_at = EXCLUDED.cancelled_at,
    cancellation_reason = EXCLUDED.cancellation_reason, did_not_arrive = EXCLUDED.did_not_arrive,
    patient_arrived = EXCLUDED.patient_arrived, notes = EXCLUDED.notes,
    source_created_at = EXCLUDED.source_created_at, source_updated_at = EXCLUDED.source_updated_at,
    archived_at = EXCLUDED.archived_at, deleted_at = NULL, updated_at = now()
WHERE (a.cliniko_patient_id, a.contact_id, a.starts_at, a.ends_at, a.cancelled_at, a.cancellation_reason,
       a.did_not_arrive, a.patient_arrived, a.notes, a.source_updated_at, a.archived_at, a.deleted_at)
      IS DISTINCT FROM (EXCLUDED.cliniko_patient_id, coalesce(EXCLUDED.contact_id, a.contact_id),
       EXCLUDED.starts_at, EXCLUDED.ends_at, EXCLUDED.cancelled_at, EXCLUDED.cancellation_reason,
       EXCLUDED.did_not_arrive, EXCLUDED.patient_arrived, EXCLUDED.notes, EXCLUDED.source_updated_at,
       EXCLUDED.archived_at, NULL)
RETURNING a.contact_id, (a.xmax = 0) AS inserted, a.cancelled_at IS NOT NULL AS cancelled
"""


def appointments_upsert_from_cliniko(*, organization: Organization, rows: Sequence[AppointmentRow]) -> WriteCounts:
    organization_id = _bound(organization)
    rows = unique_last(rows)
    counts = WriteCounts()
    if not rows:
        return counts
    params: dict[str, Any] = {"organization_id": organization_id, **column_arrays(rows, APPOINTMENT_COLUMNS)}
    with connection.cursor() as cursor:
        cursor.execute(APPOINTMENTS_UPSERT, params)
        for contact_id, inserted, cancelled in cursor.fetchall():
            counts.created += inserted
            counts.updated += not inserted
            counts.archived += cancelled
            if contact_id is not None:
                counts.contact_ids.add(contact_id)
    return counts


APPOINTMENTS_TOMBSTONES = """
UPDATE appointments a SET deleted_at = t.deleted_at, updated_at = now()
FROM unnest(%(ids)s::bigint[], %(deleted)s::timestamptz[]) AS t(cliniko_id, deleted_at)
WHERE a.organization_id = %(organization_id)s AND a.cliniko_appointment_id = t.cliniko_id
  AND a.deleted_at IS DISTINCT FROM t.deleted_at
RETURNING a.contact_id
"""


def appointments_mark_deleted(*, organization: Organization, tombstones: Sequence[Tombstone]) -> WriteCounts:
    returned = apply_tombstones(APPOINTMENTS_TOMBSTONES, organization, tombstones)
    return WriteCounts(archived=len(returned),
                       contact_ids={contact_id for (contact_id,) in returned if contact_id is not None})


def apply_tombstones(sql: str, organization: Organization, tombstones: Sequence[Tombstone]) -> list[tuple]:
    """Run a tombstone UPDATE for one page; returns the rows it changed (already-deleted rows are skipped)."""
    organization_id = _bound(organization)
    tombstones = unique_last(tombstones)
    if not tombstones:
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, {"organization_id": organization_id, "ids": [t.cliniko_id for t in tombstones],
                             "deleted": [t.deleted_at for t in tombstones]})
        return cursor.fetchall()


# One pass over the appointments grouped by contact (a hash aggregate, not a lookup per contact), then the
# contacts joined to it; rows whose numbers did not change are not rewritten.
ACTIVE_PATIENTS_REFRESH = """
WITH kept AS (
    SELECT a.contact_id, a.starts_at, a.did_not_arrive, a.cancelled_at,
           a.cancelled_at IS NULL AND NOT a.did_not_arrive AS attended_or_booked
    FROM appointments a
    WHERE a.organization_id = %(organization_id)s AND a.contact_id IS NOT NULL AND a.deleted_at IS NULL
      {appointment_filter}
), summary AS (
    SELECT contact_id,
           max(starts_at) FILTER (WHERE attended_or_booked AND starts_at <= now()) AS last_at,
           min(starts_at) FILTER (WHERE attended_or_booked AND starts_at > now()) AS next_at,
           count(*) FILTER (WHERE attended_or_booked) AS total,
           count(*) FILTER (WHERE attended_or_booked AND starts_at BETWEEN now() - interval '30 days' AND now())
               AS last_30,
           count(*) FILTER (WHERE attended_or_booked AND starts_at BETWEEN now() - interval '90 days' AND now())
               AS last_90,
           count(*) FILTER (WHERE did_not_arrive) AS no_shows,
           count(*) FILTER (WHERE cancelled_at IS NOT NULL) AS cancellations
    FROM kept GROUP BY contact_id
)
INSERT INTO active_patients AS ap (
    contact_id, organization_id, last_appointment_at, next_appointment_at, appointment_count,
    appointments_last_30_days, appointments_last_90_days, no_show_count, cancellation_count, is_active,
    created_at, updated_at)
SELECT c.id, c.organization_id, s.last_at, s.next_at, coalesce(s.total, 0), coalesce(s.last_30, 0),
       coalesce(s.last_90, 0), coalesce(s.no_shows, 0), coalesce(s.cancellations, 0),
       coalesce(s.last_at >= now() - make_interval(days => %(window_days)s) OR s.next_at IS NOT NULL, false),
       now(), now()
FROM contacts c
LEFT JOIN summary s ON s.contact_id = c.id
WHERE c.organization_id = %(organization_id)s {contact_filter}
ON CONFLICT (contact_id) DO UPDATE SET
    last_appointment_at = EXCLUDED.last_appointment_at, next_appointment_at = EXCLUDED.next_appointment_at,
    appointment_count = EXCLUDED.appointment_count, appointments_last_30_days = EXCLUDED.appointments_last_30_days,
    appointments_last_90_days = EXCLUDED.appointments_last_90_days, no_show_count = EXCLUDED.no_show_count,
    cancellation_count = EXCLUDED.cancellation_count, is_active = EXCLUDED.is_active, updated_at = now()
WHERE (ap.last_appointment_at, ap.next_appointment_at, ap.appointment_count, ap.appointments_last_30_days,
       ap.appointments_last_90_days, ap.no_show_count, ap.cancellation_count, ap.is_active)
      IS DISTINCT FROM (EXCLUDED.last_appointment_at, EXCLUDED.next_appointment_at, EXCLUDED.appointment_count,
       EXCLUDED.appointments_last_30_days, EXCLUDED.appointments_last_90_days, EXCLUDED.no_show_count,
       EXCLUDED.cancellation_count, EXCLUDED.is_active)
"""


def active_patients_refresh(*, organization: Organization, contact_ids: Iterable[UUID] | None = None) -> int:
    """Recompute the appointment summary of the given contacts (all when None) in one statement."""
    organization_id = _bound(organization)
    params: dict[str, Any] = {"organization_id": organization_id, "window_days": settings.ACTIVE_PATIENT_WINDOW_DAYS}
    contact_filter = appointment_filter = ""
    if contact_ids is not None:
        params["contact_ids"] = list(contact_ids)
        if not params["contact_ids"]:
            return 0
        contact_filter = "AND c.id = ANY(%(contact_ids)s::uuid[])"
        appointment_filter = "AND a.contact_id = ANY(%(contact_ids)s::uuid[])"
    sql = ACTIVE_PATIENTS_REFRESH.format(contact_filter=contact_filter, appointment_filter=appointment_filter)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
