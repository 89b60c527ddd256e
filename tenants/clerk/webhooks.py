"""POST /webhooks/clerk/: Svix-verified, deduplicated by svix-id, dispatched to services by event type."""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from svix.webhooks import Webhook, WebhookVerificationError

from tenants.clerk import events as clerk_events
from tenants.models import WebhookDelivery

logger = logging.getLogger(__name__)


class MalformedEvent(ValueError):
    """The signed payload is not shaped like the Clerk event it claims to be."""


def record_delivery(provider: str, delivery_id: str, event_type: str) -> bool:
    """Store the delivery id; False if it was already processed. Call inside the processing transaction."""
    try:
        with transaction.atomic():
            WebhookDelivery.objects.create(provider=provider, delivery_id=delivery_id, event_type=event_type)
    except IntegrityError:
        return False
    return True


@csrf_exempt
@require_POST
def clerk_webhook(request):
    if not settings.CLERK_WEBHOOK_SECRET:
        return JsonResponse({"error": "webhook secret not configured"}, status=503)
    headers = {name: request.headers.get(name, "") for name in ("svix-id", "svix-timestamp", "svix-signature")}
    try:
        Webhook(settings.CLERK_WEBHOOK_SECRET).verify(request.body, headers)
    except WebhookVerificationError as exc:
        logger.warning("clerk webhook rejected: %s", exc)
        return JsonResponse({"error": "invalid signature"}, status=400)
    # svix 2.9's verify() returns None: parse the verified body ourselves (stack-notes P14).
    try:
        event = json.loads(request.body)
        event_type, data = event["type"], event["data"]
        if not isinstance(data, dict):
            raise MalformedEvent("data is not an object")
        with transaction.atomic():
            if not record_delivery("clerk", headers["svix-id"], event_type):
                return JsonResponse({"status": "duplicate"})
            handled = clerk_events.dispatch(event_type, data)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError and MalformedEvent are ValueErrors
        logger.warning("clerk webhook malformed svix_id=%s: %r", headers["svix-id"], exc)
        return JsonResponse({"error": "malformed event"}, status=400)
    return JsonResponse({"status": "processed" if handled else "ignored"})
