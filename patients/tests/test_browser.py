"""End to end in a real browser: dev sign-in, the patient list, htmx search, a patient, another clinic's 404,
and the same list with JavaScript off.

The portal runs as its own process, as `make run` serves it (routiq/testing/browser_portal.py): committed data
from a subprocess, runserver with the DEBUG dev sign-in, as the app role.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from routiq.testing.browser_portal import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CHROMIUM_MISSING,
    console_errors,
    served_portal,
    sign_in,
)

SEED = """
import json, sys, django
django.setup()
from patients.models import Contact
from tenants.rls.binding import bind_organization
from tenants.services import membership_upsert, organization_create, user_upsert_from_clerk
run = sys.argv[1]
def clinic(label, people):
    org = organization_create(name=f"Browser {label} {run}", clerk_org_id=f"org_browser_{label}_{run}")
    with bind_organization(org):
        ids = [Contact.objects.create(organization=org, first_name=f, last_name=l, email=f"{f}@example.com").pk
               for f, l in people]
    return org, ids
org, _ = clinic("Home", [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")])
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
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=CHROMIUM_MISSING)
def test_clinic_thin_slice_in_a_browser(portal):
    base, facts, log = portal.base, portal.facts, portal.log
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            drive(browser, base, facts)
        except BaseException:
            print(f"--- portal output ---\n{log.read_text()}")  # pytest shows it with the failure
            raise
        finally:
            browser.close()


def drive(browser, base: str, facts: dict) -> None:
    page = browser.new_page()
    page.set_default_timeout(10_000)
    errors = console_errors(page)
    sign_in(page, base, facts["organization"])
    expect(patient_names(page)).to_have_text(["Hopper, Grace", "Lovelace, Ada", "Turing, Alan"])

    # Search as you type: htmx swaps #results in place; a full page load would drop the marker.
    page.evaluate("window.__noReload = true")
    page.fill("#search", "hop")
    expect(patient_names(page)).to_have_text(["Hopper, Grace"])
    expect(page).to_have_url(re.compile(r"/patients/\?.*q=hop"))  # hx-push-url
    assert page.evaluate("window.__noReload") is True, "the search reloaded the page"

    page.get_by_role("link", name="Hopper, Grace").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Grace Hopper")
    assert errors == [], errors  # checked before the 404: DEBUG's 404 page has an inline style CSP blocks

    response = page.goto(f"{base}/patients/{facts['other_patient']}/")
    assert response.status == 404
    assert "Mallory" not in page.content() and "Intruder" not in page.content()
    page.context.close()

    # Without JavaScript the search form is a plain GET form (Enter submits it).
    page = browser.new_context(java_script_enabled=False).new_page()
    page.set_default_timeout(10_000)
    sign_in(page, base, facts["organization"])
    page.fill("#search", "love")
    page.press("#search", "Enter")
    expect(page).to_have_url(re.compile(r"/patients/\?.*q=love"))
    expect(patient_names(page)).to_have_text(["Lovelace, Ada"])
    page.context.close()
