"""``POST /webhooks/stripe/``: verify -> store the event once -> process it once -> answer.

Stripe's contract differs from the other vendors' in one way that matters (routiq/webhooks.py acknowledges
a delivery it cannot store, because Chatwoot or Svix would otherwise retry a hopeless one for days): a
billing event must not be lost, so a failure while processing answers 500 and Stripe retries it (for up to
three days), while the event row keeps the error for an operator and processing leaves nothing half-done.

- The signature (``Stripe-Signature``, HMAC over the raw body, STRIPE_WEBHOOK_TOLERANCE_SECONDS) is checked
  by the stripe library against each of STRIPE_WEBHOOK_SECRETS (two during a rotation): 400, nothing stored.
- The event is stored by its id (``billing.StripeEvent``) and its row locked; a second delivery of the same
  event, even at the same moment, waits for the first and finds it processed.
- The organization is the one whose Stripe customer the event names (or, before its customer id is
  stored, the one our Checkout Session named); the event is processed with it bound, as a request is.
  An event for no organization of ours is stored and ignored; unknown types are stored and acknowledged.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import services
from billing.models import StripeEvent
from routiq import safe_json
from routiq.webhooks import throttled
from tenants.models import Organization
from tenants.rls.binding import NoOrganizationBound, bind_organization, platform_access, write_alias

logger = logging.getLogger(__name__)

PROCESSED, IGNORED, DUPLICATE, FAILED = "processed", "ignored", "duplicate", "failed"
SUBSCRIPTION_EVENTS = {
    "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
    "customer.subscription.paused", "customer.subscription.resumed", "customer.subscription.trial_will_end",
}


class EventRejected(Exception):
    pass


def verify(body: bytes, signature: str) -> dict:
    """The event, if ``signature`` is Stripe's for ``body`` under one of our secrets; else EventRejected."""
    if not signature:
        raise EventRejected("missing Stripe-Signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected("body is not UTF-8") from exc
    if signed_in_the_future(signature):
        raise EventRejected("signature timestamp is in the future")
    for secret in settings.STRIPE_WEBHOOK_SECRETS:
        try:
            stripe.WebhookSignature.verify_header(text, signature, secret,
                                                  tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise EventRejected("signature does not verify (or its timestamp is outside the tolerance)")
    try:
        event = safe_json.loads(text)
    except ValueError as exc:
        raise EventRejected("body is not JSON") from exc
    if not is_event(event) or "\\u0000" in text:  # PostgreSQL's jsonb cannot hold a NUL
        raise EventRejected("not a Stripe event")
    return event


def signed_in_the_future(signature: str) -> bool:
    """The library refuses only old timestamps; one beyond the tolerance ahead is as suspect (Svix and
    Chatwoot refuse both)."""
    stamps = [part[2:] for part in signature.split(",") if part.startswith("t=")]
    try:
        return bool(stamps) and int(stamps[0]) > time.time() + settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
    except ValueError:
        return False  # the library refuses a header it cannot read


def is_event(event) -> bool:
    return (isinstance(event, dict) and isinstance(event.get("id"), str) and 0 < len(event["id"]) <= 255
            and isinstance(event.get("type"), str) and isinstance(event.get("created"), int)
            and 0 <= event["created"] < 10**10
            and isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("object"), dict))


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    if (refused := throttled(request, "stripe")) is not None:
        return refused
    if not settings.STRIPE_WEBHOOK_SECRETS:
        return JsonResponse({"error": "Stripe webhooks are not configured"}, status=503)
    try:
        event = verify(request.body, request.headers.get("Stripe-Signature", ""))
    except EventRejected as exc:
        logger.warning("stripe webhook rejected: %s", exc)
        return JsonResponse({"error": str(exc)}, status=400)
    outcome = receive_event(event)
    return JsonResponse({"status": outcome}, status=500 if outcome == FAILED else 200)


# -- store once, process once --------------------------------------------------------------------------
def receive_event(event: dict) -> str:
    organization = organization_for_event(event)
    try:
        if organization is None:
            return store_unowned(event)
        with bind_organization(organization):
            return process_once(event, organization, reprocess=False)
    except NoOrganizationBound:  # deactivated between the lookup and the binding
        return store_unowned(event)


def store_unowned(event: dict) -> str:
    """An event for no active organization of ours (another product on the same Stripe account, a deleted
    clinic): kept for the record, answered 200 so Stripe stops sending it."""
    with platform_access("stripe webhook: an event for no organization"), transaction.atomic(using=write_alias()):
        created = insert_event(event, organization=None)
    logger.info("stripe event %s type=%s names no organization: stored and ignored", event["id"], event["type"])
    return IGNORED if created else DUPLICATE


def insert_event(event: dict, *, organization: Organization | None) -> bool:
    """Store the event unless its id is stored; a concurrent insert of the same id waits for ours."""
    try:
        with transaction.atomic(using=write_alias()):
            StripeEvent.objects.using(write_alias()).create(
                id=event["id"], organization=organization, type=str(event["type"])[:100],
                created=event_time(event), livemode=bool(event.get("livemode")), payload=event,
                processed_at=timezone.now() if organization is None else None,
                outcome=IGNORED if organization is None else "",
            )
        return True
    except IntegrityError:
        return False


def process_once(event: dict, organization: Organization, *, reprocess: bool) -> str:
    """With ``organization`` bound: store, lock, apply once. A failure rolls back the application, keeps the
    error on the event row, and returns FAILED (answered 500: Stripe retries)."""
    with transaction.atomic():
        insert_event(event, organization=organization)
        stored = StripeEvent.objects.select_for_update().filter(pk=event["id"]).first()
        if stored is None:
            return DUPLICATE  # stored earlier as belonging to no organization
        if stored.processed_at is not None and not reprocess:
            return DUPLICATE
        try:
            with transaction.atomic():
                handled = apply_event(event, organization)
        except Exception as exc:  # the boundary: whatever failed, nothing of it stays, and Stripe retries
            logger.exception("stripe event %s type=%s failed organization_id=%s", event["id"], event["type"],
                             organization.pk)
            stored.outcome, stored.error = FAILED, repr(exc).replace("\x00", "")[:2000]
            stored.save(update_fields=["outcome", "error"])
            return FAILED
        stored.processed_at, stored.error = timezone.now(), ""
        stored.outcome = PROCESSED if handled else IGNORED
        stored.save(update_fields=["processed_at", "outcome", "error"])
        return stored.outcome


def event_reprocess(stored: StripeEvent) -> str:
    """The admin's "reprocess": apply a stored event again (safe: older news never overrides newer)."""
    event = stored.payload
    organization = stored.organization or organization_for_event(event)
    if organization is None or not organization.is_active:
        return IGNORED
    with bind_organization(organization):
        return process_once(event, organization, reprocess=True)


# -- which organization, what to do --------------------------------------------------------------------
def event_time(event: dict) -> datetime:
    at = services.from_epoch(event["created"])
    assert at is not None  # the event was accepted with an integer "created"
    return at


def organization_for_event(event: dict) -> Organization | None:
    """The active organization whose Stripe customer the event names; for a Checkout Session completed
    before the customer id was stored, the organization it was opened for (if it has no other customer)."""
    obj = event["data"]["object"]
    customer_id = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    if isinstance(customer_id, str) and customer_id:
        organization = Organization.objects.filter(stripe_customer_id=customer_id, is_active=True).first()
        if organization is not None:
            return organization
    if event["type"] == "checkout.session.completed":
        try:
            reference = uuid.UUID(str(obj.get("client_reference_id")))
        except ValueError:  # not one of our ids
            return None
        return Organization.objects.filter(pk=reference, stripe_customer_id="", is_active=True).first()
    return None


def apply_event(event: dict, organization: Organization) -> bool:
    """Dispatch by type; False for a type we store but do not act on."""
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return False
    handler(organization=organization, obj=event["data"]["object"], at=event_time(event), event_id=event["id"])
    return True


def on_subscription(*, organization, obj, at, event_id) -> None:
    services.subscription_apply(organization=organization, subscription=obj, at=at, event_id=event_id)


def on_checkout_completed(*, organization, obj, at, event_id) -> None:
    if obj.get("mode") == "subscription":
        services.checkout_completed(organization=organization, session=obj, at=at, event_id=event_id)


def on_invoice(paid: bool) -> Callable[..., None]:
    def handle(*, organization, obj, at, event_id) -> None:
        services.invoice_apply(organization=organization, invoice=obj, at=at, paid=paid, event_id=event_id)

    return handle


def on_customer_deleted(*, organization, obj, at, event_id) -> None:
    services.customer_deleted(organization=organization, customer=obj, at=at, event_id=event_id)


HANDLERS: dict[str, Callable[..., Any]] = {
    **dict.fromkeys(SUBSCRIPTION_EVENTS, on_subscription),
    "checkout.session.completed": on_checkout_completed,
    "invoice.paid": on_invoice(paid=True),
    "invoice.payment_failed": on_invoice(paid=False),
    "customer.deleted": on_customer_deleted,
}
