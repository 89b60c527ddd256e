"""Billing in a real browser under the portal's Content-Security-Policy: an admin subscribes through the
Stripe stand-in's Checkout page and comes back active; a failed renewal puts the banner on every page."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from routiq.testing.browser_portal import console_errors, served_portal, sign_in
from routiq.testing.stripe_stub import StripeStub

KEY, WEBHOOK_SECRET = "sk_test_browser", "whsec_browser"
PRICES = {"price_browser": {"unit_amount": 4900, "currency": "aud", "recurring": {"interval": "month"}}}

SEED = """
import json, sys, django
django.setup()
from billing.models import Plan
from tenants.services import membership_upsert, organization_create, user_upsert_from_clerk
run = sys.argv[1]
org = organization_create(name=f"Billing {run}", clerk_org_id=f"org_billing_{run}")
user = user_upsert_from_clerk(clerk_user_id=f"user_billing_{run}", first_name="Robin", last_name="Browser")
membership_upsert(organization=org, user=user, role="admin")
Plan.objects.get_or_create(stripe_price_id="price_browser", defaults={"name": "Browser plan", "amount": 4900})
print(json.dumps({"organization": org.name}))
"""


@pytest.mark.django_db
def test_subscribe_in_a_browser_then_a_failed_renewal_shows_the_banner(tmp_path, open_page):
    # Its objects stay committed in the test database: ids of their own keep them from meeting later tests'.
    with StripeStub(secret_key=KEY, prices=PRICES, webhook_secret=WEBHOOK_SECRET, wall_clock=True,
                    id_namespace=f"browser{uuid.uuid4().hex[:8]}") as stripe_server:
        server_settings = {"STRIPE_SECRET_KEY": KEY, "STRIPE_API_URL": stripe_server.base_url,
                           "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "BILLING_GRACE_DAYS": "0",
                           "WEBHOOK_RATE_LIMIT_PER_MINUTE": "10000"}
        with served_portal(SEED, tmp_path, server_settings) as portal:
            stripe_server.webhook_url = f"{portal.base}/webhooks/stripe/"
            page = open_page(portal)
            errors = console_errors(page)
            sign_in(page, portal.base, portal.facts["organization"])

            page.get_by_role("link", name="Billing").click()
            page.get_by_role("button", name="Subscribe to Browser plan").click()
            expect(page).to_have_url(re.compile(re.escape(stripe_server.origin) + r"/checkout/cs_"))
            session_id = page.url.rsplit("/", 1)[1]
            page.get_by_role("button", name="Pay").click()
            expect(page).to_have_url(f"{portal.base}/billing/?checkout=success")
            page.reload()
            expect(page.get_by_test_id("billing-status")).to_have_text("Active")

            (subscription,) = stripe_server.subscriptions_of(stripe_server.checkout_session(session_id)["customer"])
            subscription_id = subscription["id"]
            status, _ = stripe_server.deliver(stripe_server.invoice_event(subscription_id, "invoice.payment_failed"))
            assert status == 200
            page.get_by_role("link", name="Patients").click()
            banner = page.locator(".billing-banner")
            expect(banner).to_contain_text("The last payment failed.")
            expect(banner).to_contain_text("Syncs are paused")
            page.get_by_role("link", name="Update billing").click()
            expect(banner).to_contain_text("The last payment failed.")  # on the billing page too
            assert errors == [], errors
