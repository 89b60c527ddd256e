"""POST /webhooks/clerk/: Svix-verified Clerk events on the shared webhook frame (routiq/webhooks.py).

What is Clerk's lives here: the Svix signature (svix-id, svix-timestamp, svix-signature; stale timestamps
refused by the Svix library), the event's shape, and dispatch by type to tenants/clerk/events.py. The frame
does the rest: rate limit, record the delivery once by svix-id, run the handler in that transaction.

Answers: 400 for what is not a signed Clerk delivery (bad signature, not UTF-8, an unusable svix-id); 503
when no secret is configured; 2xx for every signed delivery processed, ignored, duplicate or *failed* (a
signed body that is not an event, or data that cannot be stored, is recorded as a failed WebhookDelivery
with its error and acknowledged once, since Svix would otherwise retry it for days); 409 when an event must
wait for its organization to be provisioned (not recorded, so Svix redelivers it).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from svix.webhooks import Webhook, WebhookVerificationError

from routiq import safe_json, webhooks
from routiq.webhooks import Verified, WebhookRejected
from tenants.clerk import events as clerk_events
from tenants.clerk.events import MalformedEvent

logger = logging.getLogger(__name__)
PROVIDER = "clerk"

__all__ = ["MalformedEvent", "clerk_webhook"]


def parse_event(body: str) -> tuple[str, dict]:
    event = safe_json.loads(body)
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedEvent("not an event object with a type")
    if not isinstance(event.get("data"), dict):
        raise MalformedEvent("data is not an object")
    return event["type"], event["data"]


def verify(request) -> Verified:
    if not settings.CLERK_WEBHOOK_SECRET:
        raise WebhookRejected(503, "webhook secret not configured")
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRejected(400, "body is not UTF-8") from exc
    headers = {name: request.headers.get(name, "") for name in ("svix-id", "svix-timestamp", "svix-signature")}
    try:
        Webhook(settings.CLERK_WEBHOOK_SECRET).verify(body, headers)
    except WebhookVerificationError as exc:
        raise WebhookRejected(400, "invalid signature") from exc
    # svix 2.9's verify() returns None: parse the verified body ourselves. A signed body that is not an
    # event is still a delivery: handle() parses it again and raises, and the frame records it as failed.
    try:
        event_type, _ = parse_event(body)
    except ValueError:  # JSONDecodeError and MalformedEvent are ValueErrors
        event_type = ""
    return Verified(delivery_id=headers["svix-id"], event_type=event_type, payload=body)


def handle(verified: Verified) -> bool:
    event_type, data = parse_event(verified.payload)
    try:
        return clerk_events.dispatch(event_type, data)
    except clerk_events.RetryLater as exc:
        raise webhooks.RetryLater(str(exc)) from exc


@csrf_exempt
@require_POST
def clerk_webhook(request):
    return webhooks.receive(request, provider=PROVIDER, verify=verify, handle=handle)
