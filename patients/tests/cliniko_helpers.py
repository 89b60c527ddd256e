"""Helpers for the Cliniko sync tests: runs of the sync, and the database compared with the stand-in's data."""

from __future__ import annotations

from datetime import datetime

from patients.models import Appointment, Contact
from patients.sync import sync_cliniko
from tenants.rls.binding import bind_organization


def run(organization, client, resource="patients", **kwargs):
    with bind_organization(organization):
        return sync_cliniko(organization=organization, resource=resource, client=client, **kwargs)


def synced_patients(organization) -> dict[int | None, Contact]:
    with bind_organization(organization):
        return {c.cliniko_patient_id: c for c in Contact.objects.filter(deleted_at__isnull=True)}


def assert_database_equals_server(organization, stub, *, skipped: frozenset[int] = frozenset(),
                                  lagging: frozenset[int] = frozenset()):
    """Every live and archived patient is a contact with the same names, email and archived state, nothing
    else is; a deleted patient is a soft-deleted contact or was never one. ``skipped``: poison records the sync
    must have left out; ``lagging``: patients changed during the last run, left out of the comparison."""
    server = {int(p["id"]): p for p in stub.all_patients() if int(p["id"]) not in skipped | lagging}
    local = {cliniko_id: c for cliniko_id, c in synced_patients(organization).items() if cliniko_id not in lagging}
    assert set(local) == set(server)
    for cliniko_id, patient in server.items():
        contact = local[cliniko_id]
        assert (contact.first_name, contact.last_name, contact.email) == (
            patient["first_name"] or "", patient["last_name"] or "", patient["email"] or ""
        )
        assert (contact.archived_at is not None) == (patient["archived_at"] is not None)
    deleted = {int(p["id"]) for p in stub.all_patients(include_deleted=True) if p["deleted_at"]}
    with bind_organization(organization):
        gone = set(Contact.objects.filter(deleted_at__isnull=False).exclude(cliniko_patient_id__in=lagging)
                   .values_list("cliniko_patient_id", flat=True))
        rows = Contact.objects.exclude(cliniko_patient_id__in=lagging).count()
    assert rows == len(local) + len(gone)  # one row per Cliniko id
    assert gone <= deleted - lagging
    assert not skipped & (set(local) | gone)


def assert_appointments_equal_server(organization, stub, *, lagging: frozenset[int] = frozenset()):
    """Every live and cancelled appointment is a row with the same start, cancelled state and notes, linked
    to its patient's contact, once; nothing else is; a deleted one is soft-deleted or was never stored.
    ``lagging``: appointments changed during the last run, left out of the comparison."""
    server = {int(a["id"]): a for a in stub.all_appointments() if int(a["id"]) not in lagging}
    with bind_organization(organization):
        rows = list(Appointment.objects.exclude(cliniko_appointment_id__in=lagging).select_related("contact"))
    local = {row.cliniko_appointment_id: row for row in rows if row.deleted_at is None}
    assert set(local) == set(server)
    for cliniko_id, appointment in server.items():
        row = local[cliniko_id]
        assert row.starts_at == datetime.fromisoformat(appointment["starts_at"].replace("Z", "+00:00"))
        assert (row.cancelled_at is not None) == (appointment["cancelled_at"] is not None)
        assert row.notes == (appointment["notes"] or "")
        patient_id = int(appointment["patient"]["links"]["self"].rsplit("/", 1)[1])
        assert row.contact is not None
        assert (row.cliniko_patient_id, row.contact.cliniko_patient_id) == (patient_id, patient_id)
    deleted = {int(a["id"]) for a in stub.all_appointments(include_deleted=True) if a["deleted_at"]}
    gone = [row.cliniko_appointment_id for row in rows if row.deleted_at is not None]
    assert len(gone) == len(set(gone)) and set(gone) <= deleted
