"""End to end in a real browser: the sign-in page and the dev sign-in, the patient list, htmx search, the CSV
export of that search, a patient, another clinic's 404, and the same list with JavaScript off.

The portal runs as its own process, as `make run` serves it (routiq/testing/browser_portal.py): committed data
from a subprocess, runserver with the DEBUG dev sign-in, as the app role.
"""

from __future__ import annotations

import csv
import re

import pytest
from playwright.sync_api import expect

from routiq.testing.browser_portal import console_errors, served_portal, sign_in

SEED = """
import json, sys, django
from datetime import timedelta
django.setup()
from django.utils import timezone
from patients.models import Appointment, Contact
from tenants.rls.binding import bind_organization
from tenants.services import membership_upsert, organization_create, user_upsert_from_clerk
run = sys.argv[1]
def clinic(label, people):
    org = organization_create(name=f"Browser {label} {run}", clerk_org_id=f"org_browser_{label}_{run}")
    with bind_organization(org):
        ids = [Contact.objects.create(organization=org, first_name=f, last_name=l, email=f"{f}@example.com").pk
               for f, l in people]
    return org, ids
org, (_, grace, _) = clinic("Home", [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")])
with bind_organization(org):  # her timeline: one of each kind of appointment
    now = timezone.now()
    Appointment.objects.bulk_create([
        Appointment(organization=org, contact_id=grace, cliniko_appointment_id=1, starts_at=now - timedelta(days=9)),
        Appointment(organization=org, contact_id=grace, cliniko_appointment_id=2, starts_at=now - timedelta(days=6),
                    cancelled_at=now - timedelta(days=7)),
        Appointment(organization=org, contact_id=grace, cliniko_appointment_id=3, starts_at=now - timedelta(days=3),
                    did_not_arrive=True)])
user = user_upsert_from_clerk(clerk_user_id=f"user_browser_{run}", first_name="Robin", last_name="Browser")
membership_upsert(organization=org, user=user, role="member")
_, (other,) = clinic("Other", [("Mallory", "Intruder")])
print(json.dumps({"organization": org.name, "other_patient": str(other)}))
"""


@pytest.fixture
def portal(django_db_setup, tmp_path):
    with served_portal(SEED, tmp_path) as served:
        yield served


def patient_names(page):
    return page.locator("#results tbody tr td:first-child")


# The mark makes pytest-django create the test database even when this test runs alone; the test's own
# transaction is unused (the data is committed by the subprocesses).
@pytest.mark.django_db
def test_clinic_thin_slice_in_a_browser(portal, open_page):
    base, facts = portal.base, portal.facts
    page = open_page(portal)
    errors = console_errors(page)
    page.goto(f"{base}/patients/")  # signed out: the sign-in page, then the dev sign-in it offers
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_role("link", name="Development sign-in").click()
    sign_in(page, base, facts["organization"])
    expect(patient_names(page)).to_have_text(["Hopper, Grace", "Lovelace, Ada", "Turing, Alan"])

    # Search as you type: htmx swaps #results in place; a full page load would drop the marker.
    page.evaluate("window.__noReload = true")
    page.fill("#search", "hop")
    expect(patient_names(page)).to_have_text(["Hopper, Grace"])
    expect(page).to_have_url(re.compile(r"/patients/\?.*q=hop"))  # hx-push-url
    assert page.evaluate("window.__noReload") is True, "the search reloaded the page"

    # The export is of what the list shows: the search typed a moment ago, not the list as first loaded.
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert re.fullmatch(r"patients-\d{8}-\d{4}\.csv", download.value.suggested_filename)
    with open(download.value.path(), newline="", encoding="utf-8") as exported:
        rows = list(csv.reader(exported))
    assert [row[:3] for row in rows] == [["first_name", "last_name", "email"], ["Grace", "Hopper", "Grace@example.com"]]

    page.get_by_role("link", name="Hopper, Grace").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Grace Hopper")
    expect(page.locator("ol.timeline li.entry .badge")).to_have_text(["No-show", "Cancelled", "Attended"])
    assert errors == [], errors  # checked before the 404: DEBUG's 404 page has an inline style CSP blocks

    response = page.goto(f"{base}/patients/{facts['other_patient']}/")
    assert response.status == 404
    assert "Mallory" not in page.content() and "Intruder" not in page.content()

    # Without JavaScript the search form is a plain GET form (Enter submits it).
    page = open_page(portal, java_script_enabled=False)
    sign_in(page, base, facts["organization"])
    page.fill("#search", "love")
    page.press("#search", "Enter")
    expect(page).to_have_url(re.compile(r"/patients/\?.*q=love"))
    expect(patient_names(page)).to_have_text(["Lovelace, Ada"])
