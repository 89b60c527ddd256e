"""The messaging pages end to end in a real browser: the inbox's live refresh and in-place filters, a thread
with its private note, the timeline's "Older entries" loaded in place — all under the portal's CSP (no inline
script) — and the same pages with JavaScript off.

The harness (routiq/testing/browser_portal.py): committed data from a subprocess, the portal as a runserver
process with the DEBUG dev sign-in, as the app role.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from routiq.testing.browser_portal import ROOT, console_errors, served_portal, sign_in

SEED = """
import json, sys, django
from datetime import timedelta
django.setup()
from django.utils import timezone
from messaging.models import Conversation, Message
from patients.models import Appointment, Contact
from tenants.rls.binding import bind_organization
from tenants.services import membership_upsert, organization_create, user_upsert_from_clerk
run, now = sys.argv[1], timezone.now()
org = organization_create(name=f"Inbox Clinic {run}", clerk_org_id=f"org_inbox_{run}")
user = user_upsert_from_clerk(clerk_user_id=f"user_inbox_{run}", first_name="Robin", last_name="Browser")
membership_upsert(organization=org, user=user, role="member")
with bind_organization(org):
    grace = Contact.objects.create(organization=org, first_name="Grace", last_name="Hopper", cliniko_patient_id=1)
    lead = Contact.objects.create(organization=org, first_name="Lena", last_name="Lead")
    def thread(contact, external_id, texts, channel="Channel::Whatsapp"):
        conversation = Conversation.objects.create(organization=org, contact=contact, provider="chatwoot",
                                                   external_id=external_id, channel=channel)
        for n, (text, private) in enumerate(texts):
            Message.objects.create(organization=org, conversation=conversation, provider="chatwoot",
                                   external_id=f"{external_id}-{n}", direction="outbound" if private else "inbound",
                                   private=private, content=text, sent_at=now - timedelta(minutes=10 - n))
        conversation.last_message_at = now - timedelta(minutes=11 - len(texts))
        conversation.last_message_preview, conversation.message_count = texts[-1][0], len(texts)
        conversation.save()
        return conversation
    grace_thread = thread(grace, "1", [("Can I move Friday?", False), ("Ask about her knee", True)])
    thread(lead, "2", [("Do you do dry needling?", False)], channel="Channel::Instagram")
    Appointment.objects.bulk_create(
        Appointment(organization=org, contact=grace, cliniko_appointment_id=n, starts_at=now - timedelta(days=n))
        for n in range(1, 61))
print(json.dumps({"organization": org.name, "grace": str(grace.pk), "thread": str(grace_thread.pk),
                  "clerk_org_id": org.clerk_org_id}))
"""

LATE_CONVERSATION = """
import sys, django
django.setup()
from django.utils import timezone
from messaging.models import Conversation
from tenants.models import Organization
from tenants.rls.binding import bind_organization
org = Organization.objects.get(clerk_org_id=sys.argv[1])
with bind_organization(org):
    Conversation.objects.create(organization=org, provider="chatwoot", external_id="3", channel="Channel::Email",
                                last_message_at=timezone.now(), last_message_preview="Arrived while you looked",
                                message_count=1)
"""


@pytest.fixture
def portal(django_db_setup, tmp_path):
    with served_portal(SEED, tmp_path) as served:
        yield served


def inbox_contacts(page):
    return page.locator("#results tbody tr td:first-child a")


@pytest.mark.django_db
def test_messaging_pages_in_a_browser(portal, open_page):
    with_javascript(open_page(portal), portal)
    without_javascript(open_page(portal, java_script_enabled=False), portal)


def with_javascript(page, portal) -> None:
    base, facts = portal.base, portal.facts
    errors = console_errors(page)
    sign_in(page, base, facts["organization"])
    page.get_by_role("link", name="Inbox").click()
    expect(inbox_contacts(page)).to_have_text(["Grace Hopper", "Lena Lead"])

    # Filters swap the results in place (no reload) and push the URL.
    page.evaluate("window.__noReload = true")
    page.get_by_label("Contact").select_option("lead")
    expect(inbox_contacts(page)).to_have_text(["Lena Lead"])
    expect(page).to_have_url(re.compile(r"/conversations/\?.*contact=lead"))
    page.get_by_label("Contact").select_option("")
    expect(inbox_contacts(page)).to_have_text(["Grace Hopper", "Lena Lead"])

    # Live refresh: a conversation that arrives now shows up by the next poll (every 15 s), in place.
    late = subprocess.run([sys.executable, "-c", LATE_CONVERSATION, facts["clerk_org_id"]], env=portal.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert late.returncode == 0, late.stderr
    expect(inbox_contacts(page)).to_have_text(["Unknown contact", "Grace Hopper", "Lena Lead"], timeout=25_000)
    assert page.evaluate("window.__noReload") is True, "the inbox reloaded instead of swapping its results"

    # The thread: the private note is marked.
    inbox_contacts(page).filter(has_text="Grace Hopper").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Grace Hopper")
    expect(page.locator("li.message.private")).to_contain_text("Private note")
    expect(page.locator("li.message.private")).to_contain_text("Ask about her knee")

    # The timeline: "Older entries" loads the next page in place of the link.
    page.goto(f"{base}/patients/{facts['grace']}/")
    entries = page.locator("ol.timeline li.entry")
    expect(entries).to_have_count(50)
    page.evaluate("window.__noReload = true")
    page.get_by_role("link", name="Older entries").click()
    expect(entries).to_have_count(62)  # 60 appointments and 2 messages
    expect(page.get_by_role("link", name="Older entries")).to_have_count(0)
    assert page.evaluate("window.__noReload") is True, "Older entries reloaded the page"
    assert errors == [], errors


def without_javascript(page, portal) -> None:
    base, facts = portal.base, portal.facts
    sign_in(page, base, facts["organization"])
    page.goto(f"{base}/conversations/")
    page.get_by_label("Contact").select_option("lead")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"/conversations/\?.*contact=lead"))
    expect(inbox_contacts(page)).to_have_text(["Unknown contact", "Lena Lead"])  # no contact yet: not a patient

    page.goto(f"{base}/patients/{facts['grace']}/")
    expect(page.locator("ol.timeline li.entry")).to_have_count(50)
    # The reply box is a plain POST form with its CSRF token (this clinic has not connected Chatwoot).
    page.get_by_role("textbox", name="Message").fill("See you Friday")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_have_text("Chatwoot is not connected for this clinic.")
    expect(page).to_have_url(f"{base}/patients/{facts['grace']}/#timeline")
    page.get_by_role("link", name="Older entries").click()  # a plain link to the next page
    expect(page.locator("ol.timeline li.entry")).to_have_count(12)
    page.get_by_role("link", name="Messages").click()
    expect(page.locator("ol.timeline li.entry")).to_have_count(1)  # the note is under "Private notes"
