"""POST /webhooks/stripe/: signatures, store-once, out-of-order events, failures, and which clinic an event reaches."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from billing.models import Invoice, StripeEvent
from billing.tests.stripe_events import BASE_TIME, event, invoice, signed, subscription
from routiq.testing.stripe_stub import sign_payload
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization, platform_access

pytestmark = pytest.mark.django_db
SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"


@pytest.fixture(autouse=True)
def stripe_settings(settings):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET, OLD_SECRET]
    settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300


@pytest.fixture
def customer_a(org_a):
    Organization.objects.filter(pk=org_a.pk).update(stripe_customer_id="cus_A")
    return "cus_A"


@pytest.fixture
def customer_b(org_b):
    Organization.objects.filter(pk=org_b.pk).update(stripe_customer_id="cus_B")
    return "cus_B"


def all_events() -> list[StripeEvent]:
    """Every event this module's tests made (a browser test's committed events have other ids)."""
    with platform_access("test: every stored event"):
        return list(StripeEvent.objects.filter(id__startswith="evt_test_").order_by("received_at"))


def billing_audit(organization) -> list[AuditLog]:
    with bind_organization(organization):
        return list(AuditLog.objects.filter(action__startswith="billing.").order_by("id"))


def reloaded(organization) -> Organization:
    return Organization.objects.get(pk=organization.pk)


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


# -- verification ---------------------------------------------------------------------------------------
def test_a_bad_signature_is_400_and_nothing_is_stored(client, customer_a):
    body = event("customer.subscription.updated", subscription(customer_a))
    response = signed(client, body, secret="whsec_somebody_else")
    assert response.status_code == 400
    assert all_events() == []


def test_a_tampered_body_is_400(client, customer_a):
    body = json.dumps(event("customer.subscription.updated", subscription(customer_a))).encode()
    good = sign_payload(body, SECRET, int(time.time()))
    response = signed(client, body.replace(b'"active"', b'"canceled"'), secret=SECRET, signature=good)
    assert response.status_code == 400
    assert all_events() == []


@pytest.mark.parametrize("signature", ["", "t=1,v1=", "garbage", "v1=abc"])
def test_a_missing_or_malformed_signature_header_is_400(client, customer_a, signature):
    response = signed(client, event("invoice.paid", invoice(customer_a)), secret=SECRET, signature=signature)
    assert response.status_code == 400
    assert all_events() == []


def test_a_stale_timestamp_is_400(client, customer_a):
    response = signed(client, event("invoice.paid", invoice(customer_a)), secret=SECRET,
                      timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert all_events() == []


def test_the_previous_secret_still_verifies_during_a_rotation(client, customer_a):
    response = signed(client, event("customer.subscription.created", subscription(customer_a)), secret=OLD_SECRET)
    assert (response.status_code, response.json()) == (200, {"status": "processed"})


def test_unconfigured_webhooks_answer_503(client, settings, customer_a):
    settings.STRIPE_WEBHOOK_SECRETS = []
    response = signed(client, event("invoice.paid", invoice(customer_a)), secret=SECRET)
    assert response.status_code == 503


NOT_EVENTS = [
    b"not json", b'{"id": 5}', b'{"id": "evt_1", "type": "x", "data": {}}', b"[]",
    b'{"id": "evt_1", "type": "x", "created": "soon", "data": {"object": {}}}',
    b'{"id": "evt_1", "type": "x", "created": 1, "data": {"object": {"n": "\\u0000"}}}',
]


@pytest.mark.parametrize("payload", NOT_EVENTS)
def test_a_signed_body_that_is_not_an_event_is_400(client, payload):
    response = signed(client, payload, secret=SECRET)
    assert response.status_code == 400
    assert all_events() == []


def test_a_body_that_is_not_utf8_is_400(client):
    response = signed(client, b"\xff\xfe", secret=SECRET, signature=f"t={int(time.time())},v1=00")
    assert response.status_code == 400
    assert all_events() == []


def test_get_is_405(client):
    assert client.get("/webhooks/stripe/").status_code == 405


# -- once -----------------------------------------------------------------------------------------------
def test_the_same_event_twice_is_processed_once(client, org_a, customer_a):
    body = event("customer.subscription.created", subscription(customer_a, status="trialing"))
    first, second = signed(client, body, secret=SECRET), signed(client, body, secret=SECRET)
    assert first.json() == {"status": "processed"}
    assert second.json() == {"status": "duplicate"}
    assert [(e.id, e.outcome, e.organization_id) for e in all_events()] == [(body["id"], "processed", org_a.pk)]
    assert [row.action for row in billing_audit(org_a)] == ["billing.subscription_changed"]


def test_an_event_is_stored_with_what_stripe_said(client, org_a, customer_a):
    body = event("customer.subscription.created", subscription(customer_a), created=BASE_TIME)
    signed(client, body, secret=SECRET)
    (stored,) = all_events()
    assert (stored.type, stored.created, stored.livemode, stored.payload) == (
        "customer.subscription.created", at(BASE_TIME), False, body)
    assert stored.processed_at is not None and stored.error == ""


# -- state from the subscription's own times ------------------------------------------------------------
def test_a_subscription_event_sets_the_organizations_billing_state(client, org_a, customer_a):
    body = event("customer.subscription.created",
                 subscription(customer_a, status="trialing", trial_end=BASE_TIME + 14 * 86400,
                              cancel_at_period_end=True))
    signed(client, body, secret=SECRET)
    organization = reloaded(org_a)
    assert (organization.stripe_subscription_id, organization.stripe_price_id, organization.subscription_status,
            organization.subscription_trial_end, organization.subscription_current_period_end,
            organization.subscription_cancel_at_period_end, organization.subscription_state_at) == (
        "sub_test_1", "price_basic", "trialing", at(BASE_TIME + 14 * 86400), at(BASE_TIME + 30 * 86400), True,
        at(BASE_TIME))
    (audit,) = billing_audit(org_a)
    assert audit.actor_label == f"stripe:{body['id']}"
    assert audit.changes["subscription_status"] == ["none", "trialing"]


def test_updated_active_arriving_after_a_later_deleted_stays_canceled(client, org_a, customer_a):
    signed(client, event("customer.subscription.created", subscription(customer_a), created=BASE_TIME), secret=SECRET)
    deleted = event("customer.subscription.deleted", subscription(customer_a, status="canceled"),
                    created=BASE_TIME + 20)
    late_update = event("customer.subscription.updated", subscription(customer_a, status="active"),
                        created=BASE_TIME + 10)
    assert signed(client, deleted, secret=SECRET).json() == {"status": "processed"}
    assert signed(client, late_update, secret=SECRET).json() == {"status": "processed"}
    assert reloaded(org_a).subscription_status == "canceled"


def test_an_ended_subscription_never_comes_back_even_from_a_newer_event(client, org_a, customer_a):
    signed(client, event("customer.subscription.deleted", subscription(customer_a, status="canceled"),
                         created=BASE_TIME), secret=SECRET)
    signed(client, event("customer.subscription.updated", subscription(customer_a, status="active"),
                         created=BASE_TIME + 60), secret=SECRET)
    assert reloaded(org_a).subscription_status == "canceled"


def test_an_older_update_after_a_newer_one_changes_nothing(client, org_a, customer_a):
    signed(client, event("customer.subscription.updated", subscription(customer_a, status="past_due"),
                         created=BASE_TIME + 100), secret=SECRET)
    signed(client, event("customer.subscription.updated", subscription(customer_a, status="active"),
                         created=BASE_TIME + 50), secret=SECRET)
    organization = reloaded(org_a)
    assert (organization.subscription_status, organization.subscription_state_at) == ("past_due", at(BASE_TIME + 100))
    assert len(billing_audit(org_a)) == 1


def test_updated_before_created_leaves_the_newer_state(client, org_a, customer_a):
    signed(client, event("customer.subscription.updated", subscription(customer_a, status="active"),
                         created=BASE_TIME + 5), secret=SECRET)
    signed(client, event("customer.subscription.created", subscription(customer_a, status="incomplete"),
                         created=BASE_TIME), secret=SECRET)
    assert reloaded(org_a).subscription_status == "active"


def test_an_old_subscription_ending_does_not_end_the_current_one(client, org_a, customer_a):
    signed(client, event("customer.subscription.created", subscription(customer_a, sub_id="sub_new"),
                         created=BASE_TIME), secret=SECRET)
    signed(client, event("customer.subscription.deleted", subscription(customer_a, sub_id="sub_old", status="canceled"),
                         created=BASE_TIME + 30), secret=SECRET)
    organization = reloaded(org_a)
    assert (organization.stripe_subscription_id, organization.subscription_status) == ("sub_new", "active")


def test_paused_and_resumed(client, org_a, customer_a):
    signed(client, event("customer.subscription.paused", subscription(customer_a, status="paused"),
                         created=BASE_TIME), secret=SECRET)
    assert reloaded(org_a).subscription_status == "paused"
    signed(client, event("customer.subscription.resumed", subscription(customer_a, status="active"),
                         created=BASE_TIME + 1), secret=SECRET)
    assert reloaded(org_a).subscription_status == "active"


# -- invoices -------------------------------------------------------------------------------------------
def test_payment_failed_then_paid(client, org_a, customer_a):
    signed(client, event("customer.subscription.created", subscription(customer_a), created=BASE_TIME), secret=SECRET)
    signed(client, event("invoice.payment_failed", invoice(customer_a, status="open"), created=BASE_TIME + 10),
           secret=SECRET)
    organization = reloaded(org_a)
    assert (organization.subscription_status, organization.billing_lapsed_at) == ("past_due", at(BASE_TIME + 10))
    signed(client, event("invoice.paid", invoice(customer_a, status="paid"), created=BASE_TIME + 20), secret=SECRET)
    organization = reloaded(org_a)
    assert (organization.subscription_status, organization.billing_lapsed_at) == ("active", None)
    with bind_organization(org_a):
        (kept,) = Invoice.objects.all()
    assert (kept.stripe_invoice_id, kept.number, kept.status, kept.amount_due, kept.amount_paid, kept.currency,
            kept.hosted_invoice_url) == ("in_test_1", "RQ-0001", "paid", 4900, 4900, "aud",
                                         "https://invoice.stripe.com/i/in_test_1")
    assert [row.action for row in billing_audit(org_a)] == [
        "billing.subscription_changed", "billing.payment_failed", "billing.invoice_paid"]


def test_an_invoice_of_another_subscription_leaves_the_status(client, org_a, customer_a):
    signed(client, event("customer.subscription.created", subscription(customer_a), created=BASE_TIME), secret=SECRET)
    signed(client, event("invoice.payment_failed", invoice(customer_a, sub_id="sub_other", status="open"),
                         created=BASE_TIME + 10), secret=SECRET)
    assert reloaded(org_a).subscription_status == "active"


def test_an_invoice_link_that_is_not_stripes_https_page_is_not_kept(client, org_a, customer_a):
    body = invoice(customer_a)
    body["hosted_invoice_url"] = "javascript:alert(1)"
    signed(client, event("invoice.paid", body), secret=SECRET)
    with bind_organization(org_a):
        assert list(Invoice.objects.values_list("hosted_invoice_url", flat=True)) == [""]


# -- failures -------------------------------------------------------------------------------------------
def test_a_failure_while_processing_is_500_keeps_the_error_and_leaves_no_partial_state(client, org_a, customer_a):
    signed(client, event("customer.subscription.created", subscription(customer_a), created=BASE_TIME), secret=SECRET)
    # The status moves to past_due first; the invoice's amount then overflows its column: all of it must go.
    body = event("invoice.payment_failed", invoice(customer_a, status="open", amount=10**20), created=BASE_TIME + 10)
    response = signed(client, body, secret=SECRET)
    assert (response.status_code, response.json()) == (500, {"status": "failed"})
    assert reloaded(org_a).subscription_status == "active"
    with bind_organization(org_a):
        assert Invoice.objects.count() == 0
    assert [row.action for row in billing_audit(org_a)] == ["billing.subscription_changed"]
    stored = next(e for e in all_events() if e.id == body["id"])
    assert (stored.outcome, stored.processed_at) == ("failed", None)
    assert "out of range" in stored.error
    # Stripe's retry is processed afresh (not "duplicate").
    assert signed(client, body, secret=SECRET).status_code == 500


def test_an_unknown_subscription_status_is_a_failure_not_a_guess(client, org_a, customer_a):
    response = signed(client, event("customer.subscription.updated", subscription(customer_a, status="weird")),
                      secret=SECRET)
    assert response.status_code == 500
    assert reloaded(org_a).subscription_status == "none"


# -- which organization ---------------------------------------------------------------------------------
def test_an_unknown_type_is_stored_and_acknowledged(client, org_a, customer_a):
    body = event("customer.tax_id.created", {"object": "tax_id", "id": "txi_1", "customer": customer_a})
    assert signed(client, body, secret=SECRET).json() == {"status": "ignored"}
    assert [(e.id, e.outcome, e.organization_id) for e in all_events()] == [(body["id"], "ignored", org_a.pk)]


def test_an_event_for_no_organization_is_stored_and_ignored(client, org_a, org_b, customer_a, customer_b):
    body = event("customer.subscription.updated", subscription("cus_nobody", status="canceled"))
    assert signed(client, body, secret=SECRET).json() == {"status": "ignored"}
    assert signed(client, body, secret=SECRET).json() == {"status": "duplicate"}
    assert [(e.id, e.outcome, e.organization_id) for e in all_events()] == [(body["id"], "ignored", None)]
    assert [reloaded(o).subscription_status for o in (org_a, org_b)] == ["none", "none"]
    assert billing_audit(org_a) == billing_audit(org_b) == []


def test_one_organizations_event_never_changes_another(client, org_a, org_b, customer_a, customer_b):
    signed(client, event("customer.subscription.created", subscription(customer_b, sub_id="sub_B"),
                         created=BASE_TIME), secret=SECRET)
    signed(client, event("invoice.paid", invoice(customer_b, sub_id="sub_B", invoice_id="in_B")), secret=SECRET)
    a = reloaded(org_a)
    assert (a.subscription_status, a.stripe_subscription_id) == ("none", "")
    assert (reloaded(org_b).subscription_status, reloaded(org_b).stripe_subscription_id) == ("active", "sub_B")
    with bind_organization(org_a):
        assert Invoice.objects.count() == 0
        assert StripeEvent.objects.count() == 0
    with bind_organization(org_b):
        assert Invoice.objects.count() == 1


def test_checkout_completed_names_the_organization_before_its_customer_is_stored(client, org_a):
    session = {"id": "cs_1", "object": "checkout.session", "mode": "subscription", "customer": "cus_new",
               "subscription": "sub_new", "client_reference_id": str(org_a.pk), "status": "complete"}
    assert signed(client, event("checkout.session.completed", session), secret=SECRET).json() == {
        "status": "processed"}
    organization = reloaded(org_a)
    assert (organization.stripe_customer_id, organization.stripe_subscription_id) == ("cus_new", "sub_new")


def test_checkout_completed_cannot_take_over_an_organization_with_a_customer(client, org_a, org_b, customer_b):
    session = {"id": "cs_1", "object": "checkout.session", "mode": "subscription", "customer": "cus_intruder",
               "subscription": "sub_x", "client_reference_id": str(org_b.pk)}
    assert signed(client, event("checkout.session.completed", session), secret=SECRET).json() == {"status": "ignored"}
    assert (reloaded(org_b).stripe_customer_id, reloaded(org_b).stripe_subscription_id) == ("cus_B", "")


@pytest.mark.parametrize("reference", ["not-a-uuid", None, "00000000-0000-0000-0000-000000000000"])
def test_checkout_completed_with_a_reference_that_is_not_ours_is_ignored(client, reference):
    session = {"id": "cs_1", "object": "checkout.session", "mode": "subscription", "customer": "cus_x",
               "subscription": "sub_x", "client_reference_id": reference}
    assert signed(client, event("checkout.session.completed", session), secret=SECRET).json() == {"status": "ignored"}


def test_customer_deleted_forgets_the_customer_and_ends_the_subscription(client, org_a, customer_a):
    signed(client, event("customer.subscription.created", subscription(customer_a), created=BASE_TIME), secret=SECRET)
    signed(client, event("customer.deleted", {"id": customer_a, "object": "customer", "deleted": True},
                         created=BASE_TIME + 5), secret=SECRET)
    organization = reloaded(org_a)
    assert (organization.stripe_customer_id, organization.subscription_status) == ("", "canceled")


def test_a_deactivated_organizations_events_are_stored_and_ignored(client, org_a, customer_a):
    Organization.objects.filter(pk=org_a.pk).update(is_active=False)
    body = event("customer.subscription.created", subscription(customer_a))
    assert signed(client, body, secret=SECRET).json() == {"status": "ignored"}
    assert reloaded(org_a).subscription_status == "none"


def test_an_invoice_before_its_subscriptions_events_introduces_it(client, org_a, customer_a):
    signed(client, event("invoice.payment_failed", invoice(customer_a, sub_id="sub_early", status="open"),
                         created=BASE_TIME + 100), secret=SECRET)
    signed(client, event("customer.subscription.created", subscription(customer_a, sub_id="sub_early"),
                         created=BASE_TIME), secret=SECRET)
    organization = reloaded(org_a)
    assert (organization.stripe_subscription_id, organization.subscription_status) == ("sub_early", "past_due")


def test_a_late_invoice_of_an_ended_subscription_does_not_revive_it(client, org_a, customer_a):
    signed(client, event("customer.subscription.deleted", subscription(customer_a, status="canceled"),
                         created=BASE_TIME), secret=SECRET)
    signed(client, event("invoice.paid", invoice(customer_a), created=BASE_TIME + 100), secret=SECRET)
    assert reloaded(org_a).subscription_status == "canceled"
