"""POST /webhooks/clerk/: rate-limited, Svix-verified, deduplicated by svix-id, dispatched to services by type.

Answers: 400 for what is not a signed Clerk delivery (bad signature, not UTF-8); 2xx for every signed
delivery processed, ignored, duplicate or *failed* (data that cannot be stored is recorded as a failed
WebhookDelivery with its error and acknowledged once, since Svix would otherwise retry it for days); 409 when
an event must wait for its organization to be provisioned (not recorded, so Svix redelivers it).
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from svix.webhooks import Webhook, WebhookVerificationError

from routiq.throttle import throttle
from tenants.clerk import events as clerk_events
from tenants.clerk.events import MalformedEvent, RetryLater
from tenants.models import WebhookDelivery

logger = logging.getLogger(__name__)
DELIVERY_FAILED = "failed"
# Errors that mean "this event's data cannot be stored", as opposed to the database or Redis being down
# (those are not caught: a 500 makes Svix retry, which is right for a transient failure).
UNSTORABLE = (MalformedEvent, KeyError, TypeError, ValueError, DataError, IntegrityError)

__all__ = ["MalformedEvent", "clerk_webhook", "record_delivery"]


def record_delivery(provider: str, delivery_id: str, event_type: str) -> WebhookDelivery | None:
    """Store the delivery id; None if it was already received. Call inside the processing transaction."""
    try:
        with transaction.atomic():
            return WebhookDelivery.objects.create(provider=provider, delivery_id=delivery_id,
                                                  event_type=event_type[:100])
    except IntegrityError:
        return None


def parse_event(body: str) -> tuple[str, dict]:
    event = json.loads(body)
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedEvent("not an event object with a type")
    if not isinstance(event.get("data"), dict):
        raise MalformedEvent("data is not an object")
    return event["type"], event["data"]


@csrf_exempt
@require_POST
@throttle(scope="webhooks:clerk", limit_per_minute=lambda: settings.WEBHOOK_RATE_LIMIT_PER_MINUTE)
def clerk_webhook(request):
    if not settings.CLERK_WEBHOOK_SECRET:
        return JsonResponse({"error": "webhook secret not configured"}, status=503)
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return JsonResponse({"error": "body is not UTF-8"}, status=400)
    headers = {name: request.headers.get(name, "") for name in ("svix-id", "svix-timestamp", "svix-signature")}
    try:
        Webhook(settings.CLERK_WEBHOOK_SECRET).verify(body, headers)
    except WebhookVerificationError as exc:
        logger.warning("clerk webhook rejected: %s", exc)
        return JsonResponse({"error": "invalid signature"}, status=400)
    delivery_id = headers["svix-id"]
    if len(delivery_id) > WebhookDelivery._meta.get_field("delivery_id").max_length or "\x00" in delivery_id:
        return JsonResponse({"error": "invalid svix-id"}, status=400)

    # svix 2.9's verify() returns None: parse the verified body ourselves.
    try:
        event_type, data = parse_event(body)
    except ValueError as exc:  # JSONDecodeError and MalformedEvent are ValueErrors
        return record_failure(delivery_id, "", exc)
    try:
        with transaction.atomic():
            delivery = record_delivery("clerk", delivery_id, event_type.replace("\x00", ""))
            if delivery is None:
                return JsonResponse({"status": "duplicate"})
            try:
                with transaction.atomic():
                    handled = clerk_events.dispatch(event_type, data)
            except UNSTORABLE as exc:
                mark_failed(delivery, exc)
                return JsonResponse({"status": DELIVERY_FAILED})
    except RetryLater as exc:
        # Rolled back with the delivery row, so the redelivery is processed afresh.
        logger.info("clerk webhook deferred svix_id=%s: %s", delivery_id, exc)
        return JsonResponse({"status": "retry", "reason": str(exc)}, status=409)
    return JsonResponse({"status": "processed" if handled else "ignored"})


def record_failure(delivery_id: str, event_type: str, exc: Exception) -> JsonResponse:
    with transaction.atomic():
        delivery = record_delivery("clerk", delivery_id, event_type)
        if delivery is None:
            return JsonResponse({"status": "duplicate"})
        mark_failed(delivery, exc)
    return JsonResponse({"status": DELIVERY_FAILED})


def mark_failed(delivery: WebhookDelivery, exc: Exception) -> None:
    logger.error("clerk webhook failed svix_id=%s type=%s: %r", delivery.delivery_id, delivery.event_type, exc,
                 exc_info=exc)
    delivery.status, delivery.error = DELIVERY_FAILED, repr(exc).replace("\x00", "")[:2000]
    delivery.save(update_fields=["status", "error"])
