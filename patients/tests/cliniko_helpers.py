"""Helpers for the Cliniko sync tests: runs of the sync, and the database compared with the stand-in's data."""

from __future__ import annotations

from patients.models import Contact
from patients.sync import sync_cliniko
from tenants.rls.binding import bind_organization


def run(organization, client, resource="patients", **kwargs):
    with bind_organization(organization):
        return sync_cliniko(organization=organization, resource=resource, client=client, **kwargs)


def synced_patients(organization) -> dict[int, Contact]:
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
