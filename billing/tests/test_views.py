"""/billing/: who may open it, what it shows, and the Checkout and Customer Portal redirects against a local
server that speaks Stripe's API (form bodies, Bearer key, Idempotency-Key, error bodies)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from urllib.parse import parse_qs

import pytest

from billing.models import Invoice, Plan
from billing.tests.stripe_events import signed
from routiq.testing.clerk_fixtures import bearer
from routiq.testing.stripe_stub import StripeStub
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
KEY = "sk_test_routiq"
PRICES = {"price_basic": {"unit_amount": 4900, "currency": "aud", "recurring": {"interval": "month"}},
          "price_pro": {"unit_amount": 9900, "currency": "aud", "recurring": {"interval": "month"}}}


@pytest.fixture
def stripe_server(settings):
    with StripeStub(secret_key=KEY, prices=PRICES) as stub:
        settings.STRIPE_SECRET_KEY = KEY
        settings.STRIPE_API_URL = stub.base_url
        settings.STRIPE_MAX_NETWORK_RETRIES = 0
        yield stub


@pytest.fixture
def plans(db):
    return [Plan.objects.create(stripe_price_id="price_basic", name="Basic", amount=4900, features=["Patients"]),
            Plan.objects.create(stripe_price_id="price_pro", name="Pro", amount=9900, sort_order=1),
            Plan.objects.create(stripe_price_id="price_retired", name="Retired", amount=100, is_active=False)]


def form(request) -> dict[str, list[str]]:
    return parse_qs(request.body.decode())


def stripe_posts(stub, path: str) -> list:
    return [r for r in stub.requests if r.method == "POST" and r.path == path]


def test_members_are_refused(client, mint, org_a):
    assert client.get("/billing/", **bearer(mint(org_a, role="member"))).status_code == 403
    assert client.post("/billing/checkout", {"price": "price_basic"},
                       **bearer(mint(org_a, role="member"))).status_code == 403
    assert client.post("/billing/portal", **bearer(mint(org_a, role="member"))).status_code == 403


def test_signed_out_is_sent_to_sign_in(client):
    response = client.get("/billing/")
    assert response.status_code in (302, 401)


def test_the_page_shows_plan_status_renewal_and_the_offered_plans(client, mint, org_a, plans):
    Organization.objects.filter(pk=org_a.pk).update(
        stripe_customer_id="cus_A", stripe_subscription_id="sub_1", stripe_price_id="price_pro",
        subscription_status="active", subscription_current_period_end=datetime(2027, 1, 5, tzinfo=UTC),
        subscription_cancel_at_period_end=True)
    page = client.get("/billing/", **bearer(mint(org_a))).content.decode()
    assert "Pro · AUD 99.00 / monthly" in page
    assert ">Active<" in page
    assert "Ends</dt>" in page and "5 Jan 2027 (cancelled at the end of the period)" in page
    assert "Manage billing" in page
    assert "Retired" not in page


def test_a_trial_organization_sees_its_trial_end_and_subscribe_buttons(client, mint, org_a, plans):
    page = client.get("/billing/", **bearer(mint(org_a))).content.decode()
    assert "Trial ends" in page
    assert "Subscribe to Basic" in page and "Subscribe to Pro" in page
    assert "Manage billing" not in page


def test_subscribe_creates_the_customer_once_then_redirects_to_checkout(client, mint, org_a, plans, stripe_server):
    response = client.post("/billing/checkout", {"price": "price_pro"}, **bearer(mint(org_a)))

    (customer_request,) = stripe_posts(stripe_server, "/v1/customers")
    assert customer_request.headers["Authorization"] == f"Bearer {KEY}"
    assert customer_request.headers["Idempotency-Key"] == f"routiq-customer-{org_a.pk}"
    assert form(customer_request)["metadata[organization_id]"] == [str(org_a.pk)]
    assert form(customer_request)["metadata[clerk_org_id]"] == [org_a.clerk_org_id]
    customer_id = Organization.objects.get(pk=org_a.pk).stripe_customer_id
    assert customer_id.startswith("cus_")
    (checkout_request,) = stripe_posts(stripe_server, "/v1/checkout/sessions")
    body = form(checkout_request)
    assert (body["mode"], body["customer"], body["client_reference_id"], body["line_items[0][price]"],
            body["success_url"], body["cancel_url"]) == (
        ["subscription"], [customer_id], [str(org_a.pk)], ["price_pro"],
        ["http://testserver/billing/?checkout=success"], ["http://testserver/billing/?checkout=cancel"])
    assert response.status_code == 302
    assert response["Location"].startswith(stripe_server.origin + "/checkout/")

    client.post("/billing/checkout", {"price": "price_basic"}, **bearer(mint(org_a)))
    assert len(stripe_posts(stripe_server, "/v1/customers")) == 1  # stored: not asked again
    with bind_organization(org_a):
        actions = list(AuditLog.objects.filter(action__startswith="billing.").values_list("action", flat=True))
    assert actions == ["billing.customer_created", "billing.checkout_started", "billing.checkout_started"]


def test_two_first_subscribes_at_once_make_one_customer(org_a, stripe_server):
    from billing.clients.stripe import BillingStripeClient

    client = BillingStripeClient.from_settings()
    ids = []

    def create():
        ids.append(client.create_customer(organization_id=str(org_a.pk), clerk_org_id=org_a.clerk_org_id,
                                          name=org_a.name))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    assert stripe_server.customers_created == 1


def test_a_price_that_is_not_offered_is_refused_without_calling_stripe(client, mint, org_a, plans, stripe_server):
    for price in ("price_retired", "price_unknown", ""):
        response = client.post("/billing/checkout", {"price": price}, **bearer(mint(org_a)), follow=True)
        assert b"Choose one of the plans on this page." in response.content
    assert stripe_server.requests == []


def test_manage_billing_redirects_to_the_customer_portal(client, mint, org_a, plans, stripe_server):
    client.post("/billing/checkout", {"price": "price_basic"}, **bearer(mint(org_a)))
    response = client.post("/billing/portal", **bearer(mint(org_a)))
    (portal_request,) = stripe_posts(stripe_server, "/v1/billing_portal/sessions")
    assert form(portal_request)["return_url"] == ["http://testserver/billing/"]
    assert form(portal_request)["customer"] == [Organization.objects.get(pk=org_a.pk).stripe_customer_id]
    assert response.status_code == 302
    assert response["Location"].startswith(stripe_server.origin + "/portal/")


@pytest.mark.parametrize(("fault", "message"), [
    ("rate_limit", b"Stripe is busy. Please try again in a minute."),
    ("status", b"Stripe could not do that"),
    ("malformed", b"Stripe could not do that"),
])
def test_a_stripe_error_is_a_clear_message_never_a_500(client, mint, org_a, plans, stripe_server, fault, message):
    stripe_server.queue_faults(fault, count=5)
    response = client.post("/billing/checkout", {"price": "price_basic"}, **bearer(mint(org_a)), follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [("/billing/", 302)]
    assert message in response.content
    assert Organization.objects.get(pk=org_a.pk).stripe_customer_id == ""


def test_a_refused_key_is_a_clear_message(client, mint, org_a, plans, stripe_server, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_wrong"
    response = client.post("/billing/portal", **bearer(mint(org_a)), follow=True)
    assert b"Stripe refused our API key." in response.content


def test_without_a_stripe_key_the_page_says_billing_is_not_set_up(client, mint, org_a, plans, settings):
    settings.STRIPE_SECRET_KEY = ""
    response = client.post("/billing/checkout", {"price": "price_basic"}, **bearer(mint(org_a)), follow=True)
    assert b"Billing is not set up yet" in response.content


def test_invoices_are_the_organizations_own(client, mint, org_a, org_b, plans):
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with bind_organization(org_a):
        Invoice.objects.create(organization=org_a, stripe_invoice_id="in_A", number="A-0001", status="paid",
                               amount_due=4900, currency="aud", invoice_created=now, state_at=now,
                               hosted_invoice_url="https://invoice.stripe.com/i/in_A")
    with bind_organization(org_b):
        Invoice.objects.create(organization=org_b, stripe_invoice_id="in_B", number="B-SECRET-0001",
                               status="paid", amount_due=9900, currency="aud", invoice_created=now, state_at=now)
    page_a = client.get("/billing/", **bearer(mint(org_a))).content.decode()
    assert "A-0001" in page_a and "AUD 49.00" in page_a and 'href="https://invoice.stripe.com/i/in_A"' in page_a
    assert "B-SECRET" not in page_a
    assert "B-SECRET-0001" in client.get("/billing/", **bearer(mint(org_b))).content.decode()


def test_checkout_return_messages(client, mint, org_a, plans):
    assert b"Thank you." in client.get("/billing/?checkout=success", **bearer(mint(org_a))).content
    assert b"nothing was charged" in client.get("/billing/?checkout=cancel", **bearer(mint(org_a))).content


def test_checkout_then_stripes_events_in_its_own_order_make_the_clinic_active(client, mint, org_a, plans, settings):
    """End to end against the stand-in, in the shape stripe 16.1.0's API version sends (no legacy fields)."""
    settings.STRIPE_WEBHOOK_SECRETS = ["whsec_e2e"]
    with StripeStub(secret_key=KEY, prices=PRICES, legacy_fields=False) as stub:
        settings.STRIPE_SECRET_KEY, settings.STRIPE_API_URL, settings.STRIPE_MAX_NETWORK_RETRIES = KEY, stub.base_url, 0
        location = client.post("/billing/checkout", {"price": "price_pro"}, **bearer(mint(org_a)))["Location"]
        events = stub.complete_checkout(location.rsplit("/", 1)[1])
        stub.advance(days=30)  # the renewal a month later fails
        later = stub.invoice_event(events[1]["data"]["object"]["id"], "invoice.payment_failed")
    assert [e["type"] for e in events] == ["checkout.session.completed", "customer.subscription.created",
                                           "invoice.paid"]
    for body in [later, *reversed(events)]:  # the newest first: arrival order must not matter
        assert signed(client, body, secret="whsec_e2e").status_code == 200
    organization = Organization.objects.get(pk=org_a.pk)
    assert (organization.subscription_status, organization.stripe_price_id) == ("past_due", "price_pro")
    assert organization.subscription_current_period_end is not None
    with bind_organization(org_a):
        assert Invoice.objects.count() == 2


def test_a_customer_stripe_no_longer_knows_is_replaced_once(client, mint, org_a, plans, stripe_server):
    Organization.objects.filter(pk=org_a.pk).update(stripe_customer_id="cus_gone")
    response = client.post("/billing/checkout", {"price": "price_basic"}, **bearer(mint(org_a)))
    assert response.status_code == 302 and response["Location"].startswith(stripe_server.origin + "/checkout/")
    (created,) = stripe_posts(stripe_server, "/v1/customers")
    assert created.headers["Idempotency-Key"] == f"routiq-customer-{org_a.pk}-replacing-cus_gone"
    new_id = Organization.objects.get(pk=org_a.pk).stripe_customer_id
    assert new_id.startswith("cus_") and new_id != "cus_gone"
    with bind_organization(org_a):
        (audit,) = AuditLog.objects.filter(action="billing.customer_created")
    assert audit.changes == {"stripe_customer_id": ["cus_gone", new_id]}


def test_the_policy_lets_the_subscribe_form_go_on_to_stripe(client, stripe_server):
    policy = client.get("/sign-in/")["Content-Security-Policy"]
    assert f"form-action 'self' https://checkout.stripe.com https://billing.stripe.com {stripe_server.origin}" in policy


def test_a_customer_id_another_organization_holds_is_refused_not_stored(client, mint, org_a, org_b, plans,
                                                                        stripe_server):
    Organization.objects.filter(pk=org_b.pk).update(stripe_customer_id="cus_00000000000001")  # the stub's first
    response = client.post("/billing/checkout", {"price": "price_basic"}, **bearer(mint(org_a)), follow=True)
    assert response.status_code == 200
    assert b"Stripe answered with another organization&#x27;s customer." in response.content
    assert Organization.objects.get(pk=org_a.pk).stripe_customer_id == ""
    assert stripe_posts(stripe_server, "/v1/checkout/sessions") == []
