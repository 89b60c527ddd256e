"""Every vendor's webhook under abuse, by one machine: missing, wrong and tampered signatures, stale timestamps,
hostile and oversize bodies, wrong methods, replays and the same delivery twice at once — never a 500, never a
write; each genuine delivery applied once.

A vendor is described once in VENDORS (where it posts, how it signs, a genuine delivery); the abuse list runs
against each. A new webhook endpoint belongs there (routiq/tests/test_isolation_matrix.py finds every URL).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.test import Client

from billing.models import StripeEvent
from messaging.models import Conversation, Message
from patients.models import Contact
from routiq.testing.chatwoot_stub import ChatwootStub, signed_webhook_headers
from routiq.testing.clerk_stub import new_svix_secret, svix_headers
from routiq.testing.stripe_stub import sign_payload
from routiq.testing.threads import at_once
from tenants.credentials import credential_set
from tenants.models import AuditLog, Organization, User, WebhookDelivery
from tenants.rls.binding import bind_organization, platform_access
from tenants.webhook_endpoints import credential_webhook_secret_set

CLERK_SECRET = new_svix_secret()
CHATWOOT_SECRET, MANYCHAT_SECRET, STRIPE_SECRET = "cw-abuse-secret", "mc-abuse-secret", "whsec_abuse"
STALE = 10 * 60  # seconds: past every vendor's five-minute window
HOSTILE_BODIES = {
    "empty": b"", "truncated": b'{"type": "user.cr', "array": b"[1, 2]", "string": b'"event"', "null": b"null",
    "deep": b"[" * 100_000 + b"]" * 100_000, "not utf-8": b'{"x": "\xff\xfe"}', "nul": b'{"type": "\\u0000"}',
    "huge number": b'{"id": 1' + b"0" * 5000 + b"}",
}
OVERSIZE = b'{"pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'  # over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)


@dataclass(frozen=True)
class Vendor:
    name: str
    path: Callable[[Organization], str]
    # sign(body, timestamp, delivery_id, secret) -> request headers; secret=None: no signature at all
    sign: Callable[[bytes, int, str, str | None], dict[str, str]]
    secret: str
    genuine: Callable[[dict], bytes]  # a real delivery, given the fixture's context
    timestamped: bool = True  # ManyChat's shared header has no time in it
    # Clerk's contract (README, Clerk): a *signed* body that is no event is acknowledged once as a failed
    # delivery, for an operator, since Svix would retry it for days. Every other vendor refuses it (4xx).
    signed_garbage_acknowledged: bool = False


def clerk_sign(body, timestamp, delivery_id, secret):
    return svix_headers(secret, body, msg_id=delivery_id, timestamp=timestamp) if secret else {
        "svix-id": delivery_id, "svix-timestamp": str(timestamp)}


def chatwoot_sign(body, timestamp, delivery_id, secret):
    if secret is None:
        return {"X-Chatwoot-Timestamp": str(timestamp), "X-Chatwoot-Delivery": delivery_id,
                "X-Chatwoot-Signature": ""}
    headers = signed_webhook_headers(secret, body, timestamp=timestamp, delivery_id=delivery_id)
    headers.pop("Content-Type")
    return headers


def manychat_sign(body, timestamp, delivery_id, secret):
    return {"X-Routiq-Webhook-Secret": secret} if secret else {}


def stripe_sign(body, timestamp, delivery_id, secret):
    if secret is None:
        return {}
    try:
        return {"Stripe-Signature": sign_payload(body, secret, timestamp)}
    except UnicodeDecodeError:  # the library signs text; a signature over other bytes is as good as any
        return {"Stripe-Signature": f"t={timestamp},v1={'0' * 64}"}


VENDORS = [
    Vendor("clerk", lambda org: "/webhooks/clerk/", clerk_sign, CLERK_SECRET, lambda ctx: json.dumps(
        {"type": "user.created", "object": "event", "data": {
            "id": f"user_abuse_{ctx['run']}", "first_name": "Ab", "last_name": "Use",
            "primary_email_address_id": "em_1", "email_addresses": [{"id": "em_1", "email_address": "a@x.example"}]}},
    ).encode(), signed_garbage_acknowledged=True),
    Vendor("chatwoot", lambda org: f"/webhooks/chatwoot/{org.webhook_token}/", chatwoot_sign, CHATWOOT_SECRET,
           lambda ctx: json.dumps(ctx["chatwoot_contact"]).encode()),
    Vendor("manychat", lambda org: f"/webhooks/manychat/{org.webhook_token}/", manychat_sign, MANYCHAT_SECRET,
           lambda ctx: json.dumps({"subscriber_id": f"77{ctx['run_digits']}", "channel": "whatsapp",
                                   "text": "hello", "time": 1714520000, "name": "Ab Use"}).encode(),
           timestamped=False),
    Vendor("stripe", lambda org: "/webhooks/stripe/", stripe_sign, STRIPE_SECRET, lambda ctx: json.dumps(
        {"id": f"evt_abuse_{ctx['run']}", "object": "event", "type": "customer.subscription.created",
         "created": int(time.time()), "livemode": False, "data": {"object": {
             "id": "sub_abuse", "object": "subscription", "customer": "cus_abuse", "status": "active",
             "items": {"data": [{"price": {"id": "price_abuse"}, "current_period_end": int(time.time()) + 86400}]}}}},
    ).encode()),
]


def writes(organization) -> tuple:
    """Everything a delivery could have written, anywhere (a delivery recorded as failed is not data)."""
    with platform_access("test: webhook writes"):
        public = (WebhookDelivery.objects.exclude(status="failed").count(), StripeEvent.objects.count(),
                  AuditLog.objects.count(), User.objects.count(), list(Organization.objects.order_by("pk").values_list(
                      "subscription_status", "stripe_subscription_id")))
    with bind_organization(organization):
        tenant = (Contact.objects.count(), Conversation.objects.count(), Message.objects.count())
    return public, tenant


def connect(organization) -> None:
    Organization.objects.filter(pk=organization.pk).update(stripe_customer_id="cus_abuse")
    with bind_organization(organization):
        for provider, secret in (("chatwoot", CHATWOOT_SECRET), ("manychat", MANYCHAT_SECRET)):
            credential_set(organization=organization, provider=provider, secret=f"token-{provider}",
                           base_url="https://chatwoot.example.com" if provider == "chatwoot" else None,
                           account_id="1" if provider == "chatwoot" else None)
            credential_webhook_secret_set(organization=organization, provider=provider, secret=secret)


@pytest.fixture
def context(settings, org_a):
    settings.CLERK_WEBHOOK_SECRET = CLERK_SECRET
    settings.STRIPE_WEBHOOK_SECRETS = [STRIPE_SECRET]
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 100_000
    connect(org_a)
    run = uuid.uuid4().hex[:10]
    with ChatwootStub(account_id=1) as chatwoot:
        contact = chatwoot.add_contact("Ab Use", phone_number="+61 400 999 111")
        yield {"run": run, "run_digits": str(int(run, 16))[:9], "organization": org_a,
               "chatwoot_contact": chatwoot.contact_webhook_payload(contact["id"])}


def post(client, vendor: Vendor, organization, body: bytes, *, timestamp: int | None = None,
         delivery_id: str | None = None, secret: str | None | bool = True, method: str = "post"):
    headers = vendor.sign(body, timestamp or int(time.time()), delivery_id or f"msg_{uuid.uuid4().hex}",
                          vendor.secret if secret is True else secret or None)
    if method == "get":
        return client.get(vendor.path(organization), headers=headers)
    return getattr(client, method)(vendor.path(organization), body, content_type="application/json",
                                   headers=headers)


def refused(response) -> bool:
    return 400 <= response.status_code < 500


def acknowledged_as_failed(response) -> bool:
    return response.status_code == 200 and response.json() == {"status": "failed"}


@pytest.mark.django_db
@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_forged_stale_and_hostile_deliveries_are_refused_and_write_nothing(client, context, vendor):
    organization, body = context["organization"], vendor.genuine(context)
    before = writes(organization)
    other = body.replace(b"Ab", b"Zz") if b"Ab" in body else body + b" "
    attempts = {
        "no signature": post(client, vendor, organization, body, secret=None),
        "wrong secret": post(client, vendor, organization, body, secret="whsec_" + "d3Jvbmctc2VjcmV0LWZvci10ZXN0cw=="),
        "GET": post(client, vendor, organization, body, method="get"),
        "PUT": post(client, vendor, organization, body, method="put"),
        "oversize": post(client, vendor, organization, OVERSIZE),
    }
    if vendor.name != "manychat":  # a shared header secret signs no particular body
        tampered = vendor.sign(body, int(time.time()), "msg_tampered", vendor.secret)
        attempts["tampered"] = client.post(vendor.path(organization), other, content_type="application/json",
                                           headers=tampered)
    if vendor.timestamped:
        attempts["stale"] = post(client, vendor, organization, body, timestamp=int(time.time()) - STALE)
        attempts["future"] = post(client, vendor, organization, body, timestamp=int(time.time()) + STALE)
    signed_garbage = {label: post(client, vendor, organization, hostile) for label, hostile in HOSTILE_BODIES.items()}
    answers = {label: response.status_code for label, response in {**attempts, **signed_garbage}.items()}
    wrong = [label for label, response in attempts.items() if not refused(response)]
    wrong += [label for label, response in signed_garbage.items() if not refused(response) and not (
        vendor.signed_garbage_acknowledged and acknowledged_as_failed(response))]
    assert wrong == [], answers
    assert writes(organization) == before


@pytest.mark.django_db
@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_a_genuine_delivery_is_applied_once_and_its_replay_adds_nothing(client, context, vendor):
    organization, body = context["organization"], vendor.genuine(context)
    before = writes(organization)
    first = post(client, vendor, organization, body, delivery_id="msg_once")
    after_first = writes(organization)
    replay = post(client, vendor, organization, body, delivery_id="msg_once")
    assert first.status_code == 200 and first.json()["status"] == "processed"
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert after_first != before
    assert writes(organization) == after_first


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_the_same_delivery_twice_at_the_same_moment_is_applied_once(settings, vendor):
    settings.CLERK_WEBHOOK_SECRET = CLERK_SECRET
    settings.STRIPE_WEBHOOK_SECRETS = [STRIPE_SECRET]
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 100_000
    organization = Organization.objects.get(clerk_org_id="org_test_harbour")
    connect(organization)
    run = uuid.uuid4().hex[:10]
    with ChatwootStub(account_id=1) as chatwoot:
        contact = chatwoot.add_contact("Ab Use", phone_number="+61 400 999 111")
        body = vendor.genuine({"run": run, "run_digits": str(int(run, 16))[:9],
                               "chatwoot_contact": chatwoot.contact_webhook_payload(contact["id"])})
    headers = vendor.sign(body, int(time.time()), "msg_race", vendor.secret)
    answers = at_once(lambda: Client().post(vendor.path(organization), body, content_type="application/json",
                                            headers=headers).json()["status"], 2)
    assert sorted(answers) == ["duplicate", "processed"]
