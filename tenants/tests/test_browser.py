"""The clinic admin's pages in a real browser: an admin connects Chatwoot on Integrations, presses "Sync now",
sees the sync's result once a worker has run it, then finds the synced conversation in the inbox, filters it
and replies in its thread (the reply reaches the Chatwoot stand-in); a member sees none of the admin pages.

The harness (routiq/testing/browser_portal.py): committed data from a subprocess, the portal as a runserver
process with the DEBUG dev sign-in, as the app role; the worker is `manage.py rqworker --burst` beside it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from patients.jobs import DASHBOARD_QUEUE
from routiq.jobs import SYNC_QUEUE
from routiq.testing.browser_portal import console_errors, run_jobs, served_portal, sign_in
from routiq.testing.chatwoot_stub import ChatwootStub

TOKEN, ACCOUNT = "browser-chatwoot-token", 7

SEED = """
import json, sys, django
django.setup()
from tenants.services import membership_upsert, organization_create, user_upsert_from_clerk
run = sys.argv[1]
org = organization_create(name=f"Admin Clinic {run}", clerk_org_id=f"org_admin_{run}")
for clerk_id, first, last, role in [("admin", "Robin", "Browser", "admin"), ("member", "Morgan", "Member", "member")]:
    user = user_upsert_from_clerk(clerk_user_id=f"user_{clerk_id}_{run}", first_name=first, last_name=last)
    membership_upsert(organization=org, user=user, role=role)
print(json.dumps({"organization": org.name}))
"""

ADMIN_PAGES = ["/settings/integrations/", "/billing/", "/conversations/matches/"]


@pytest.fixture
def chatwoot():
    with ChatwootStub(api_token=TOKEN, account_id=ACCOUNT, clock=datetime.now(UTC)) as stub:
        contact = stub.add_contact("Priya Singh", email="priya@example.com")
        display_id = stub.add_conversation(contact["id"])["id"]
        stub.add_message(display_id, "Can I move my appointment to Thursday?")
        yield stub


@pytest.fixture
def portal(django_db_setup, tmp_path):
    with served_portal(SEED, tmp_path, {"VENDOR_ALLOW_PRIVATE_NETWORKS": "1"}) as served:
        yield served


@pytest.mark.django_db
def test_an_admin_connects_chatwoot_syncs_now_and_replies_in_a_thread(chatwoot, portal, open_page, empty_queue):
    empty_queue(SYNC_QUEUE)  # the burst worker runs this test's jobs only
    empty_queue(DASHBOARD_QUEUE)  # and the dashboard refresh a sync that changed something schedules goes after it
    page = open_page(portal)
    errors = console_errors(page)
    sign_in(page, portal.base, portal.facts["organization"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Integrations").click()
    card = page.get_by_role("region", name="Chatwoot")
    expect(card).to_contain_text("Not connected.")

    card.get_by_label("API key / token").fill(TOKEN)
    card.get_by_label("Base URL").fill(chatwoot.base_url)
    card.get_by_label("Account id").fill(str(ACCOUNT))
    card.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Chatwoot credential saved.")
    expect(card).to_contain_text(f"Connected with a secret ending in …{TOKEN[-4:]}")
    assert TOKEN not in page.content()  # write-only

    card.get_by_role("button", name="Sync now").click()
    expect(page.get_by_role("status")).to_have_text("Sync queued. Refresh this page to follow it.")
    run_jobs(portal, SYNC_QUEUE)
    page.reload()
    results = card.locator("tbody tr")
    expect(results).to_have_count(3)
    for resource in ("contacts", "conversations", "messages"):
        # Resource, status, started, then fetched and created: one of each came from the stand-in.
        expect(results.filter(has_text=resource).locator("td")).to_contain_text(
            [resource, "Succeeded", re.compile(r"\d"), "1", "1"])

    # The synced conversation in the inbox, found with a filter; a reply in its thread goes to Chatwoot.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Inbox").click()
    page.get_by_label("Contact").select_option("lead")
    # The filtered list is swapped in and its URL pushed; a click before that push would be cancelled by it.
    expect(page).to_have_url(re.compile(r"[?&]contact=lead"))
    conversation = page.locator("#results tbody tr td:first-child a")
    expect(conversation).to_have_text(["Priya Singh"])
    conversation.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Priya Singh")
    page.get_by_role("textbox", name="Message").fill("Thursday 10:30 is free, shall I book it?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_have_text("Reply sent.")
    (thread,) = chatwoot.all_conversations()
    (sent,) = [m for m in chatwoot.messages_of(thread["id"]) if m["message_type"] == 1]
    assert sent["content"] == "Thursday 10:30 is free, shall I book it?"
    page.get_by_role("link", name="contacts waiting to be matched").click()  # a lead's thread offers it to admins
    expect(page.get_by_role("heading", level=1)).to_have_text("Contacts waiting to be matched")
    assert errors == [], errors


@pytest.mark.django_db
def test_a_member_is_refused_the_admin_pages(portal, open_page):
    page = open_page(portal)
    errors = console_errors(page)
    sign_in(page, portal.base, portal.facts["organization"], user="Morgan Member")
    navigation = page.get_by_role("navigation", name="Main")
    expect(navigation.get_by_role("link")).to_have_text(["Patients", "Inbox"])
    for path in ADMIN_PAGES:
        response = page.goto(portal.base + path)
        assert response.status == 403, path
        expect(page.get_by_role("heading", level=1)).to_have_text("No access")
        expect(page.get_by_role("main")).to_contain_text("Only the clinic's admins can open this page.")
    # The platform's Django admin is not the clinic's either: it asks for a staff sign-in.
    page.goto(portal.base + "/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/"))
    expect(page.get_by_role("main")).to_contain_text("not authorised to access this page")
    assert errors == ["Failed to load resource: the server responded with a status of 403 (Forbidden)"] * 3, errors
