"""The dashboard in a real browser under the portal's Content-Security-Policy: figures, the SVG charts with
their tables, and a link that leads to the filtered patient list."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from routiq.testing.browser_portal import console_errors, served_portal, sign_in

SEED = """
import json, sys, django
from datetime import timedelta
django.setup()
from django.utils import timezone
from patients.dashboard import dashboard_refresh
from patients.models import Appointment, Contact
from patients.services import active_patients_refresh
from tenants.rls.binding import bind_organization
from tenants.services import membership_upsert, organization_create, user_upsert_from_clerk
run = sys.argv[1]
org = organization_create(name=f"Dashboard {run}", clerk_org_id=f"org_dashboard_{run}")
now = timezone.now()
with bind_organization(org):
    for n in range(6):
        person = Contact.objects.create(organization=org, first_name=f"Pat{n}", last_name="Dashboardson",
                                        cliniko_patient_id=n + 1)
        Appointment.objects.create(organization=org, contact=person, cliniko_appointment_id=100 + n,
                                   starts_at=now - timedelta(days=10 + n))
    active_patients_refresh(organization=org)
    dashboard_refresh(organization=org)
user = user_upsert_from_clerk(clerk_user_id=f"user_dashboard_{run}", first_name="Robin", last_name="Browser")
membership_upsert(organization=org, user=user, role="member")
print(json.dumps({"organization": org.name}))
"""


@pytest.mark.django_db
def test_the_dashboard_in_a_browser(tmp_path, open_page):
    with served_portal(SEED, tmp_path) as portal:
        page = open_page(portal)
        errors = console_errors(page)
        sign_in(page, portal.base, portal.facts["organization"])

        page.get_by_role("link", name="RoutIQ").click()
        expect(page).to_have_title("Dashboard · RoutIQ")
        expect(page.locator("svg").first).to_be_visible()
        assert page.locator("svg").count() >= 3
        assert page.locator("table").count() >= 3  # each chart's figures as a table
        expect(page.get_by_text("Patients", exact=True).first).to_be_visible()

        page.get_by_role("link", name="All active patients with nothing booked »").click()
        expect(page).to_have_url(f"{portal.base}/patients/?status=lapsing&sort=last_seen")
        expect(page.locator("#results")).to_contain_text("Dashboardson")
        assert errors == [], errors
