"""Patient pages: thin views over patients.selectors."""

from __future__ import annotations

import uuid

from django.http import Http404
from django.shortcuts import redirect, render

from patients import selectors


def home(request):
    return redirect("patients:list")


def patient_list(request):
    page = selectors.patient_list(organization=request.organization)
    return render(request, "patients/list.html", {"page": page})


def patient_detail(request, patient_id: str):
    try:
        patient_uuid = uuid.UUID(patient_id)
    except ValueError as exc:
        raise Http404("No such patient.") from exc
    contact = selectors.patient_get(organization=request.organization, patient_id=patient_uuid)
    appointments = selectors.patient_appointments(organization=request.organization, contact=contact)
    return render(request, "patients/detail.html", {"patient": contact, "appointments": appointments[:200]})
