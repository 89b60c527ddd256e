"""Chatwoot's webhooks and ManyChat's External Requests, on the shared frame (routiq/webhooks.py).

Both arrive at ``/webhooks/<vendor>/<organization webhook token>/``: the token, compared in constant time,
is the only thing that names the organization (an unknown token is 404, nothing written). Every id inside a
payload is then resolved by the services in that organization only, bound by the frame: a payload naming
another clinic's conversation creates one in this clinic, it never reaches the other.

Chatwoot (>= 4.11.2 signs account webhooks): when the organization's Chatwoot credential has a webhook
secret, ``X-Chatwoot-Signature`` must be ``sha256=`` + HMAC-SHA256 of ``"{X-Chatwoot-Timestamp}.{raw body}"``
(401 otherwise) and the timestamp within five minutes (400 otherwise: a captured delivery replayed later).
``X-Chatwoot-Delivery`` is the idempotency key; an older Chatwoot sends none, and then the body's digest is
(the same body twice is the same delivery). Everything a delivery needs is read in ``verify``, so a malformed
body is a 400 with nothing written; ``handle`` only writes.

ManyChat has no webhooks: a flow's External Request (a POST of JSON the clinic composes) sends
``{subscriber_id, channel, text, time, [name, phone, email, direction]}``. When the ManyChat credential has a
webhook secret, the request must carry it in ``X-Routiq-Webhook-Secret`` (ManyChat lets a flow set headers).
ManyChat gives messages no id, so the message's id is a digest of (subscriber, time, text): a flow that
retries records the message once.

Applied, not enqueued: a delivery is one conversation, one message and a contact match — about 27 indexed
statements. Measured end to end through Django (throttle, token, secret, HMAC, delivery row, matching,
upserts, counters) at about 45 ms a delivery on a loaded development machine (load 4-5), far within the
second vendors wait (messaging/tests/test_webhooks.py keeps a bound on it). A job would add a Redis round
trip and a worker's pickup, and a window in which the inbox does not show a message already acknowledged.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from datetime import UTC, datetime

from django.db import transaction
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from messaging.chatwoot_records import (
    ConversationRow,
    MessageRow,
    contact_identity,
    conversation_row,
    message_row,
    text,
)
from messaging.matching import ExternalIdentity, contacts_for_identities
from messaging.services import conversations_upsert, messages_upsert
from patients.jobs import schedule_dashboard_refresh
from routiq import safe_json
from routiq.sync import MalformedRecord
from routiq.webhooks import Verified, WebhookRejected, receive
from tenants.credentials import credential_get
from tenants.crypto import CredentialDecryptionError
from tenants.models import ApiCredential, Organization, Provider
from tenants.rls.binding import bind_organization
from tenants.webhook_endpoints import credential_webhook_secret, organization_for_webhook_token

TIMESTAMP_TOLERANCE = 300  # seconds, as Chatwoot's and Stripe's signing schemes expect
MESSAGE_EVENTS = frozenset({"message_created", "message_updated"})
CONVERSATION_EVENTS = frozenset({"conversation_created", "conversation_status_changed", "conversation_updated"})
CONTACT_EVENTS = frozenset({"contact_created", "contact_updated"})
MANYCHAT_SECRET_HEADER = "X-Routiq-Webhook-Secret"
MAX_BODY = 1_000_000  # a message event is a few kilobytes; anything this large is not one


# -- shared ------------------------------------------------------------------------------------------
def _organization(token: str) -> Organization:
    organization = organization_for_webhook_token(token)
    if organization is None:
        raise WebhookRejected(404, "unknown webhook")
    return organization


def _credential_and_secret(organization: Organization, provider: str) -> tuple[ApiCredential | None, str]:
    with bind_organization(organization):
        credential = credential_get(organization=organization, provider=provider)
    try:
        return credential, credential_webhook_secret(credential)
    except CredentialDecryptionError:
        # Accepting unsigned deliveries because a key went missing would open the door: refuse instead.
        raise WebhookRejected(503, "webhook secret unreadable") from None


def _json_object(request) -> dict:
    if len(request.body) > MAX_BODY:
        raise WebhookRejected(400, "body too large")
    try:
        body = safe_json.loads(request.body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise WebhookRejected(400, "body is not JSON") from None
    if not isinstance(body, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    return body


# -- Chatwoot ----------------------------------------------------------------------------------------
def chatwoot_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _check_chatwoot_signature(request, secret: str, now: float) -> None:
    stamp = request.headers.get("X-Chatwoot-Timestamp", "").strip()
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise WebhookRejected(400, "missing or invalid timestamp")
    given = request.headers.get("X-Chatwoot-Signature", "").strip()
    if not hmac.compare_digest(given.encode(), chatwoot_signature(secret, stamp, request.body).encode()):
        raise WebhookRejected(401, "invalid signature")
    if abs(now - int(stamp)) > TIMESTAMP_TOLERANCE:
        raise WebhookRejected(400, "stale timestamp")


def verify_chatwoot(request, *, token: str, clock=time.time) -> Verified:
    organization = _organization(token)
    credential, secret = _credential_and_secret(organization, Provider.CHATWOOT)
    if secret:
        _check_chatwoot_signature(request, secret, clock())
    body = _json_object(request)
    event = body.get("event")
    if not isinstance(event, str) or not event:
        raise WebhookRejected(400, "no event")
    account = body.get("account")
    if (credential is not None and credential.account_id and isinstance(account, dict)
            and str(account.get("id")) != credential.account_id):
        # Another Chatwoot account's webhook pointed at this clinic's URL: its ids mean nothing here.
        raise WebhookRejected(400, "delivery from another Chatwoot account")
    delivery_id = request.headers.get("X-Chatwoot-Delivery", "").strip()
    if not delivery_id:
        delivery_id = "sha256:" + hashlib.sha256(request.body).hexdigest()
    try:
        work = chatwoot_work(event, body)
    except MalformedRecord as exc:
        raise WebhookRejected(400, f"malformed {event}: {exc}") from None
    return Verified(delivery_id=delivery_id, event_type=event, payload=work, organization=organization)


def chatwoot_work(event: str, body: dict) -> tuple[str, list] | None:
    """What the event asks to write, read before anything is written (None: an event we do not keep)."""
    if event in MESSAGE_EVENTS:
        row = message_row(body)
        return None if row is None else ("messages", [row])
    if event in CONVERSATION_EVENTS:
        return "conversations", [conversation_row(body)]
    if event in CONTACT_EVENTS:
        return "contacts", [contact_identity(body)]
    return None


def handle_chatwoot(verified: Verified) -> bool:
    assert verified.organization is not None  # verify_chatwoot found it from the URL's token
    return apply(verified.organization, verified.payload)


def apply(organization: Organization, work: tuple[str, list] | None) -> bool:
    if work is None:
        return False
    kind, rows = work
    if kind == "messages":
        messages_upsert(organization=organization, rows=rows)
        # Live messages move the dashboard's conversation figures; a sync may find nothing new after them.
        # Debounced (one refresh a window); robust: a Redis hiccup must not turn a stored delivery into a 500.
        transaction.on_commit(lambda: schedule_dashboard_refresh(organization), robust=True)
    elif kind == "conversations":
        conversations_upsert(organization=organization, rows=rows)
    else:
        contacts_for_identities(organization=organization, identities=rows)
    return True


@csrf_exempt
@require_POST
def chatwoot_webhook(request, token: str):
    return receive(request, provider=Provider.CHATWOOT, verify=functools.partial(verify_chatwoot, token=token),
                   handle=handle_chatwoot)


# -- ManyChat ----------------------------------------------------------------------------------------
def manychat_time(value) -> datetime:
    """Epoch seconds (or milliseconds) or an ISO time with its offset -> aware UTC, to the second (messages
    are keyed on their time, and a flow may send the same moment either way)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int | float):
            parsed = datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
        elif isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if parsed.tzinfo is None:  # a wall time in an unknown zone would file the message hours off
                raise ValueError
        else:
            raise ValueError
    except (ValueError, OverflowError, OSError):
        raise MalformedRecord("time is not an epoch or an ISO time with its offset") from None
    return parsed.astimezone(UTC).replace(microsecond=0)


def manychat_rows(body: dict) -> MessageRow:
    subscriber_id = body.get("subscriber_id")
    if isinstance(subscriber_id, int) and not isinstance(subscriber_id, bool):
        subscriber_id = str(subscriber_id)
    if not (isinstance(subscriber_id, str) and subscriber_id.isascii() and subscriber_id.isdigit()
            and len(subscriber_id) <= 30):
        raise MalformedRecord("subscriber_id is not a ManyChat subscriber id")
    content = text(body.get("text"), 100_000)
    if not content.strip():
        raise MalformedRecord("no text")
    sent_at = manychat_time(body.get("time"))
    direction = body.get("direction", "inbound")
    if direction not in ("inbound", "outbound"):
        raise MalformedRecord("direction is inbound or outbound")
    name = text(body.get("name"), 400)
    identity = ExternalIdentity(Provider.MANYCHAT.value, subscriber_id, name, text(body.get("phone"), 64),
                                text(body.get("email"), 320))
    conversation = ConversationRow(external_id=subscriber_id, contact=identity,
                                   channel=text(body.get("channel"), 50) or "manychat", inbox_name="ManyChat",
                                   status="open", assignee_name="", last_activity_at=sent_at,
                                   provider=Provider.MANYCHAT.value)
    digest = hashlib.sha256(f"{subscriber_id}\n{sent_at.isoformat()}\n{direction}\n{content}".encode()).hexdigest()
    return MessageRow(conversation_external_id=subscriber_id, external_id=f"er-{digest[:40]}", direction=direction,
                      private=False, sender_name=name if direction == "inbound" else "", content=content,
                      content_type="text", attachments=[], sent_at=sent_at, conversation=conversation,
                      provider=Provider.MANYCHAT.value)


def verify_manychat(request, *, token: str) -> Verified:
    organization = _organization(token)
    _, secret = _credential_and_secret(organization, Provider.MANYCHAT)
    if secret and not hmac.compare_digest(request.headers.get(MANYCHAT_SECRET_HEADER, "").encode(),
                                          secret.encode()):
        raise WebhookRejected(401, "invalid secret")
    body = _json_object(request)
    try:
        row = manychat_rows(body)
    except MalformedRecord as exc:
        raise WebhookRejected(400, f"malformed external request: {exc}") from None
    return Verified(delivery_id=row.external_id, event_type="external_request", payload=("messages", [row]),
                    organization=organization)


def handle_manychat(verified: Verified) -> bool:
    assert verified.organization is not None  # verify_manychat found it from the URL's token
    return apply(verified.organization, verified.payload)


@csrf_exempt
@require_POST
def manychat_webhook(request, token: str):
    return receive(request, provider=Provider.MANYCHAT, verify=functools.partial(verify_manychat, token=token),
                   handle=handle_manychat)
