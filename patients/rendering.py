"""The patient list's rows as HTML, built in Python.

The list is the portal's busiest page. Rendered by the template engine, its 50 rows cost about 11 ms a request
(some 600 variable lookups, 50 ``{% url %}`` reversals, 100 localised date filters); built here they cost about
0.1 ms, with the same markup. Every value from the database passes through ``html.escape`` (what Django's
``escape`` does); the rest is fixed markup.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from django.urls import reverse
from django.utils import timezone
from django.utils.dates import MONTHS_3
from django.utils.safestring import SafeString, mark_safe

from patients.selectors import PatientRow

ROW = ('<tr><td><a href="{href}">{name}</a></td><td class="hide-sm">{email}</td><td class="hide-sm">{phone}</td>'
       "<td>{last_seen}</td><td>{next}</td><td>{status}</td></tr>")
STATUS_BADGES = {
    "archived": '<span class="badge inactive">Archived</span>',
    "lead": '<span class="badge warn">Lead</span>',
    "active": '<span class="badge">Active</span>',
    "inactive": '<span class="badge inactive">Inactive</span>',
}
NO_DATE = "—"
_SENTINEL = "00000000-0000-0000-0000-000000000000"


def patient_rows_html(patients: list[PatientRow]) -> SafeString:
    """The ``<tr>`` of each patient, as the template's table body."""
    prefix, suffix = reverse("patients:detail", args=[_SENTINEL]).split(_SENTINEL)  # one reversal per page
    months = [""] + [str(MONTHS_3[month]).title() for month in range(1, 13)]  # as the "M" date format shows them
    zone = timezone.get_current_timezone()

    def short_date(value: datetime | None) -> str:  # the "j M Y" date format, in the current time zone
        if value is None:
            return NO_DATE
        local = value.astimezone(zone)
        return f"{local.day} {months[local.month]} {local.year}"

    return mark_safe("".join(  # noqa: S308 - each value from the database is escaped below
        ROW.format(
            href=f"{prefix}{patient.pk}{suffix}",
            name=escape(f"{patient.last_name}, {patient.first_name}"),
            email=escape(patient.email),
            phone=escape(patient.phone_e164 or patient.phone_raw),
            last_seen=short_date(patient.last_appointment_at),
            next=short_date(patient.next_appointment_at),
            status=STATUS_BADGES[status_of(patient)],
        )
        for patient in patients
    ))


def status_of(patient: PatientRow) -> str:
    if patient.archived_at:
        return "archived"
    if patient.cliniko_patient_id is None:
        return "lead"
    return "active" if patient.is_current else "inactive"
