"""Stripe event bodies as Stripe sends them (API 2026-10-28, what stripe 16.1.0 pins), with the times each
test needs, and delivery to our webhook signed by the stripe library's own algorithm."""

from __future__ import annotations

import itertools
import json

from routiq.testing.stripe_stub import sign_payload

BASE_TIME = 1_780_000_000  # epoch seconds; tests move event times relative to it
_ids = itertools.count(1)


def event(type_: str, obj: dict, *, created: int = BASE_TIME, event_id: str | None = None) -> dict:
    return {"id": event_id or f"evt_test_{next(_ids)}", "object": "event", "api_version": "2026-10-28.endive",
            "type": type_, "created": created, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "data": {"object": obj}}


def subscription(customer: str, *, status: str = "active", sub_id: str = "sub_test_1", price: str = "price_basic",
                 period_end: int = BASE_TIME + 30 * 86400, trial_end: int | None = None,
                 cancel_at_period_end: bool = False) -> dict:
    return {"id": sub_id, "object": "subscription", "customer": customer, "status": status,
            "cancel_at_period_end": cancel_at_period_end, "trial_end": trial_end, "created": BASE_TIME - 86400,
            "items": {"object": "list", "data": [{
                "id": "si_test_1", "object": "subscription_item", "current_period_start": period_end - 30 * 86400,
                "current_period_end": period_end,
                "price": {"id": price, "object": "price", "unit_amount": 4900, "currency": "aud",
                          "recurring": {"interval": "month"}}}]}}


def invoice(customer: str, *, sub_id: str = "sub_test_1", invoice_id: str = "in_test_1", status: str = "paid",
            amount: int = 4900, number: str = "RQ-0001", created: int = BASE_TIME) -> dict:
    return {"id": invoice_id, "object": "invoice", "customer": customer, "number": number, "status": status,
            "amount_due": amount, "amount_paid": amount if status == "paid" else 0, "currency": "aud",
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}", "created": created,
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id}}}


def signed(client, body: dict | bytes, *, secret: str, timestamp: int | None = None,
           signature: str | None = None):
    """POST ``body`` to /webhooks/stripe/ with a Stripe-Signature made with ``secret`` at ``timestamp``."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    header = signature if signature is not None else sign_payload(payload, secret, timestamp)
    return client.post("/webhooks/stripe/", data=payload, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=header)
