"""Local stand-in for the parts of Stripe's REST API (v1) the billing app uses, for tests and the dev demo.

It speaks Stripe's wire protocol, so the real library runs against it unpatched
(``stripe.StripeClient(key, base_addresses={"api": stub.base_url})``):
- auth: ``Authorization: Bearer <secret key>`` (or Basic with the key as the user name); a wrong or missing
  key is 401 ``{"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_***"}}``;
- bodies are form-encoded with bracketed keys (``metadata[k]=v``, ``line_items[0][price]=…``); unknown
  top-level parameters are 400 ``parameter_unknown``, as at Stripe, so a typo fails here and not in production;
- errors are ``{"error": {"type", "message", "code", "param", "doc_url"}}``: 400/404 invalid_request_error
  (``parameter_missing``, ``parameter_unknown``, ``resource_missing``), 400 ``idempotency_error``, 401 bad key,
  402 card_error, 429 rate limit, 5xx api_error. Every answer carries ``Request-Id`` and ``Stripe-Version``;
- idempotency: a POST's ``Idempotency-Key`` (the library sends one on every POST, and the same one on its
  retries) replays the saved 2xx answer with ``Idempotent-Replayed: true`` and ``Original-Request``; the same
  key with other parameters or on another endpoint is 400 ``idempotency_error``. Errors are not saved (a
  failed request may be retried with its key), and keys are forgotten after 24 hours of the data clock;
- ``POST /v1/customers`` (name, email, description, phone, metadata…), ``GET|DELETE /v1/customers/{id}``
  (a deleted customer reads as ``{"id", "object": "customer", "deleted": true}``);
- ``POST /v1/checkout/sessions`` (mode=subscription only; success_url, line_items[0][price|quantity] with a
  known recurring price, customer or customer_email, client_reference_id, metadata, subscription_data[metadata]
  and [trial_period_days]); ``GET /v1/checkout/sessions/{id}``;
- ``POST /v1/billing_portal/sessions`` (customer, return_url);
- ``GET /v1/subscriptions/{id}``, ``GET /v1/invoices/{id}``, ``GET /v1/events`` (newest first; ``limit``,
  ``starting_after``, ``ending_before``, ``type``) and ``GET /v1/events/{id}``. GETs take ``expand[]`` of
  customer, subscription, latest_invoice, invoice.

Objects have the shape of the API version stripe-python 16.1.0 pins (``2026-10-28.endive``): a subscription's
period is on ``items.data[0]`` and an invoice's subscription on ``parent.subscription_details``. With
``legacy_fields=True`` (the default) the pre-2025-03-31 copies are served as well (``current_period_start``/
``current_period_end`` on the subscription, ``subscription`` on the invoice); real Stripe no longer sends them,
so pass ``legacy_fields=False`` to prove code does not rely on them.

What happens at Stripe is simulated by methods that change the stored objects and return the events Stripe
would send (``complete_checkout``, ``subscription_event``, ``invoice_event``, ``customer_deleted_event``);
``deliver`` POSTs one to a webhook URL signed as Stripe signs it (``sign_payload``). Timestamps come from the
data clock (``stub.clock``; ``advance()`` moves it). Every request is recorded (``requests``, with ``form()``
for the decoded body and ``header()``). For the dev demo, a session's ``url`` serves a small page whose "Pay"
button completes the checkout, delivers the events to ``webhook_url`` and redirects to the success URL; the
portal page cancels at period end (or undoes that).

Faults (``queue_faults``): "rate_limit" (429 ``code: rate_limit``), "status" (``status``, default 500
api_error), "card_declined" (402 card_error), "malformed" (200, truncated JSON), "delay" (answer after
``seconds``). ``should_retry`` sets ``Stripe-Should-Retry`` on the fault's answer: rate_limit defaults to
"false", the others send none, so the library's own rule applies (it retries 409s and 5xx when
``max_network_retries`` allows; a StripeClient's default is 0). Stdlib only (no Django); ``sign_payload``
uses the stripe library's own signer when it is installed.

    with StripeStub(secret_key="sk_test_x", prices={"price_basic": {"unit_amount": 4900, "currency": "aud",
                                                                    "recurring": {"interval": "month"}}}) as stub:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": stub.base_url})

Standalone: ``python -m routiq.testing.stripe_stub --port 8785 --secret-key sk_test_demo
--webhook-url http://127.0.0.1:8000/webhooks/stripe/ --webhook-secret whsec_demo``
"""

from __future__ import annotations

import argparse
import base64
import calendar
import copy
import hashlib
import hmac
import html
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, overload
from urllib.parse import parse_qsl

from routiq.testing.stub_server import (
    DEFAULT_CLOCK,
    Fault,
    RecordedRequest,
    Reply,
    StubError,
    StubServer,
    post_delivery,
)

API_VERSION = "2026-10-28.endive"  # what stripe-python 16.1.0 sends (stripe._api_version._ApiVersion.CURRENT)
DEFAULT_PRICES: dict[str, dict] = {
    "price_basic": {"unit_amount": 4900, "currency": "aud", "recurring": {"interval": "month"}},
}
FAULT_KINDS = frozenset({"rate_limit", "status", "card_declined", "malformed", "delay"})
SUBSCRIPTION_STATUSES = frozenset({"trialing", "active", "past_due", "canceled", "unpaid", "paused", "incomplete",
                                   "incomplete_expired"})
SUBSCRIPTION_EVENTS = frozenset({"customer.subscription.updated", "customer.subscription.deleted",
                                 "customer.subscription.paused", "customer.subscription.resumed",
                                 "customer.subscription.trial_will_end"})
INVOICE_EVENTS = frozenset({"invoice.paid", "invoice.payment_failed"})
SUBSCRIPTION_CHANGES = frozenset({"status", "cancel_at_period_end", "cancel_at", "canceled_at", "ended_at",
                                  "trial_end", "current_period_start", "current_period_end", "metadata", "price",
                                  "quantity"})
EXPANDABLE = frozenset({"customer", "subscription", "latest_invoice", "invoice"})
IDEMPOTENCY_WINDOW = timedelta(hours=24)
CHECKOUT_SESSION_LIFETIME = 24 * 3600
STRIPE_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z_]+)?")
# Top-level parameters Stripe documents for each create call (stripe/params/*_create_params.py, 16.1.0); the
# stand-in acts on the ones the billing app uses and accepts, unused, the rest.
CUSTOMER_PARAMS = frozenset({
    "address", "balance", "business_name", "cash_balance", "description", "email", "expand", "individual_name",
    "invoice_prefix", "invoice_settings", "metadata", "name", "next_invoice_sequence", "payment_method", "phone",
    "preferred_locales", "shipping", "source", "tax", "tax_exempt", "tax_id_data", "test_clock", "validate"})
CHECKOUT_PARAMS = frozenset({
    "adaptive_pricing", "after_expiration", "allow_promotion_codes", "allowed_payment_method_types",
    "automatic_tax", "billing_address_collection", "branding_settings", "cancel_url", "client_reference_id",
    "consent_collection", "currency", "custom_fields", "custom_text", "customer", "customer_account",
    "customer_creation", "customer_email", "customer_update", "discounts", "excluded_payment_method_types",
    "expand", "expires_at", "integration_identifier", "invoice_creation", "line_items", "locale",
    "managed_payments", "metadata", "mode", "name_collection", "optional_items", "origin_context",
    "payment_intent_data", "payment_method_collection", "payment_method_configuration", "payment_method_data",
    "payment_method_options", "permissions", "phone_number_collection", "redirect_on_completion", "return_url",
    "saved_payment_method_options", "setup_intent_data", "shipping_address_collection", "shipping_options",
    "submit_type", "subscription_data", "success_url", "tax_id_collection", "ui_mode", "wallet_options"})
PORTAL_PARAMS = frozenset({"after_expiration", "configuration", "customer", "customer_account", "expand",
                           "flow_data", "locale", "on_behalf_of", "return_url"})
HTML = "text/html; charset=utf-8"


def _epoch(moment: datetime | int | None) -> int | None:
    if moment is None or isinstance(moment, int):
        return moment
    return int(moment.timestamp())


def _add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, the day clamped to the month's length (Stripe bills Jan 31 → Feb 28/29)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def _period_end(start: datetime, recurring: dict) -> datetime:
    count = int(recurring.get("interval_count") or 1)
    interval = recurring.get("interval", "month")
    if interval == "year":
        return _add_months(start, 12 * count)
    if interval == "month":
        return _add_months(start, count)
    return start + timedelta(days=(7 if interval == "week" else 1) * count)


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracketed form keys as nested values: ``a[b][c]=v`` → {"a": {"b": {"c": "v"}}}, and a level
    whose keys are all indexes (``line_items[0][price]``, ``expand[]``) → a list in index order."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        parts = [match[1], *re.findall(r"\[([^\[\]]*)\]", match[2])] if match else [key]
        node = root
        for n, part in enumerate(parts):
            if part == "":  # "expand[]": the next index
                part = str(len(node))
            if n == len(parts) - 1:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise _invalid(f"Invalid value for {key}: it is both a value and a hash.", param=key)
                node = child
    return _listify(root)


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v) for k, v in value.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


@dataclass(frozen=True)
class StripeRequest(RecordedRequest):
    """A recorded request; ``form()`` decodes its body (or, for a GET, its query) as Stripe reads it."""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def idempotency_key(self) -> str | None:
        return self.header("Idempotency-Key")

    def fields(self) -> dict[str, str]:
        """The flat form fields, e.g. {"line_items[0][price]": "price_basic"}."""
        return dict(self._pairs())

    def form(self) -> dict[str, Any]:
        return decode_form(self._pairs())

    def _pairs(self) -> list[tuple[str, str]]:
        if self.body:
            return parse_qsl(self.body.decode(), keep_blank_values=True)
        return list(self.query)


@dataclass
class StripeFault(Fault):
    should_retry: bool | None = None


def _error(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
           param: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> StubError:
    error: dict[str, Any] = {"type": type, "message": message}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        error["param"] = param
    return StubError(status, {"error": {**error, **extra}}, headers)


def _invalid(message: str, **kwargs: Any) -> StubError:
    return _error(400, message, **kwargs)


def _missing(kind: str, object_id: str, param: str, status: int = 400) -> StubError:
    return _error(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def _mask(key: str) -> str:
    return key[:8] + "*" * (len(key) - 12) + key[-4:] if len(key) > 12 else "*" * len(key)


def _metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict) or any(isinstance(v, dict | list) for v in value.values()):
        raise _invalid(f"Invalid hash for {param}.", param=param)
    return {k: v for k, v in value.items() if v != ""}  # an empty value unsets the key, as at Stripe


@overload
def _string(params: dict, name: str, *, required: Literal[True]) -> str: ...
@overload
def _string(params: dict, name: str, *, required: bool = False) -> str | None: ...
def _string(params: dict, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if isinstance(value, dict | list):
        raise _invalid(f"Invalid string: {name} must be a string.", param=name)
    if required and not value:
        raise _invalid(f"Missing required param: {name}.", code="parameter_missing", param=name)
    return value or None


def _known(params: dict, allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _invalid(f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


class StripeStub(StubServer):
    """One Stripe account (test mode). Binds its port on construction; ``with`` starts and stops it.

    ``prices``: price id → {"unit_amount", "currency", "recurring": {"interval", "interval_count"}, "product"}.
    ``webhook_url``/``webhook_secret``: where the demo's Pay and portal buttons deliver their events (and
    ``deliver``'s defaults). ``api_version``: the events' ``api_version``. ``wall_clock``: stamp objects with
    the current time instead of the data clock (the standalone demo). ``id_namespace``: put into every id
    (``cus_<namespace>00000000000001``) so two stand-ins' objects never share an id, as Stripe's never do.
    """

    fault_kinds = FAULT_KINDS

    def __init__(self, *, secret_key: str = "sk_test_stub", prices: dict[str, dict] | None = None,
                 port: int = 0, clock: datetime = DEFAULT_CLOCK, webhook_url: str | None = None,
                 webhook_secret: str | None = None, api_version: str = API_VERSION, legacy_fields: bool = True,
                 wall_clock: bool = False, id_namespace: str = "") -> None:
        super().__init__(port=port, clock=clock.astimezone(UTC).replace(microsecond=0))
        self.secret_key = secret_key
        self.prices = {price_id: self._price_form(price_id, spec)
                       for price_id, spec in (DEFAULT_PRICES if prices is None else prices).items()}
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.api_version, self.legacy_fields, self.wall_clock = api_version, legacy_fields, wall_clock
        self.customers_created = 0
        self.events: list[dict] = []  # every event the stand-in generated, oldest first
        self.webhook_responses: list[tuple[int, bytes]] = []  # what ``deliver`` got back, in order
        self._customers: dict[str, dict] = {}
        self._sessions: dict[str, dict] = {}
        self._portal_sessions: dict[str, dict] = {}
        self._subscriptions: dict[str, dict] = {}
        self._invoices: dict[str, dict] = {}
        self._idempotent: dict[str, dict] = {}
        self._counters: Counter[str] = Counter()
        self.id_namespace = id_namespace

    # -- faults, log -------------------------------------------------------------------------------------
    def queue_faults(self, kind: str, count: int = 1, *, status: int = 500, seconds: float = 1.0,
                     path_contains: str = "", should_retry: bool | None = None) -> None:
        """The next ``count`` requests whose path contains ``path_contains`` misbehave as ``kind`` says (see the
        module docstring); ``should_retry`` sets their ``Stripe-Should-Retry`` header (rate_limit: False)."""
        if kind not in self.fault_kinds:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(self.fault_kinds)}")
        if should_retry is None and kind == "rate_limit":
            should_retry = False
        with self._lock:
            self._faults.append(StripeFault(kind, count, lambda path: path_contains in path, status, seconds,
                                            should_retry))

    def _record(self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                body: bytes) -> StripeRequest:
        return StripeRequest(method, path, query, headers, body, time.monotonic())

    def api_requests(self, method: str | None = None, path: str | None = None) -> list[StripeRequest]:
        """The recorded /v1 requests, optionally only one method and path."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/")
                    and (method is None or r.method == method) and (path is None or r.path == path)]

    # -- state API -----------------------------------------------------------------------------------------
    def _now(self) -> int:
        return int(time.time()) if self.wall_clock else int(self.clock.timestamp())

    def _new_id(self, prefix: str) -> str:
        self._counters[prefix] += 1
        return f"{prefix}_{self.id_namespace}{self._counters[prefix]:014d}"

    @staticmethod
    def _price_form(price_id: str, spec: dict) -> dict:
        recurring = spec.get("recurring")
        return {"id": price_id, "object": "price", "active": True, "currency": spec.get("currency", "aud"),
                "unit_amount": int(spec.get("unit_amount", 0)), "livemode": False,
                "product": spec.get("product", f"prod_{price_id.removeprefix('price_')}"),
                "recurring": None if recurring is None else {"interval": recurring.get("interval", "month"),
                                                             "interval_count": int(recurring.get("interval_count", 1))},
                "type": "one_time" if recurring is None else "recurring"}

    def add_customer(self, *, name: str | None = None, email: str | None = None,
                     metadata: dict[str, str] | None = None, **fields: Any) -> dict:
        """A customer, as ``POST /v1/customers`` makes one (counted in ``customers_created``; no event)."""
        with self._lock:
            customer_id = self._new_id("cus")
            self.customers_created += 1
            self._customers[customer_id] = {
                "id": customer_id, "object": "customer", "address": None, "balance": 0, "created": self._now(),
                "currency": None, "default_source": None, "delinquent": False, "description": None,
                "email": email, "invoice_prefix": f"STUB{self.customers_created:04d}",
                "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None},
                "livemode": False, "metadata": dict(metadata or {}), "name": name, "phone": None,
                "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None,
                **fields, "_deleted": False, "_invoices": 0}
            return self.customer(customer_id)

    def customer(self, customer_id: str) -> dict:
        with self._lock:
            record = self._customers[customer_id]
            if record["_deleted"]:
                return {"id": customer_id, "object": "customer", "deleted": True}
            return _public(record)

    def checkout_session(self, session_id: str) -> dict:
        with self._lock:
            return _public(self._sessions[session_id])

    def portal_session(self, session_id: str) -> dict:
        with self._lock:
            return _public(self._portal_sessions[session_id])

    def subscription(self, subscription_id: str) -> dict:
        with self._lock:
            return self._subscription_form(self._subscriptions[subscription_id])

    def subscriptions_of(self, customer_id: str) -> list[dict]:
        with self._lock:
            return [self._subscription_form(s) for s in self._subscriptions.values() if s["customer"] == customer_id]

    def invoice(self, invoice_id: str) -> dict:
        with self._lock:
            return self._invoice_form(self._invoices[invoice_id])

    def _subscription_form(self, record: dict) -> dict:
        form = _public(record)
        if self.legacy_fields:
            item = form["items"]["data"][0]
            form["current_period_start"] = item["current_period_start"]
            form["current_period_end"] = item["current_period_end"]
        return form

    def _invoice_form(self, record: dict) -> dict:
        form = _public(record)
        if self.legacy_fields:
            form["subscription"] = form["parent"]["subscription_details"]["subscription"]
        return form

    def _event(self, type: str, obj: dict, *, previous: dict | None = None, request: dict | None = None) -> dict:
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {"id": self._new_id("evt"), "object": "event", "api_version": self.api_version,
                 "created": self._now(), "data": data, "livemode": False, "pending_webhooks": 1,
                 "request": request or {"id": None, "idempotency_key": None}, "type": type}
        self.events.append(event)
        return copy.deepcopy(event)

    # -- simulating Stripe ---------------------------------------------------------------------------------
    def complete_checkout(self, session_id: str, *, status: str | None = None,
                          trial_days: int | None = None) -> list[dict]:
        """The customer paid: makes the subscription (``status``: "trialing" when there is a trial, else
        "active") and, unless trialing, its first invoice (paid when active, open otherwise); returns the
        events in Stripe's order: [customer.created (only if the session had no customer)],
        checkout.session.completed, customer.subscription.created, invoice.paid | invoice.payment_failed.
        ``trial_days`` defaults to the session's ``subscription_data[trial_period_days]``."""
        with self._lock:
            session = self._sessions[session_id]
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
            events = []
            if session["customer"] is None:
                customer = self.add_customer(email=session["customer_email"])
                events.append(self._event("customer.created", self.customer(customer["id"])))
                session["customer"] = customer["id"]
            trial = int(session["_trial_period_days"] or 0) if trial_days is None else int(trial_days)
            status = status or ("trialing" if trial else "active")
            if status not in SUBSCRIPTION_STATUSES:
                raise ValueError(f"unknown subscription status {status!r}")
            line = session["_line_items"][0]
            subscription = self._new_subscription(session["customer"], line["price"], line["quantity"], status,
                                                  trial, session["_subscription_metadata"])
            invoice = None
            if status != "trialing":
                invoice = self._new_invoice(subscription, paid=status == "active", reason="subscription_create")
            session.update({
                "status": "complete", "url": None, "subscription": subscription["id"],
                "invoice": invoice["id"] if invoice else None,
                "payment_status": "no_payment_required" if status == "trialing" else
                ("paid" if status == "active" else "unpaid")})
            events.append(self._event("checkout.session.completed", _public(session)))
            events.append(self._event("customer.subscription.created", self._subscription_form(subscription)))
            if invoice is not None:
                events.append(self._event("invoice.paid" if invoice["status"] == "paid" else "invoice.payment_failed",
                                          self._invoice_form(invoice)))
            return events

    def _new_subscription(self, customer_id: str, price_id: str, quantity: int, status: str, trial_days: int,
                          metadata: dict[str, str]) -> dict:
        now = self._now()
        start = datetime.fromtimestamp(now, UTC)
        price = self.prices[price_id]
        end = _epoch(start + timedelta(days=trial_days)) if trial_days else \
            _epoch(_period_end(start, price["recurring"] or {}))
        subscription_id = self._new_id("sub")
        record = {
            "id": subscription_id, "object": "subscription", "billing_cycle_anchor": end if trial_days else now,
            "cancel_at": None, "cancel_at_period_end": False, "canceled_at": None,
            "collection_method": "charge_automatically", "created": now, "currency": price["currency"],
            "customer": customer_id, "default_payment_method": None, "ended_at": None,
            "items": {"object": "list", "data": [{
                "id": self._new_id("si"), "object": "subscription_item", "created": now,
                "current_period_end": end, "current_period_start": now, "metadata": {}, "price": dict(price),
                "quantity": quantity, "subscription": subscription_id}],
                "has_more": False, "total_count": 1, "url": f"/v1/subscription_items?subscription={subscription_id}"},
            "latest_invoice": None, "livemode": False, "metadata": dict(metadata), "pause_collection": None,
            "start_date": now, "status": status, "trial_end": end if trial_days else None,
            "trial_start": now if trial_days else None}
        self._subscriptions[subscription_id] = record
        return record

    def _new_invoice(self, subscription: dict, *, paid: bool, reason: str) -> dict:
        now = self._now()
        item = subscription["items"]["data"][0]
        amount = item["price"]["unit_amount"] * item["quantity"]
        customer = self._customers[subscription["customer"]]
        customer["_invoices"] += 1
        invoice_id = self._new_id("in")
        record = {
            "id": invoice_id, "object": "invoice", "amount_due": amount, "amount_paid": amount if paid else 0,
            "amount_remaining": 0 if paid else amount, "attempt_count": 1, "attempted": True,
            "billing_reason": reason, "collection_method": "charge_automatically", "created": now,
            "currency": item["price"]["currency"], "customer": subscription["customer"],
            "customer_email": customer.get("email"), "hosted_invoice_url": f"{self.origin}/invoice/{invoice_id}",
            "invoice_pdf": f"{self.origin}/invoice/{invoice_id}/pdf",
            "lines": {"object": "list", "has_more": False, "total_count": 1, "url": f"/v1/invoices/{invoice_id}/lines",
                      "data": [{"id": self._new_id("il"), "object": "line_item", "amount": amount,
                                "currency": item["price"]["currency"], "quantity": item["quantity"],
                                "period": {"start": item["current_period_start"], "end": item["current_period_end"]},
                                "pricing": {"type": "price_details", "unit_amount_decimal": str(item["price"]["unit_amount"]),
                                            "price_details": {"price": item["price"]["id"],
                                                              "product": item["price"]["product"]}}}]},
            "livemode": False, "next_payment_attempt": None if paid else now + 3 * 24 * 3600,
            "number": f"{customer['invoice_prefix']}-{customer['_invoices']:04d}",
            "parent": {"type": "subscription_details", "quote_details": None,
                       "subscription_details": {"metadata": dict(subscription["metadata"]),
                                                "subscription": subscription["id"]}},
            # Stripe's invoice period looks back (the usage period); the service period is on the line.
            "period_end": now, "period_start": now, "status": "paid" if paid else "open",
            "status_transitions": {"finalized_at": now, "paid_at": now if paid else None}}
        self._invoices[invoice_id] = record
        subscription["latest_invoice"] = invoice_id
        return record

    def subscription_event(self, subscription_id: str, type: str, **changes: Any) -> dict:
        """Apply ``changes`` (status, cancel_at_period_end, cancel_at, canceled_at, ended_at, trial_end,
        current_period_start, current_period_end (epoch or datetime), metadata, price, quantity) and return the
        event of ``type`` (``customer.subscription.updated``, or just "updated"; also deleted, paused, resumed,
        trial_will_end). ``deleted`` cancels it (status canceled, canceled_at and ended_at now), ``paused`` and
        ``resumed`` set paused/active; cancel_at_period_end=True sets cancel_at (the period end) and
        canceled_at (now), False clears them. ``updated`` carries ``previous_attributes``."""
        type = type if type.startswith("customer.subscription.") else f"customer.subscription.{type}"
        if type not in SUBSCRIPTION_EVENTS:
            raise ValueError(f"unknown subscription event {type!r}; expected one of {sorted(SUBSCRIPTION_EVENTS)}")
        unknown = set(changes) - SUBSCRIPTION_CHANGES
        if unknown:
            raise ValueError(f"unknown subscription changes {sorted(unknown)}")
        with self._lock:
            record = self._subscriptions[subscription_id]
            before = self._subscription_form(record)
            now = self._now()
            defaults: dict[str, dict[str, Any]] = {
                "customer.subscription.deleted": {"status": "canceled", "ended_at": now},
                "customer.subscription.paused": {"status": "paused"},
                "customer.subscription.resumed": {"status": "active"}}
            changes = {**defaults.get(type, {}), **changes}
            item = record["items"]["data"][0]
            if "status" in changes and changes["status"] not in SUBSCRIPTION_STATUSES:
                raise ValueError(f"unknown subscription status {changes['status']!r}")
            for name in ("current_period_start", "current_period_end"):
                if name in changes:
                    item[name] = _epoch(changes.pop(name))
            if "price" in changes:
                item["price"] = dict(self.prices[changes.pop("price")])
            if "quantity" in changes:
                item["quantity"] = int(changes.pop("quantity"))
            if "metadata" in changes:
                record["metadata"] = dict(changes.pop("metadata") or {})
            if "cancel_at_period_end" in changes:
                cancel = bool(changes.pop("cancel_at_period_end"))
                record.update(cancel_at_period_end=cancel, cancel_at=item["current_period_end"] if cancel else None,
                              canceled_at=now if cancel else None)
            if type == "customer.subscription.deleted" and record["canceled_at"] is None:
                record["canceled_at"] = now
            record.update({name: _epoch(value) if name != "status" else value for name, value in changes.items()})
            after = self._subscription_form(record)
            previous = {k: v for k, v in before.items() if after.get(k) != v} \
                if type == "customer.subscription.updated" else None
            return self._event(type, after, previous=previous)

    def invoice_event(self, subscription_id: str, type: str) -> dict:
        """A renewal invoice for the subscription: ``invoice.paid`` (paid; the subscription becomes active) or
        ``invoice.payment_failed`` (open, retried in 3 days; the subscription becomes past_due). Returns the
        invoice event (Stripe would also send customer.subscription.updated for the status change: send it with
        ``subscription_event`` when a test needs it)."""
        type = type if type.startswith("invoice.") else f"invoice.{type}"
        if type not in INVOICE_EVENTS:
            raise ValueError(f"unknown invoice event {type!r}; expected one of {sorted(INVOICE_EVENTS)}")
        with self._lock:
            record = self._subscriptions[subscription_id]
            paid = type == "invoice.paid"
            invoice = self._new_invoice(record, paid=paid, reason="subscription_cycle")
            record["status"] = "active" if paid else "past_due"
            return self._event(type, self._invoice_form(invoice))

    def customer_deleted_event(self, customer_id: str) -> dict:
        """Deletes the customer and returns ``customer.deleted`` (with the customer as it was). Stripe also
        cancels the customer's subscriptions, each with its own customer.subscription.deleted event; send those
        with ``subscription_event`` when a test needs them."""
        with self._lock:
            return self._delete_customer(customer_id, None)

    def _delete_customer(self, customer_id: str, request: dict | None) -> dict:
        record = self._customers.get(customer_id)
        if record is None or record["_deleted"]:
            raise _missing("customer", customer_id, "id", status=404)
        last = _public(record)
        record["_deleted"] = True
        return self._event("customer.deleted", last, request=request)

    def deliver(self, event: dict, url: str | None = None, secret: str | None = None, *,
                timestamp: int | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
        """POST ``event`` as Stripe delivers a webhook (JSON, ``Stripe-Signature`` over the body at
        ``timestamp``, default now) to ``url`` (default ``webhook_url``) under ``secret`` (default
        ``webhook_secret``); returns (status, body), 4xx/5xx too, and keeps it in ``webhook_responses``."""
        url, secret = url or self.webhook_url, secret or self.webhook_secret
        if not url or not secret:
            raise ValueError("deliver needs a webhook URL and secret")
        answer = post_event(url, secret, event, timestamp=timestamp, timeout=timeout)
        self.webhook_responses.append(answer)
        return answer

    # -- HTTP ----------------------------------------------------------------------------------------------
    def _respond(self, method: str, path: str, query: list[tuple[str, str]], headers: Any,
                 body: bytes) -> Reply | dict | bytes:
        fault = self._take_fault(path)
        if fault is not None:
            answer = self._fault_answer(fault)
            if answer is not None:
                return answer
        if path.startswith("/v1/") or path == "/v1":
            return self._api(method, path, query, headers, body)
        return self._page(method, path, body)

    def _fault_answer(self, fault: Fault) -> Reply | None:
        retry = getattr(fault, "should_retry", None)
        extra = {} if retry is None else {"Stripe-Should-Retry": "true" if retry else "false"}
        extra["Request-Id"] = self._new_id("req")
        if fault.kind == "delay":
            self._pause(fault.seconds)
            return None
        if fault.kind == "malformed":
            return Reply(b'{"id": "cus_', 200, extra)
        if fault.kind == "rate_limit":
            raise _error(429, "Request rate limit exceeded. Learn more about rate limits here "
                              "https://stripe.com/docs/rate-limits.", code="rate_limit", headers=extra)
        if fault.kind == "card_declined":
            raise _error(402, "Your card was declined.", type="card_error", code="card_declined",
                         decline_code="generic_decline", headers=extra)
        kind = "api_error" if fault.status >= 500 else "invalid_request_error"
        raise _error(fault.status, f"Forced HTTP {fault.status} (stand-in fault).", type=kind, headers=extra)

    def _api(self, method: str, path: str, query: list[tuple[str, str]], headers: Any, body: bytes) -> Reply:
        request_id = self._new_id("req")
        version = headers.get("Stripe-Version") or self.api_version
        common = {"Request-Id": request_id, "Stripe-Version": version}
        try:
            self._authorize(headers)
            if not STRIPE_VERSION.fullmatch(version):
                raise _invalid(f"Invalid Stripe API version: {version}")
            pairs = parse_qsl(body.decode(errors="replace"), keep_blank_values=True) if method == "POST" else query
            params = decode_form(pairs)
            with self._lock:
                key = headers.get("Idempotency-Key") if method == "POST" else None
                replay = self._replay(key, path, pairs) if key else None
                if replay is not None:
                    return Reply(replay["body"], replay["status"],
                                 {**common, "Idempotent-Replayed": "true", "Original-Request": replay["request_id"]})
                answer = self._route(method, path, params, {"id": request_id, "idempotency_key": key})
                answer = self._expand(answer, params.get("expand"))
                if key:
                    self._idempotent[key] = {"path": path, "pairs": sorted(pairs), "body": answer, "status": 200,
                                             "request_id": request_id, "at": self._now()}
                return Reply(answer, 200, common)
        except StubError as err:
            raise StubError(err.status, err.body, {**common, **err.headers}) from None

    def _authorize(self, headers: Any) -> None:
        auth = (headers.get("Authorization") or "").strip()
        key = ""
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        elif auth[:6].lower() == "basic ":
            try:
                key = base64.b64decode(auth[6:]).decode().partition(":")[0]
            except ValueError:
                key = ""
        if not key:
            raise _error(401, "You did not provide an API key. You need to provide your API key in the "
                              "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                              "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details.")
        if not hmac.compare_digest(key.encode(), self.secret_key.encode()):
            raise _error(401, f"Invalid API Key provided: {_mask(key)}")

    def _replay(self, key: str, path: str, pairs: list[tuple[str, str]]) -> dict | None:
        saved = self._idempotent.get(key)
        if saved is None:
            return None
        if self._now() - saved["at"] >= IDEMPOTENCY_WINDOW.total_seconds():
            del self._idempotent[key]
            return None
        if saved["path"] != path:
            raise _invalid(f"Keys for idempotent requests can only be used for the same endpoint they were first "
                           f"used for ('{saved['path']}' vs '{path}'). Try using a key other than '{key}' if you "
                           f"meant to execute a different request.", type="idempotency_error")
        if saved["pairs"] != sorted(pairs):
            raise _invalid(f"Keys for idempotent requests can only be used with the same parameters they were "
                           f"first used with. Try using a key other than '{key}' if you meant to execute a "
                           f"different request.", type="idempotency_error")
        return saved

    def _route(self, method: str, path: str, params: dict, request: dict) -> dict:
        parts = path.strip("/").split("/")[1:]  # after "v1"
        if method == "POST" and parts == ["customers"]:
            return self._create_customer(params, request)
        if method == "POST" and parts == ["checkout", "sessions"]:
            return self._create_checkout_session(params)
        if method == "POST" and parts == ["billing_portal", "sessions"]:
            return self._create_portal_session(params)
        if method == "GET" and parts == ["events"]:
            return self._list_events(params)
        if len(parts) == 2 and parts[0] == "customers" and method in ("GET", "DELETE"):
            if parts[1] not in self._customers or (method == "DELETE" and self._customers[parts[1]]["_deleted"]):
                raise _missing("customer", parts[1], "id", status=404)
            if method == "DELETE":
                self._delete_customer(parts[1], request)
            return self.customer(parts[1])
        lookups: dict[tuple[str, ...], tuple[str, dict[str, dict], Callable[[dict], dict]]] = {
                   ("checkout", "sessions"): ("checkout.session", self._sessions, _public),
                   ("subscriptions",): ("subscription", self._subscriptions, self._subscription_form),
                   ("invoices",): ("invoice", self._invoices, self._invoice_form),
                   ("events",): ("event", {e["id"]: e for e in self.events}, copy.deepcopy)}
        found = lookups.get(tuple(parts[:-1]))
        if method == "GET" and found is not None:
            kind, records, form = found
            if parts[-1] not in records:
                raise _missing(kind, parts[-1], "id", status=404)
            return form(records[parts[-1]])
        raise _error(404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or "
                          f"we can help at https://support.stripe.com/.")

    def _expand(self, answer: dict, expand: Any) -> dict:
        if not expand:
            return answer
        fields = expand if isinstance(expand, list) else [expand]
        answer = copy.deepcopy(answer)
        for n, field in enumerate(fields):
            if field not in EXPANDABLE or field not in answer:
                raise _invalid(f"This property cannot be expanded ({field}).", param=f"expand[{n}]")
            value = answer[field]
            if isinstance(value, str):
                if value in self._customers:
                    answer[field] = self.customer(value)
                elif value in self._subscriptions:
                    answer[field] = self.subscription(value)
                elif value in self._invoices:
                    answer[field] = self.invoice(value)
        return answer

    def _live_customer(self, customer_id: str, param: str = "customer") -> dict:
        record = self._customers.get(customer_id)
        if record is None or record["_deleted"]:
            raise _missing("customer", customer_id, param)
        return record

    def _create_customer(self, params: dict, request: dict) -> dict:
        _known(params, CUSTOMER_PARAMS)
        fields = {name: _string(params, name) for name in ("description", "phone") if name in params}
        customer = self.add_customer(name=_string(params, "name"), email=_string(params, "email"),
                                     metadata=_metadata(params.get("metadata")), **fields)
        self._event("customer.created", customer, request=request)
        return customer

    def _create_checkout_session(self, params: dict) -> dict:
        _known(params, CHECKOUT_PARAMS)
        mode = _string(params, "mode", required=True)
        if mode not in ("payment", "setup", "subscription"):
            raise _invalid("Invalid mode: must be one of payment, setup, or subscription", param="mode")
        if mode != "subscription":
            raise _invalid(f"The Stripe stand-in only simulates mode=subscription, not {mode}.", param="mode")
        success_url = _string(params, "success_url", required=True)
        customer_id = _string(params, "customer")
        if customer_id is not None:
            self._live_customer(customer_id)
            if params.get("customer_email"):
                raise _invalid("You may only specify one of these parameters: customer, customer_email.",
                               param="customer_email")
        line_items = params.get("line_items")
        if not line_items:
            raise _invalid("Missing required param: line_items.", code="parameter_missing", param="line_items")
        if not isinstance(line_items, list) or not all(isinstance(item, dict) for item in line_items):
            raise _invalid("Invalid array", param="line_items")
        lines = []
        for n, item in enumerate(line_items):
            price_id = item.get("price")
            if not price_id:
                raise _invalid(f"Missing required param: line_items[{n}][price].", code="parameter_missing",
                               param=f"line_items[{n}][price]")
            if price_id not in self.prices:
                raise _missing("price", price_id, f"line_items[{n}][price]")
            if self.prices[price_id]["recurring"] is None:
                raise _invalid("You must provide at least one recurring price in `subscription` mode when using "
                               "prices.", param=f"line_items[{n}][price]")
            quantity = item.get("quantity")
            if quantity in (None, ""):
                raise _invalid(f"Quantity is required. Add `quantity` to `line_items[{n}]`", code="parameter_missing",
                               param=f"line_items[{n}][quantity]")
            if not str(quantity).isdigit() or int(quantity) < 1:
                raise _invalid(f"Invalid positive integer: line_items[{n}][quantity]",
                               param=f"line_items[{n}][quantity]")
            lines.append({"price": price_id, "quantity": int(quantity)})
        if len(lines) > 1:
            raise _invalid("The Stripe stand-in simulates one line item.", param="line_items[1]")
        subscription_data = params.get("subscription_data") or {}
        if not isinstance(subscription_data, dict):
            raise _invalid("Invalid hash for subscription_data.", param="subscription_data")
        trial = subscription_data.get("trial_period_days")
        if trial not in (None, "") and (not str(trial).isdigit() or int(trial) < 1):
            raise _invalid("Invalid positive integer: subscription_data[trial_period_days]",
                           param="subscription_data[trial_period_days]")
        price = self.prices[lines[0]["price"]]
        session_id = self._new_id("cs_test")
        now = self._now()
        record = {
            "id": session_id, "object": "checkout.session", "amount_subtotal": price["unit_amount"] * lines[0]["quantity"],
            "amount_total": price["unit_amount"] * lines[0]["quantity"], "cancel_url": _string(params, "cancel_url"),
            "client_reference_id": _string(params, "client_reference_id"), "created": now,
            "currency": price["currency"], "customer": customer_id, "customer_email": _string(params, "customer_email"),
            "expires_at": now + CHECKOUT_SESSION_LIFETIME, "invoice": None, "livemode": False,
            "metadata": _metadata(params.get("metadata")), "mode": mode, "payment_status": "unpaid",
            "status": "open", "subscription": None, "success_url": success_url, "ui_mode": "hosted",
            "url": f"{self.origin}/checkout/{session_id}",
            "_line_items": lines, "_trial_period_days": int(trial) if trial not in (None, "") else None,
            "_subscription_metadata": _metadata(subscription_data.get("metadata"), "subscription_data[metadata]")}
        self._sessions[session_id] = record
        return _public(record)

    def _create_portal_session(self, params: dict) -> dict:
        _known(params, PORTAL_PARAMS)
        customer_id = _string(params, "customer", required=True)
        self._live_customer(customer_id)
        session_id = self._new_id("bps")
        record = {"id": session_id, "object": "billing_portal.session", "configuration": "bpc_stub",
                  "created": self._now(), "customer": customer_id, "flow": None, "livemode": False,
                  "locale": _string(params, "locale"), "on_behalf_of": None,
                  "return_url": _string(params, "return_url"), "url": f"{self.origin}/portal/{session_id}"}
        self._portal_sessions[session_id] = record
        return dict(record)

    def _list_events(self, params: dict) -> dict:
        limit = params.get("limit") or "10"
        if not str(limit).isdigit() or not 1 <= int(limit) <= 100:
            raise _invalid("Invalid integer: limit must be between 1 and 100", param="limit")
        rows = [e for e in reversed(self.events) if not params.get("type") or e["type"] == params["type"]]
        ids = [e["id"] for e in rows]
        for name in ("starting_after", "ending_before"):
            cursor = params.get(name)
            if cursor and cursor not in ids:
                raise _missing("event", cursor, name)
        if params.get("starting_after"):
            rows = rows[ids.index(params["starting_after"]) + 1:]
            page, more = rows[:int(limit)], len(rows) > int(limit)
        elif params.get("ending_before"):
            rows = rows[:ids.index(params["ending_before"])]
            page, more = rows[-int(limit):], len(rows) > int(limit)
        else:
            page, more = rows[:int(limit)], len(rows) > int(limit)
        return {"object": "list", "data": copy.deepcopy(page), "has_more": more, "url": "/v1/events"}

    # -- the demo's pages ----------------------------------------------------------------------------------
    def _page(self, method: str, path: str, body: bytes) -> Reply:
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "checkout" and parts[1] in self._sessions:
            if method == "GET" and len(parts) == 2:
                return self._checkout_page(parts[1])
            if method == "POST" and parts[2:] == ["pay"]:
                return self._pay(parts[1])
        if len(parts) >= 2 and parts[0] == "portal" and parts[1] in self._portal_sessions:
            if method == "GET" and len(parts) == 2:
                return self._portal_page(parts[1])
            if method == "POST" and parts[2:] in (["cancel"], ["renew"]):
                return self._portal_change(parts[1], cancel=parts[2] == "cancel")
        if method == "GET" and len(parts) == 2 and parts[0] == "invoice" and parts[1] in self._invoices:
            invoice = self.invoice(parts[1])
            return _html(f"Invoice {invoice['number']}",
                         f"<p>{_money(invoice['amount_due'], invoice['currency'])}: {html.escape(invoice['status'])}</p>")
        return _html("Not found", "<p>No such page.</p>", 404)

    def _checkout_page(self, session_id: str) -> Reply:
        session = self.checkout_session(session_id)
        if session["status"] != "open":
            return _html("Checkout complete", f'<p>This checkout is {html.escape(session["status"])}.</p>'
                                              f'<p><a href="{_attr(_success_url(session))}">Continue</a></p>')
        with self._lock:
            line = self._sessions[session_id]["_line_items"][0]
            trial = self._sessions[session_id]["_trial_period_days"]
            who = session["customer_email"] or (self.customer(session["customer"]).get("name")
                                                if session["customer"] else "")
        price = self.prices[line["price"]]
        cancel = f'<p><a href="{_attr(session["cancel_url"])}">Cancel</a></p>' if session["cancel_url"] else ""
        return _html("Checkout", (
            f"<p>{html.escape(who or '')}</p>"
            f"<p>{_money(price['unit_amount'] * line['quantity'], price['currency'])} a "
            f"{html.escape(price['recurring']['interval'])}{f', {trial} days free' if trial else ''}</p>"
            f'<form method="post" action="/checkout/{_attr(session_id)}/pay"><button type="submit">Pay</button>'
            f"</form>{cancel}"))

    def _pay(self, session_id: str) -> Reply:
        if self.checkout_session(session_id)["status"] == "open":
            for event in self.complete_checkout(session_id):
                if self.webhook_url and self.webhook_secret:  # outside the lock: the receiver may call back
                    self.deliver(event)
        return Reply("", 303, {"Location": _success_url(self.checkout_session(session_id))})

    def _portal_subscription(self, customer_id: str) -> dict | None:
        live = [s for s in self.subscriptions_of(customer_id) if s["status"] not in ("canceled", "incomplete_expired")]
        return live[-1] if live else None

    def _portal_page(self, session_id: str) -> Reply:
        session = self.portal_session(session_id)
        subscription = self._portal_subscription(session["customer"])
        back = f'<p><a href="{_attr(session["return_url"])}">Return</a></p>' if session["return_url"] else ""
        if subscription is None:
            return _html("Billing", f"<p>No subscription.</p>{back}")
        item = subscription["items"]["data"][0]
        ends = datetime.fromtimestamp(item["current_period_end"], UTC).strftime("%d %b %Y")
        if subscription["cancel_at_period_end"]:
            state, action, label = f"Cancels on {ends}.", "renew", "Don't cancel"
        else:
            state, action, label = f"Renews on {ends}.", "cancel", "Cancel subscription at period end"
        return _html("Billing", (
            f"<p>{html.escape(item['price']['id'])}: {html.escape(subscription['status'])}. {state}</p>"
            f'<form method="post" action="/portal/{_attr(session_id)}/{action}"><button type="submit">{label}'
            f"</button></form>{back}"))

    def _portal_change(self, session_id: str, *, cancel: bool) -> Reply:
        subscription = self._portal_subscription(self.portal_session(session_id)["customer"])
        if subscription is not None and subscription["cancel_at_period_end"] != cancel:
            event = self.subscription_event(subscription["id"], "customer.subscription.updated",
                                            cancel_at_period_end=cancel)
            if self.webhook_url and self.webhook_secret:
                self.deliver(event)
        return Reply("", 303, {"Location": f"/portal/{session_id}"})

    @staticmethod
    def _send(h: Any, reply: Reply) -> None:
        """The base class's answer, plus a ``Content-Type`` of the reply's own (the demo's HTML pages)."""
        if "Content-Type" not in reply.headers:
            StubServer._send(h, reply)
            return
        headers = dict(reply.headers)
        content_type = headers.pop("Content-Type")
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(body)
        except ConnectionError:
            pass


def _public(record: dict) -> dict:
    return copy.deepcopy({k: v for k, v in record.items() if not k.startswith("_")})


def _success_url(session: dict) -> str:
    return session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"])


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {html.escape(currency.upper())}"


def _attr(value: str | None) -> str:
    return html.escape(value or "", quote=True)


def _html(title: str, body: str, status: int = 200) -> Reply:
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} (Stripe '
            f"stand-in)</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Reply(page, status, {"Content-Type": HTML})


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``payload``: ``t=<timestamp>,v1=<hex HMAC-SHA256(secret,
    "{t}.{payload}")>``, made by the stripe library's own signer (the one ``Webhook.construct_event`` checks
    against) when it is installed; ``timestamp`` defaults to now (Stripe rejects one over 300 s old)."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    try:
        from stripe import WebhookSignature
    except ImportError:  # the same algorithm, by the documentation
        digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={stamp},v1={digest}"
    return WebhookSignature.generate_signature_header(payload.decode("utf-8"), secret, timestamp=stamp)


def event_body(event: dict) -> bytes:
    """An event as Stripe's webhook body (pretty-printed JSON)."""
    return json.dumps(event, indent=2).encode()


def post_event(url: str, secret: str, event: dict | bytes, *, timestamp: int | None = None,
               timeout: float = 10.0) -> tuple[int, bytes]:
    """POST one webhook delivery to ``url`` as Stripe does; returns (status, body), 4xx/5xx too, or
    (0, error) when the receiver could not be reached."""
    body = event if isinstance(event, bytes) else event_body(event)
    return post_delivery(url, body, {"Content-Type": "application/json; charset=utf-8",
                                     "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                                     "Stripe-Signature": sign_payload(body, secret, timestamp)}, timeout=timeout)


def _price_arg(text: str) -> tuple[str, dict]:
    """``price_basic=4900:aud:month`` → ("price_basic", {...})."""
    price_id, _, spec = text.partition("=")
    amount, currency, interval = (spec.split(":") + ["", "", ""])[:3]
    return price_id, {"unit_amount": int(amount or 0), "currency": currency or "aud",
                      "recurring": {"interval": interval or "month"}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Stripe API stand-in in the foreground.")
    parser.add_argument("--port", type=int, default=8785)
    parser.add_argument("--secret-key", default="sk_test_demo")
    parser.add_argument("--webhook-url", default=None, help="where the Pay and portal buttons deliver events")
    parser.add_argument("--webhook-secret", default=None)
    parser.add_argument("--price", action="append", type=_price_arg, default=None, metavar="ID=CENTS:CUR:INTERVAL",
                        help="a known price (repeatable); default price_basic=4900:aud:month")
    args = parser.parse_args(argv)
    stub = StripeStub(secret_key=args.secret_key, port=args.port, webhook_url=args.webhook_url,
                      webhook_secret=args.webhook_secret, prices=dict(args.price) if args.price else None,
                      clock=datetime.now(UTC), wall_clock=True)
    print(f"Stripe stand-in at {stub.base_url} (prices: {', '.join(stub.prices)}); Ctrl-C to stop", flush=True)
    stub.serve_until_interrupted()


if __name__ == "__main__":
    main()
