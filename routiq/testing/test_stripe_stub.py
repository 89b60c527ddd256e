"""Tests for the Stripe API stub, driven through the real stripe library (StripeClient) and, where the library
hides something (a missing key, headers, the demo's pages), over raw HTTP with `requests`. No database."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import stripe
from stripe._api_version import _ApiVersion

from routiq.testing.stripe_stub import API_VERSION, StripeStub, decode_form, event_body, sign_payload

KEY = "sk_test_routiq"
WHSEC = "whsec_test_secret"
PRICES = {
    "price_basic": {"unit_amount": 4900, "currency": "aud", "recurring": {"interval": "month"}},
    "price_pro": {"unit_amount": 9900, "currency": "aud", "recurring": {"interval": "month"}},
    "price_setup_fee": {"unit_amount": 1500, "currency": "aud"},
}
T0 = int(datetime(2024, 5, 1, 9, 0, tzinfo=UTC).timestamp())  # the stub's default data clock
MONTH_LATER = int(datetime(2024, 6, 1, 9, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def stub() -> Iterator[StripeStub]:
    with StripeStub(secret_key=KEY, prices=PRICES) as running:
        yield running


def make_client(stub: StripeStub, key: str = KEY, *, retries: int = 0, timeout: float = 5) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": stub.base_url}, max_network_retries=retries,
                               http_client=stripe.RequestsClient(timeout=timeout))


@pytest.fixture
def client(stub: StripeStub) -> stripe.StripeClient:
    return make_client(stub)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library sleeps 0.5-5 s between retries; tests that retry should not."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0)


def checkout_params(customer_id: str, **overrides: Any) -> dict[str, Any]:
    """What billing/clients/stripe.py sends."""
    return {"mode": "subscription", "customer": customer_id, "client_reference_id": "org-7",
            "line_items": [{"price": "price_basic", "quantity": 1}],
            "success_url": "https://app.example/billing/done?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.example/billing", "metadata": {"organization_id": "org-7"},
            "subscription_data": {"metadata": {"organization_id": "org-7"}}, **overrides}


def subscribed(stub: StripeStub, client: stripe.StripeClient, **session_overrides: Any) -> tuple[str, list[dict]]:
    customer = client.v1.customers.create({"name": "Harbour Physio"})
    session = client.v1.checkout.sessions.create(checkout_params(customer.id, **session_overrides))
    events = stub.complete_checkout(session.id)
    return events[1]["data"]["object"]["id"], events


# -- customers, idempotency, auth ------------------------------------------------------------------------

def test_customer_create_through_the_library(stub: StripeStub, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "Harbour Physio", "email": "admin@harbour.example",
                                           "metadata": {"organization_id": "org-7", "clerk_org_id": "org_x"}})
    assert isinstance(customer, stripe.Customer)
    assert (customer.id, customer.object, customer.name, customer.email, customer.created, customer.livemode) == (
        "cus_00000000000001", "customer", "Harbour Physio", "admin@harbour.example", T0, False)
    assert customer.metadata.to_dict() == {"organization_id": "org-7", "clerk_org_id": "org_x"}
    assert customer.last_response.headers["Request-Id"] == "req_00000000000001"
    assert customer.last_response.headers["Stripe-Version"] == _ApiVersion.CURRENT
    assert stub.customers_created == 1
    assert stub.customer(customer.id) == customer.to_dict()

    (request,) = stub.requests
    assert (request.method, request.path) == ("POST", "/v1/customers")
    assert request.fields() == {"name": "Harbour Physio", "email": "admin@harbour.example",
                                "metadata[organization_id]": "org-7", "metadata[clerk_org_id]": "org_x"}
    assert request.header("authorization") == f"Bearer {KEY}"
    assert request.header("Stripe-Version") == _ApiVersion.CURRENT == API_VERSION
    assert len(request.idempotency_key) == 36  # the library adds one to every POST
    assert [e["type"] for e in stub.events] == ["customer.created"]
    assert stub.events[0]["request"] == {"id": "req_00000000000001", "idempotency_key": request.idempotency_key}


def test_customer_get_and_delete(stub: StripeStub, client: stripe.StripeClient) -> None:
    created = client.v1.customers.create({"name": "Summit Chiro"})
    assert client.v1.customers.retrieve(created.id).to_dict() == created.to_dict()

    deleted = client.v1.customers.delete(created.id)
    assert deleted.to_dict() == {"id": created.id, "object": "customer", "deleted": True}
    assert client.v1.customers.retrieve(created.id).to_dict() == deleted.to_dict()
    assert [e["type"] for e in stub.events] == ["customer.created", "customer.deleted"]
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.customers.delete(created.id)
    assert (again.value.http_status, again.value.code, again.value.param) == (404, "resource_missing", "id")
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.retrieve("cus_nope")
    assert (unknown.value.http_status, unknown.value.code, unknown.value.user_message) == (
        404, "resource_missing", "No such customer: 'cus_nope'")


def test_a_repeated_idempotency_key_replays_the_first_answer(stub: StripeStub, client: stripe.StripeClient) -> None:
    params = {"name": "Harbour Physio", "metadata": {"organization_id": "org-7"}}
    first = client.v1.customers.create(params, {"idempotency_key": "routiq-customer-org-7"})
    again = client.v1.customers.create(dict(params), {"idempotency_key": "routiq-customer-org-7"})

    assert again.id == first.id == "cus_00000000000001"
    assert again.to_dict() == first.to_dict()
    assert stub.customers_created == 1
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.headers["Original-Request"] == first.last_response.request_id
    assert [r.idempotency_key for r in stub.requests] == ["routiq-customer-org-7"] * 2
    assert [e["type"] for e in stub.events] == ["customer.created"]


def test_an_idempotency_key_with_other_parameters_or_endpoint_is_an_idempotency_error(
        stub: StripeStub, client: stripe.StripeClient) -> None:
    client.v1.customers.create({"name": "Harbour Physio"}, {"idempotency_key": "k-1"})
    with pytest.raises(stripe.IdempotencyError) as other_params:
        client.v1.customers.create({"name": "Summit Chiro"}, {"idempotency_key": "k-1"})
    assert other_params.value.http_status == 400
    assert other_params.value.json_body["error"]["type"] == "idempotency_error"
    assert other_params.value.user_message == (
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        "Try using a key other than 'k-1' if you meant to execute a different request.")
    with pytest.raises(stripe.IdempotencyError):
        client.v1.billing_portal.sessions.create({"customer": "cus_00000000000001"}, {"idempotency_key": "k-1"})
    assert stub.customers_created == 1


def test_idempotency_keys_are_forgotten_after_24_hours(stub: StripeStub, client: stripe.StripeClient) -> None:
    first = client.v1.customers.create({"name": "Harbour Physio"}, {"idempotency_key": "k-1"})
    stub.advance(hours=24)
    later = client.v1.customers.create({"name": "Summit Chiro"}, {"idempotency_key": "k-1"})
    assert (first.id, later.id, later.name, stub.customers_created) == (
        "cus_00000000000001", "cus_00000000000002", "Summit Chiro", 2)


def test_a_failed_request_is_not_saved_under_its_key(stub: StripeStub, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(checkout_params("cus_nope"), {"idempotency_key": "k-2"})
    customer = client.v1.customers.create({"name": "Harbour Physio"})
    session = client.v1.checkout.sessions.create(checkout_params("cus_nope") | {"customer": customer.id},
                                                 {"idempotency_key": "k-2"})
    assert session.customer == customer.id


def test_a_wrong_key_is_an_authentication_error(stub: StripeStub) -> None:
    with pytest.raises(stripe.AuthenticationError) as caught:
        make_client(stub, "sk_test_wrong").v1.customers.create({"name": "x"})
    assert caught.value.http_status == 401
    assert caught.value.user_message == "Invalid API Key provided: sk_test_*rong"
    assert caught.value.json_body == {"error": {"type": "invalid_request_error",
                                                "message": "Invalid API Key provided: sk_test_*rong"}}
    assert stub.customers_created == 0


def test_a_missing_key_is_401_over_raw_http(stub: StripeStub) -> None:
    response = requests.post(f"{stub.base_url}/v1/customers", data={"name": "x"}, timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"].startswith("You did not provide an API key.")
    # Basic auth with the key as the user name, as curl -u sk_...: does.
    basic = requests.post(f"{stub.base_url}/v1/customers", data={"name": "x"}, auth=(KEY, ""), timeout=5)
    assert (basic.status_code, basic.json()["object"], stub.customers_created) == (200, "customer", 1)


def test_raw_http_error_shape_and_unknown_urls(stub: StripeStub) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    response = requests.get(f"{stub.base_url}/v1/subscriptions/sub_nope", headers=auth, timeout=5)
    assert response.status_code == 404
    assert response.headers["Request-Id"] == "req_00000000000001"
    assert response.json() == {"error": {
        "type": "invalid_request_error", "message": "No such subscription: 'sub_nope'", "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing", "param": "id"}}
    unknown = requests.get(f"{stub.base_url}/v1/charges", headers=auth, timeout=5)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/charges).")
    bad_version = requests.get(f"{stub.base_url}/v1/events", headers={**auth, "Stripe-Version": "latest"}, timeout=5)
    assert (bad_version.status_code, bad_version.json()["error"]["message"]) == (
        400, "Invalid Stripe API version: latest")


# -- checkout and portal sessions ---------------------------------------------------------------------------

def test_checkout_session(stub: StripeStub, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "Harbour Physio"})
    stub.reset_log()
    session = client.v1.checkout.sessions.create(checkout_params(customer.id))

    assert isinstance(session, stripe.checkout.Session)
    assert session.url == f"{stub.origin}/checkout/cs_test_00000000000001"
    assert {k: session.to_dict()[k] for k in (
        "id", "object", "mode", "customer", "client_reference_id", "status", "payment_status", "success_url",
        "cancel_url", "metadata", "subscription", "amount_total", "currency", "created", "expires_at")} == {
        "id": "cs_test_00000000000001", "object": "checkout.session", "mode": "subscription",
        "customer": customer.id, "client_reference_id": "org-7", "status": "open", "payment_status": "unpaid",
        "success_url": "https://app.example/billing/done?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/billing", "metadata": {"organization_id": "org-7"},
        "subscription": None, "amount_total": 4900, "currency": "aud", "created": T0, "expires_at": T0 + 86400}
    assert client.v1.checkout.sessions.retrieve(session.id).to_dict() == session.to_dict()

    (request,) = stub.api_requests("POST", "/v1/checkout/sessions")
    assert request.fields() == {
        "mode": "subscription", "customer": customer.id, "client_reference_id": "org-7",
        "line_items[0][price]": "price_basic", "line_items[0][quantity]": "1",
        "success_url": "https://app.example/billing/done?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/billing", "metadata[organization_id]": "org-7",
        "subscription_data[metadata][organization_id]": "org-7"}
    assert request.form()["line_items"] == [{"price": "price_basic", "quantity": "1"}]
    assert request.header("Authorization") == f"Bearer {KEY}"


def test_portal_session(stub: StripeStub, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "Harbour Physio"})
    portal = client.v1.billing_portal.sessions.create({"customer": customer.id,
                                                       "return_url": "https://app.example/billing"})
    assert isinstance(portal, stripe.billing_portal.Session)
    assert portal.to_dict() == {
        "id": "bps_00000000000001", "object": "billing_portal.session", "configuration": "bpc_stub",
        "created": T0, "customer": customer.id, "flow": None, "livemode": False, "locale": None,
        "on_behalf_of": None, "return_url": "https://app.example/billing",
        "url": f"{stub.origin}/portal/bps_00000000000001"}
    assert stub.api_requests("POST", "/v1/billing_portal/sessions")[0].fields() == {
        "customer": customer.id, "return_url": "https://app.example/billing"}


@pytest.mark.parametrize(("change", "code", "param", "message"), [
    ({"line_items": [{"price": "price_gold", "quantity": 1}]}, "resource_missing", "line_items[0][price]",
     "No such price: 'price_gold'"),
    ({"customer": "cus_nope"}, "resource_missing", "customer", "No such customer: 'cus_nope'"),
    ({"success_url": None}, "parameter_missing", "success_url", "Missing required param: success_url."),
    ({"line_items": None}, "parameter_missing", "line_items", "Missing required param: line_items."),
    ({"line_items": [{"price": "price_basic"}]}, "parameter_missing", "line_items[0][quantity]",
     "Quantity is required. Add `quantity` to `line_items[0]`"),
    ({"line_item": [{"price": "price_basic", "quantity": 1}]}, "parameter_unknown", "line_item",
     "Received unknown parameter: line_item"),
    ({"line_items": [{"price": "price_setup_fee", "quantity": 1}]}, None, "line_items[0][price]",
     "You must provide at least one recurring price in `subscription` mode when using prices."),
    ({"mode": "payment"}, None, "mode", "The Stripe stand-in only simulates mode=subscription, not payment."),
])
def test_checkout_session_mistakes_are_invalid_request_errors(
        stub: StripeStub, client: stripe.StripeClient, change: dict, code: str | None, param: str,
        message: str) -> None:
    customer = client.v1.customers.create({"name": "Harbour Physio"})
    params = {k: v for k, v in (checkout_params(customer.id) | change).items() if v is not None}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params)
    assert (caught.value.http_status, caught.value.code, caught.value.param, caught.value.user_message) == (
        400, code, param, message)
    assert caught.value.request_id is not None


def test_portal_and_subscription_mistakes(stub: StripeStub, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as portal:
        client.v1.billing_portal.sessions.create({"customer": "cus_nope", "return_url": "https://app.example"})
    assert (portal.value.http_status, portal.value.code, portal.value.param) == (400, "resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        client.v1.billing_portal.sessions.create({"return_url": "https://app.example"})
    assert (no_customer.value.code, no_customer.value.param) == ("parameter_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as subscription:
        client.v1.subscriptions.retrieve("sub_nope")
    assert (subscription.value.http_status, subscription.value.code, subscription.value.param) == (
        404, "resource_missing", "id")
    deleted = client.v1.customers.create({"name": "Gone"})
    client.v1.customers.delete(deleted.id)
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.checkout.sessions.create(checkout_params(deleted.id))
    assert (gone.value.code, gone.value.param) == ("resource_missing", "customer")


# -- faults and the library's retries ---------------------------------------------------------------------

def test_rate_limit_is_a_rate_limit_error_and_not_retried(stub: StripeStub, no_backoff: None) -> None:
    stub.queue_faults("rate_limit", 5)
    with pytest.raises(stripe.RateLimitError) as caught:
        make_client(stub, retries=3).v1.customers.create({"name": "x"})
    assert caught.value.http_status == 429
    assert caught.value.json_body["error"]["code"] == "rate_limit"
    assert caught.value.headers["Stripe-Should-Retry"] == "false"
    assert (len(stub.requests), stub.customers_created) == (1, 0)


def test_a_fault_that_says_retry_is_retried_with_the_same_key(stub: StripeStub, no_backoff: None) -> None:
    stub.queue_faults("rate_limit", 1, should_retry=True)
    customer = make_client(stub, retries=1).v1.customers.create({"name": "Harbour Physio"})
    assert (customer.id, stub.customers_created, len(stub.requests)) == ("cus_00000000000001", 1, 2)
    assert stub.requests[0].idempotency_key == stub.requests[1].idempotency_key


def test_a_500_is_retried_by_the_librarys_own_rule(stub: StripeStub, no_backoff: None) -> None:
    stub.queue_faults("status", 1)  # no Stripe-Should-Retry: the library retries 5xx when allowed
    assert make_client(stub, retries=1).v1.customers.create({"name": "x"}).id == "cus_00000000000001"
    assert (len(stub.requests), stub.customers_created) == (2, 1)

    stub.queue_faults("status", 1, status=503)
    with pytest.raises(stripe.APIError) as caught:  # a StripeClient's default is no retries
        make_client(stub).v1.customers.create({"name": "y"})
    assert caught.value.http_status == 503
    assert caught.value.json_body["error"] == {"type": "api_error",
                                               "message": "Forced HTTP 503 (stand-in fault)."}

    stub.queue_faults("status", 1, should_retry=False)
    with pytest.raises(stripe.APIError):
        make_client(stub, retries=2).v1.customers.create({"name": "z"})
    assert (len(stub.requests), stub.customers_created) == (4, 1)


def test_card_declined_malformed_and_delay_faults(stub: StripeStub, client: stripe.StripeClient) -> None:
    stub.queue_faults("card_declined", path_contains="/v1/checkout")
    customer = client.v1.customers.create({"name": "Harbour Physio"})
    with pytest.raises(stripe.CardError) as declined:
        client.v1.checkout.sessions.create(checkout_params(customer.id))
    assert (declined.value.http_status, declined.value.code, declined.value.json_body["error"]["decline_code"]) == (
        402, "card_declined", "generic_decline")

    stub.queue_faults("malformed")
    with pytest.raises(stripe.APIError) as malformed:
        client.v1.customers.retrieve(customer.id)
    assert malformed.value.http_status == 200
    assert str(malformed.value).startswith("Invalid response body from API")

    stub.queue_faults("delay", seconds=2)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        make_client(stub, timeout=0.2).v1.customers.retrieve(customer.id)
    assert time.monotonic() - started < 1.5
    with pytest.raises(ValueError, match="unknown fault kind"):
        stub.queue_faults("timeout")


# -- simulating Stripe ---------------------------------------------------------------------------------------

def test_complete_checkout_events_and_objects(stub: StripeStub, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "Harbour Physio", "email": "admin@harbour.example"})
    session = client.v1.checkout.sessions.create(checkout_params(customer.id))
    events = stub.complete_checkout(session.id)

    assert [(e["id"], e["type"], e["created"]) for e in events] == [
        ("evt_00000000000002", "checkout.session.completed", T0),
        ("evt_00000000000003", "customer.subscription.created", T0),
        ("evt_00000000000004", "invoice.paid", T0)]
    assert all(e["object"] == "event" and e["livemode"] is False and e["api_version"] == API_VERSION
               and e["request"] == {"id": None, "idempotency_key": None} and e["pending_webhooks"] == 1
               for e in events)
    completed, created, paid = (e["data"]["object"] for e in events)
    assert {k: completed[k] for k in ("id", "status", "payment_status", "subscription", "invoice", "url",
                                      "client_reference_id", "customer")} == {
        "id": session.id, "status": "complete", "payment_status": "paid", "subscription": "sub_00000000000001",
        "invoice": "in_00000000000001", "url": None, "client_reference_id": "org-7", "customer": customer.id}
    assert {k: created[k] for k in ("id", "object", "customer", "status", "cancel_at_period_end",
                                    "current_period_start", "current_period_end", "trial_end", "canceled_at",
                                    "ended_at", "created", "metadata", "latest_invoice")} == {
        "id": "sub_00000000000001", "object": "subscription", "customer": customer.id, "status": "active",
        "cancel_at_period_end": False, "current_period_start": T0, "current_period_end": MONTH_LATER,
        "trial_end": None, "canceled_at": None, "ended_at": None, "created": T0,
        "metadata": {"organization_id": "org-7"}, "latest_invoice": "in_00000000000001"}
    item = created["items"]["data"][0]
    assert (item["id"], item["current_period_start"], item["current_period_end"], item["quantity"]) == (
        "si_00000000000001", T0, MONTH_LATER, 1)
    assert item["price"] == {"id": "price_basic", "object": "price", "active": True, "currency": "aud",
                                  "unit_amount": 4900, "livemode": False, "product": "prod_basic",
                                  "recurring": {"interval": "month", "interval_count": 1}, "type": "recurring"}
    assert {k: paid[k] for k in ("id", "customer", "subscription", "parent", "number", "status", "amount_due",
                                 "amount_paid", "currency", "hosted_invoice_url", "created", "period_end",
                                 "billing_reason")} == {
        "id": "in_00000000000001", "customer": customer.id, "subscription": "sub_00000000000001",
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"metadata": {"organization_id": "org-7"},
                                            "subscription": "sub_00000000000001"}},
        "number": "STUB0001-0001", "status": "paid", "amount_due": 4900, "amount_paid": 4900, "currency": "aud",
        "hosted_invoice_url": f"{stub.origin}/invoice/in_00000000000001", "created": T0, "period_end": T0,
        "billing_reason": "subscription_create"}
    assert paid["lines"]["data"][0]["period"] == {"start": T0, "end": MONTH_LATER}

    fetched = client.v1.subscriptions.retrieve("sub_00000000000001", {"expand": ["latest_invoice"]})
    assert isinstance(fetched, stripe.Subscription)
    assert (fetched.status, fetched["items"].data[0].current_period_end, fetched.latest_invoice.number) == (
        "active", MONTH_LATER, "STUB0001-0001")
    assert client.v1.invoices.retrieve("in_00000000000001").amount_paid == 4900
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"
    with pytest.raises(ValueError, match="is complete, not open"):
        stub.complete_checkout(session.id)


def test_complete_checkout_with_a_trial(stub: StripeStub, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "Harbour Physio"})
    session = client.v1.checkout.sessions.create(checkout_params(
        customer.id, subscription_data={"trial_period_days": 14, "metadata": {"organization_id": "org-7"}}))
    assert stub.api_requests("POST", "/v1/checkout/sessions")[0].fields()["subscription_data[trial_period_days]"] \
        == "14"
    events = stub.complete_checkout(session.id)
    assert [e["type"] for e in events] == ["checkout.session.completed", "customer.subscription.created"]
    subscription = events[1]["data"]["object"]
    trial_end = T0 + 14 * 86400
    assert (subscription["status"], subscription["trial_start"], subscription["trial_end"],
            subscription["current_period_end"], subscription["latest_invoice"]) == ("trialing", T0, trial_end,
                                                                                    trial_end, None)
    assert events[0]["data"]["object"]["payment_status"] == "no_payment_required"


def test_complete_checkout_without_a_customer_creates_one(stub: StripeStub, client: stripe.StripeClient) -> None:
    params = checkout_params("", customer_email="new@clinic.example")
    del params["customer"]
    session = client.v1.checkout.sessions.create(params)
    events = stub.complete_checkout(session.id, status="incomplete")
    assert [e["type"] for e in events] == ["customer.created", "checkout.session.completed",
                                           "customer.subscription.created", "invoice.payment_failed"]
    assert events[0]["data"]["object"]["email"] == "new@clinic.example"
    assert events[1]["data"]["object"]["customer"] == events[0]["data"]["object"]["id"]
    assert events[1]["data"]["object"]["payment_status"] == "unpaid"
    assert events[3]["data"]["object"]["status"] == "open"


def test_subscription_events_change_the_stored_subscription(stub: StripeStub, client: stripe.StripeClient) -> None:
    subscription_id, _ = subscribed(stub, client)
    stub.advance(days=3)

    past_due = stub.subscription_event(subscription_id, "customer.subscription.updated", status="past_due")
    assert (past_due["type"], past_due["created"], past_due["data"]["object"]["status"]) == (
        "customer.subscription.updated", T0 + 3 * 86400, "past_due")
    assert past_due["data"]["previous_attributes"] == {"status": "active"}
    assert stub.subscription(subscription_id)["status"] == "past_due"

    cancelling = stub.subscription_event(subscription_id, "updated", status="active", cancel_at_period_end=True)
    assert cancelling["data"]["previous_attributes"] == {"status": "past_due", "cancel_at_period_end": False,
                                                         "cancel_at": None, "canceled_at": None}
    assert {k: cancelling["data"]["object"][k] for k in ("status", "cancel_at_period_end", "cancel_at",
                                                         "canceled_at")} == {
        "status": "active", "cancel_at_period_end": True, "cancel_at": MONTH_LATER, "canceled_at": T0 + 3 * 86400}

    stub.advance(days=28)
    deleted = stub.subscription_event(subscription_id, "customer.subscription.deleted")
    assert "previous_attributes" not in deleted["data"]
    assert {k: deleted["data"]["object"][k] for k in ("status", "canceled_at", "ended_at")} == {
        "status": "canceled", "canceled_at": T0 + 3 * 86400, "ended_at": T0 + 31 * 86400}
    assert client.v1.subscriptions.retrieve(subscription_id).status == "canceled"


def test_pause_resume_trial_end_and_period_changes(stub: StripeStub, client: stripe.StripeClient) -> None:
    subscription_id, _ = subscribed(stub, client)
    assert stub.subscription_event(subscription_id, "paused")["data"]["object"]["status"] == "paused"
    resumed = stub.subscription_event(subscription_id, "customer.subscription.resumed")
    assert (resumed["type"], resumed["data"]["object"]["status"]) == ("customer.subscription.resumed", "active")
    warned = stub.subscription_event(subscription_id, "trial_will_end")
    assert (warned["type"], warned["data"]["object"]["status"]) == ("customer.subscription.trial_will_end", "active")
    renewed_to = datetime(2024, 7, 1, 9, 0, tzinfo=UTC)
    renewed = stub.subscription_event(subscription_id, "updated", current_period_start=MONTH_LATER,
                                      current_period_end=renewed_to, price="price_pro")
    obj = renewed["data"]["object"]
    assert (obj["current_period_end"], obj["items"]["data"][0]["current_period_end"],
            obj["items"]["data"][0]["price"]["id"]) == (int(renewed_to.timestamp()),) * 2 + ("price_pro",)
    assert set(renewed["data"]["previous_attributes"]) == {"current_period_start", "current_period_end", "items"}
    with pytest.raises(ValueError, match="unknown subscription event"):
        stub.subscription_event(subscription_id, "customer.subscription.exploded")
    with pytest.raises(ValueError, match="unknown subscription status"):
        stub.subscription_event(subscription_id, "updated", status="sleeping")
    with pytest.raises(ValueError, match="unknown subscription changes"):
        stub.subscription_event(subscription_id, "updated", colour="blue")


def test_invoice_events_change_the_subscription_status(stub: StripeStub, client: stripe.StripeClient) -> None:
    subscription_id, _ = subscribed(stub, client)
    failed = stub.invoice_event(subscription_id, "invoice.payment_failed")
    invoice = failed["data"]["object"]
    assert (failed["type"], invoice["id"], invoice["status"], invoice["amount_due"], invoice["amount_paid"],
            invoice["number"], invoice["billing_reason"], invoice["parent"]["subscription_details"]["subscription"]
            ) == ("invoice.payment_failed", "in_00000000000002", "open", 4900, 0, "STUB0001-0002",
                  "subscription_cycle", subscription_id)
    assert stub.subscription(subscription_id)["status"] == "past_due"
    assert stub.subscription(subscription_id)["latest_invoice"] == "in_00000000000002"

    paid = stub.invoice_event(subscription_id, "paid")
    assert (paid["type"], paid["data"]["object"]["status"], paid["data"]["object"]["amount_paid"]) == (
        "invoice.paid", "paid", 4900)
    assert client.v1.subscriptions.retrieve(subscription_id).status == "active"


def test_customer_deleted_event(stub: StripeStub, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "Harbour Physio", "metadata": {"organization_id": "org-7"}})
    event = stub.customer_deleted_event(customer.id)
    assert (event["type"], event["data"]["object"]["id"], event["data"]["object"]["metadata"]) == (
        "customer.deleted", customer.id, {"organization_id": "org-7"})
    assert client.v1.customers.retrieve(customer.id).deleted is True


def test_legacy_fields_can_be_left_out(client: stripe.StripeClient) -> None:
    with StripeStub(secret_key=KEY, legacy_fields=False) as strict:
        strict_client = make_client(strict)
        subscription_id, events = subscribed(strict, strict_client)
        assert "current_period_end" not in events[1]["data"]["object"]
        assert "subscription" not in events[2]["data"]["object"]
        fetched = strict_client.v1.subscriptions.retrieve(subscription_id)
        assert fetched["items"].data[0].current_period_end == MONTH_LATER
        with pytest.raises(AttributeError):
            fetched.current_period_end  # noqa: B018 - the attribute real Stripe no longer sends


def test_events_list_newest_first_with_pagination(stub: StripeStub, client: stripe.StripeClient) -> None:
    subscription_id, _ = subscribed(stub, client)
    stub.invoice_event(subscription_id, "payment_failed")
    all_types = ["invoice.payment_failed", "invoice.paid", "customer.subscription.created",
                 "checkout.session.completed", "customer.created"]

    page = client.v1.events.list({"limit": 2})
    assert ([e.type for e in page.data], page.has_more, page.url) == (all_types[:2], True, "/v1/events")
    after = client.v1.events.list({"limit": 2, "starting_after": page.data[-1].id})
    assert [e.type for e in after.data] == all_types[2:4]
    assert [e.type for e in page.auto_paging_iter()] == all_types
    assert [e.type for e in client.v1.events.list({"type": "invoice.paid"}).data] == ["invoice.paid"]
    assert client.v1.events.retrieve(page.data[0].id).type == "invoice.payment_failed"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.list({"starting_after": "evt_nope"})
    assert (caught.value.code, caught.value.param) == ("resource_missing", "starting_after")


# -- webhooks ----------------------------------------------------------------------------------------------

def test_sign_payload_is_accepted_by_construct_event(stub: StripeStub, client: stripe.StripeClient) -> None:
    _, events = subscribed(stub, client)
    body = event_body(events[0])
    now = int(time.time())
    header = sign_payload(body, WHSEC, now)
    expected = hmac.new(WHSEC.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={expected}"

    event = stripe.Webhook.construct_event(body, header, WHSEC)
    assert (event.id, event.type, event.data.object.id) == (events[0]["id"], "checkout.session.completed",
                                                            "cs_test_00000000000001")
    assert stripe.Webhook.construct_event(body, sign_payload(body, WHSEC), WHSEC).id == events[0]["id"]

    tampered = body.replace(b'"complete"', b'"expired"')
    assert tampered != body
    with pytest.raises(stripe.SignatureVerificationError, match="No signatures found matching"):
        stripe.Webhook.construct_event(tampered, header, WHSEC)
    with pytest.raises(stripe.SignatureVerificationError, match="No signatures found matching"):
        stripe.Webhook.construct_event(body, header, "whsec_other")
    with pytest.raises(stripe.SignatureVerificationError, match="Timestamp outside the tolerance zone"):
        stripe.Webhook.construct_event(body, sign_payload(body, WHSEC, now - 301), WHSEC)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that verifies each delivery as our view would, answering 200 or 400."""

    def __init__(self, secret: str = WHSEC) -> None:
        self.events: list[Any] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    event = stripe.Webhook.construct_event(body, self.headers.get("Stripe-Signature"), secret)
                except stripe.SignatureVerificationError:
                    status, answer = 400, b'{"ok": false}'
                else:
                    receiver.events.append(event)
                    status, answer = 200, b'{"ok": true}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/billing/stripe/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def test_deliver_posts_a_signed_event(stub: StripeStub, client: stripe.StripeClient, receiver: Receiver) -> None:
    _, events = subscribed(stub, client)
    assert stub.deliver(events[1], receiver.url, WHSEC) == (200, b'{"ok": true}')
    assert stub.deliver(events[1], receiver.url, "whsec_wrong") == (400, b'{"ok": false}')
    assert stub.deliver(events[1], receiver.url, WHSEC, timestamp=int(time.time()) - 600) == (400, b'{"ok": false}')
    assert [(e.id, e.type) for e in receiver.events] == [(events[1]["id"], "customer.subscription.created")]
    assert stub.webhook_responses == [(200, b'{"ok": true}'), (400, b'{"ok": false}'), (400, b'{"ok": false}')]
    with pytest.raises(ValueError, match="needs a webhook URL and secret"):
        stub.deliver(events[1])


def test_demo_pay_and_portal_pages(receiver: Receiver) -> None:
    with StripeStub(secret_key=KEY, webhook_url=receiver.url, webhook_secret=WHSEC) as stub:
        client = make_client(stub)
        customer = client.v1.customers.create({"name": "Harbour Physio"})
        session = client.v1.checkout.sessions.create(checkout_params(customer.id))

        page = requests.get(session.url, timeout=5)
        assert (page.status_code, page.headers["Content-Type"]) == (200, "text/html; charset=utf-8")
        assert f'<form method="post" action="/checkout/{session.id}/pay"><button type="submit">Pay</button>' \
            in page.text
        assert "49.00 AUD a month" in page.text

        paid = requests.post(f"{session.url}/pay", allow_redirects=False, timeout=5)
        assert (paid.status_code, paid.headers["Location"]) == (
            303, f"https://app.example/billing/done?session={session.id}")
        assert [e.type for e in receiver.events] == ["checkout.session.completed", "customer.subscription.created",
                                                     "invoice.paid"]
        assert requests.post(f"{stub.origin}/checkout/{session.id}/pay", allow_redirects=False,
                             timeout=5).status_code == 303  # paying twice changes nothing
        assert len(receiver.events) == 3

        portal = client.v1.billing_portal.sessions.create({"customer": customer.id,
                                                           "return_url": "https://app.example/billing"})
        portal_page = requests.get(portal.url, timeout=5).text
        assert "Renews on 01 Jun 2024." in portal_page
        assert '<a href="https://app.example/billing">Return</a>' in portal_page
        cancelled = requests.post(f"{portal.url}/cancel", allow_redirects=False, timeout=5)
        assert (cancelled.status_code, cancelled.headers["Location"]) == (303, f"/portal/{portal.id}")
        assert (receiver.events[-1].type, receiver.events[-1].data.object.cancel_at_period_end) == (
            "customer.subscription.updated", True)
        assert "Cancels on 01 Jun 2024." in requests.get(portal.url, timeout=5).text
        assert stub.subscription("sub_00000000000001")["cancel_at_period_end"] is True
        assert requests.get(f"{stub.origin}/checkout/cs_nope", timeout=5).status_code == 404


def test_decode_form() -> None:
    pairs = [("name", "A"), ("metadata[k]", "v"), ("line_items[1][price]", "p2"), ("line_items[0][price]", "p1"),
             ("line_items[0][quantity]", "1"), ("expand[]", "customer"), ("expand[]", "subscription"),
             ("subscription_data[metadata][organization_id]", "7")]
    assert decode_form(pairs) == {
        "name": "A", "metadata": {"k": "v"}, "line_items": [{"price": "p1", "quantity": "1"}, {"price": "p2"}],
        "expand": ["customer", "subscription"], "subscription_data": {"metadata": {"organization_id": "7"}}}
    assert json.loads(event_body({"a": 1})) == {"a": 1}
