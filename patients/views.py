"""Patient pages: thin views over patients.selectors; every patient view is audited."""

from __future__ import annotations

import csv
import uuid

from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from messaging import selectors as messaging_selectors
from patients import charts, selectors
from patients.dashboard import dashboard_get
from patients.rendering import patient_rows_html
from patients.selectors import SORTS, STATUSES, PatientQuery, clean_search
from tenants.audit import audit_record
from tenants.credentials import credential_get

CSV_COLUMNS = ["first_name", "last_name", "email", "phone", "date_of_birth", "last_appointment", "next_appointment",
               "active", "archived"]


@require_GET
def home(request):
    """The clinic dashboard: headline numbers, the trend of active patients, the return cohorts, the last 30
    days of conversations and the lists that need action (patients/dashboard.py)."""
    dashboard = dashboard_get(organization=request.organization)
    months, days = dashboard.months, dashboard.days
    minutes = [None if d.median_first_response_seconds is None else float(d.median_first_response_seconds) / 60
               for d in days]
    p90_minutes = [None if d.p90_first_response_seconds is None else float(d.p90_first_response_seconds) / 60
                   for d in days]
    context = {
        "dashboard": dashboard,
        "time_zone": dashboard.time_zone.key,
        "trend_chart": charts.chart([m.month.strftime("%b %y") for m in months],
                                    lines={"active": [m.active_patients for m in months]}),
        "conversations_chart": charts.chart([d.day.strftime("%-d %b") for d in days],
                                            bars=[d.conversations for d in days], every_nth_label=7),
        "response_chart": charts.chart([d.day.strftime("%-d %b") for d in days],
                                       lines={"median": minutes, "p90": p90_minutes}, every_nth_label=7),
        "totals": {
            "conversations": sum(d.conversations for d in days),
            "messages_in": sum(d.messages_in for d in days),
            "messages_out": sum(d.messages_out for d in days),
            "unanswered": sum(d.unanswered for d in days),
        },
    }
    return render(request, "patients/dashboard.html", context)


@require_GET
def patient_list(request):
    query = PatientQuery.from_params(request.GET)
    page = selectors.patient_list(organization=request.organization, query=query)
    context = {
        "page": page,
        "rows": patient_rows_html(page.patients),
        "statuses": STATUSES,
        "sorts": {key: sort.label for key, sort in SORTS.items()},
        # Only the empty state needs it: no credential query on the (hot) non-empty list.
        "has_cliniko": bool(page.patients)
        or credential_get(organization=request.organization, provider="cliniko") is not None,
    }
    template = "patients/_results.html" if request.htmx else "patients/list.html"
    return render(request, template, context)


@require_GET
def patient_export(request):
    query = PatientQuery.from_params(request.GET)
    audit_record(
        action="patients.exported", organization=request.organization, actor=request.user, object_type="contact",
        request=request, changes={"search": query.search, "status": query.status, "sort": query.sort},
    )
    rows = selectors.patient_list_all(organization=request.organization, query=query)
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="patients-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


class Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(patients):
    writer = csv.writer(Echo())
    yield writer.writerow(CSV_COLUMNS)
    for patient in patients:
        yield writer.writerow([
            safe_cell(patient.first_name), safe_cell(patient.last_name), safe_cell(patient.email),
            safe_cell(patient.phone_e164 or patient.phone_raw), patient.date_of_birth or "",
            patient.last_appointment_at.isoformat() if patient.last_appointment_at else "",
            patient.next_appointment_at.isoformat() if patient.next_appointment_at else "",
            "yes" if patient.is_current else "no", "yes" if patient.archived_at else "no",
        ])


FORMULA_STARTS = ("=", "+", "-", "@")


def safe_cell(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection; OWASP): vendor data is not trusted. Spreadsheets skip
    leading blanks and line breaks before a formula (a space or a newline, then "=1+1"), so the first non-whitespace
    character decides; a cell that starts with a tab or carriage return is quoted too."""
    if not value:
        return value
    if value.startswith(("\t", "\r")) or value.lstrip().startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


@require_GET
def patient_detail(request, patient_id: str):
    """The patient and their unified timeline: appointments and messages of every channel, newest first."""
    try:
        patient_uuid = uuid.UUID(patient_id)
    except ValueError as exc:
        raise Http404("No such patient.") from exc
    organization = request.organization
    contact = selectors.patient_get(organization=organization, patient_id=patient_uuid)
    now = timezone.now()
    timeline = messaging_selectors.timeline_page(organization=organization, contact=contact,
                                                 kind=request.GET.get("kind", "all"),
                                                 after=request.GET.get("after"), now=now)
    audit_record(
        action="patient.viewed", organization=organization, actor=request.user, object_type="contact",
        object_id=contact.pk, request=request,
    )
    context = {"patient": contact, "timeline": timeline, "kinds": messaging_selectors.TIMELINE_KINDS}
    if request.htmx:  # "Older" loaded in place: only the next entries
        return render(request, "messaging/_timeline.html", context)
    search = clean_search(request.GET.get("q", ""))
    context.update({
        "search": search,
        "hits": messaging_selectors.timeline_search(organization=organization, contact=contact, search=search)
        if search else None,
        "reply_to": messaging_selectors.latest_conversation(organization=organization, contact=contact),
    })
    return render(request, "patients/detail.html", context)
