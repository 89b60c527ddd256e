"""One way of receiving a vendor's webhook: verify -> record the delivery once -> handle -> answer fast.

A vendor's webhook view is its ``verify`` and its ``handle`` handed to ``receive``:

    @csrf_exempt
    @require_POST
    def chatwoot_webhook(request, token):
        return receive(request, provider="chatwoot", verify=functools.partial(verify_chatwoot, token=token),
                       handle=handle_chatwoot)

``verify(request)`` checks the signature/token/body and returns ``Verified(delivery_id, event_type, payload,
organization)``, or raises ``WebhookRejected(status, reason)``: that 4xx is the answer and nothing is
written. ``handle(verified)`` runs inside the transaction that records the delivery, with the organization
bound when there is one; it applies small writes directly and enqueues anything slow with
``transaction.on_commit`` (so a job never runs for a delivery that rolled back), which keeps the answer well
within the second vendors wait. It returns False for an event it ignores.

Answers:
- 429 with Retry-After over ``WEBHOOK_RATE_LIMIT_PER_MINUTE`` per client address (routiq.throttle);
- the ``WebhookRejected`` status for what is not a genuine delivery (bad signature, stale timestamp, wrong
  URL token, malformed body), with nothing written;
- 200 ``processed`` / ``ignored``; 200 ``duplicate`` for a delivery id already recorded (a replay or a
  vendor retry: processed once);
- 200 ``failed`` for a genuine delivery whose data cannot be stored (``UNSTORABLE`` raised by ``handle``):
  its writes are rolled back, the delivery is recorded as failed with the error for an operator, and it is
  acknowledged once, since the vendor would otherwise retry it for days;
- 409 ``retry`` when ``handle`` raises ``RetryLater`` (it depends on something not there yet): nothing is
  recorded, so the vendor's redelivery is processed afresh;
- any other error in ``handle`` (the database or Redis down) propagates: Django answers 500, nothing is
  recorded, and the vendor retries, which is right for a transient failure.

Delivery ids are recorded per provider, and for a delivery that names an organization, per organization
too (``delivery_key``): one clinic's deliveries can never collide with, or be pre-empted by, another's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from routiq.fields import max_length
from routiq.throttle import client_ip, hit
from tenants.models import Organization, WebhookDelivery
from tenants.rls.binding import bind_organization

logger = logging.getLogger(__name__)

__all__ = ["UNSTORABLE", "RetryLater", "Verified", "WebhookRejected", "delivery_key", "receive", "throttled"]

DELIVERY_FAILED = "failed"
# Errors that mean "this delivery's data cannot be stored", as opposed to the database or Redis being down
# (those are not caught: a 500 makes the vendor retry, which is right for a transient failure).
UNSTORABLE = (KeyError, TypeError, ValueError, DataError, IntegrityError)
SLOW_SECONDS = 1.0  # vendors time out at a few seconds (Chatwoot 5 s, Svix 15 s): say so when we come close


class WebhookRejected(Exception):
    """Not a genuine delivery: answered with ``status`` (a 4xx, or 503 when not configured), nothing written."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class RetryLater(Exception):
    """The delivery depends on something not there yet: answered 409 and not recorded, so it comes back."""


@dataclass(frozen=True)
class Verified:
    delivery_id: str  # the vendor's idempotency key (svix-id, X-Chatwoot-Delivery, ...)
    event_type: str
    payload: Any = field(repr=False)  # may hold patient data: keep it out of logs and tracebacks
    organization: Organization | None = None  # named by the URL token; bound while handle() runs


def delivery_key(provider: str, verified: Verified) -> str:
    """The delivery id as stored: prefixed with the organization for organization-scoped webhooks."""
    if verified.organization is None:
        return verified.delivery_id
    return f"{verified.organization.pk}:{verified.delivery_id}"


def receive(request: HttpRequest, *, provider: str, verify: Callable[[HttpRequest], Verified],
            handle: Callable[[Verified], bool | None]) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if (refused := throttled(request, provider)) is not None:
        return refused
    started = time.monotonic()
    try:
        verified = verify(request)
        key = checked_delivery_key(provider, verified)
    except WebhookRejected as exc:
        logger.warning("%s webhook rejected status=%s: %s", provider, exc.status, exc.reason)
        return JsonResponse({"error": exc.reason}, status=exc.status)
    try:
        response = process(provider, key, verified, handle)
    finally:
        elapsed = time.monotonic() - started
        if elapsed > SLOW_SECONDS:
            logger.warning("%s webhook slow delivery_id=%s seconds=%.2f: move work to a job", provider,
                           verified.delivery_id, elapsed)
    return response


def throttled(request: HttpRequest, provider: str) -> HttpResponse | None:
    """429 with Retry-After once the client address is over WEBHOOK_RATE_LIMIT_PER_MINUTE, else None."""
    wait = hit(f"webhooks:{provider}", client_ip(request), settings.WEBHOOK_RATE_LIMIT_PER_MINUTE)
    if wait is None:
        return None
    logger.warning("%s webhook throttled: limit of %s/min exceeded", provider, settings.WEBHOOK_RATE_LIMIT_PER_MINUTE)
    response = HttpResponse("Too many requests.\n", status=429, content_type="text/plain")
    response["Retry-After"] = str(wait)
    return response


def checked_delivery_key(provider: str, verified: Verified) -> str:
    organization = verified.organization
    if organization is not None and not organization.is_active:
        raise WebhookRejected(404, "unknown webhook")
    key = delivery_key(provider, verified)
    if not verified.delivery_id or len(key) > max_length(WebhookDelivery, "delivery_id") or "\x00" in key:
        raise WebhookRejected(400, "invalid delivery id")
    return key


def process(provider: str, key: str, verified: Verified, handle: Callable[[Verified], bool | None]) -> HttpResponse:
    event_type = verified.event_type.replace("\x00", "")[:100]
    binding = (bind_organization(verified.organization) if verified.organization is not None
               else contextlib.nullcontext())
    try:
        with binding, transaction.atomic():
            delivery = record_delivery(provider, key, event_type)
            if delivery is None:
                return JsonResponse({"status": "duplicate"})
            try:
                with transaction.atomic():
                    handled = handle(verified)
            except UNSTORABLE as exc:
                mark_failed(provider, delivery, exc)
                return JsonResponse({"status": DELIVERY_FAILED})
    except RetryLater as exc:
        # Rolled back with the delivery row, so the redelivery is processed afresh.
        logger.info("%s webhook deferred delivery_id=%s: %s", provider, verified.delivery_id, exc)
        return JsonResponse({"status": "retry", "reason": str(exc)}, status=409)
    except WebhookRejected as exc:  # handle() found the delivery is not what it claims: nothing kept
        logger.warning("%s webhook rejected status=%s: %s", provider, exc.status, exc.reason)
        return JsonResponse({"error": exc.reason}, status=exc.status)
    return JsonResponse({"status": "ignored" if handled is False else "processed"})


def record_delivery(provider: str, delivery_id: str, event_type: str) -> WebhookDelivery | None:
    """Store the delivery id; None if it was already received. Call inside the processing transaction: a
    concurrent copy of the same delivery waits on the unique index until this one commits or rolls back."""
    try:
        with transaction.atomic():
            return WebhookDelivery.objects.create(provider=provider, delivery_id=delivery_id,
                                                  event_type=event_type[:100])
    except IntegrityError:
        return None


def mark_failed(provider: str, delivery: WebhookDelivery, exc: Exception) -> None:
    logger.error("%s webhook failed delivery_id=%s type=%s: %r", provider, delivery.delivery_id,
                 delivery.event_type, exc, exc_info=exc)
    delivery.status, delivery.error = DELIVERY_FAILED, repr(exc).replace("\x00", "")[:2000]
    delivery.save(update_fields=["status", "error"])
