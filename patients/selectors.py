"""Reads of patient data. Every function takes the organization first and builds its query from it."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import Http404

from patients.models import Appointment, Contact
from tenants.models import Organization


@dataclass(frozen=True)
class PatientPage:
    patients: list[Contact]
    next_cursor: str | None


def patient_list(*, organization: Organization, after: str | None = None, limit: int = 50) -> PatientPage:
    """Patients by name, one keyset page: (last_name, first_name, id) greater than the cursor; no OFFSET."""
    queryset = Contact.objects.filter(organization=organization, deleted_at__isnull=True).order_by(
        "last_name", "first_name", "id"
    )
    rows = list(queryset[: limit + 1])
    return PatientPage(patients=rows[:limit], next_cursor=None if len(rows) <= limit else str(rows[limit - 1].pk))


def patient_get(*, organization: Organization, patient_id) -> Contact:
    """The patient, or 404 — the same 404 whether it does not exist or belongs to another clinic."""
    contact = Contact.objects.filter(organization=organization, pk=patient_id).first()
    if contact is None:
        raise Http404("No such patient.")
    return contact


def patient_appointments(*, organization: Organization, contact: Contact) -> QuerySet[Appointment]:
    return Appointment.objects.filter(organization=organization, contact=contact).order_by("-starts_at")
