"""Chatwoot webhooks and ManyChat External Requests over HTTP, as the app role, with signed deliveries built
exactly as Chatwoot signs them (routiq.testing.chatwoot_stub)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import django_rq
import pytest

from messaging.models import Conversation, Message
from patients.models import Contact, ContactMatchCandidate
from routiq.testing.chatwoot_stub import ChatwootStub, signed_webhook_headers
from tenants.credentials import credential_set
from tenants.models import WebhookDelivery
from tenants.rls.binding import bind_organization
from tenants.webhook_endpoints import credential_webhook_secret_set

pytestmark = pytest.mark.django_db
SECRET = "chatwoot-webhook-secret-a"
MANYCHAT_SECRET = "manychat-shared-secret-a"


@pytest.fixture(autouse=True)
def clean_throttle():
    yield
    redis = django_rq.get_connection("default")
    keys = [*redis.scan_iter("throttle:webhooks:chatwoot:*"), *redis.scan_iter("throttle:webhooks:manychat:*")]
    if keys:
        redis.delete(*keys)


@pytest.fixture
def chatwoot():
    with ChatwootStub(account_id=1) as stub:
        stub.add_inbox("WhatsApp", "Channel::Whatsapp")
        yield stub


def connect_chatwoot(organization, *, secret: str | None = SECRET, account_id="1"):
    with bind_organization(organization):
        credential_set(organization=organization, provider="chatwoot", secret="api-token-" + organization.slug,
                       base_url="https://chatwoot.example.com", account_id=account_id)
        if secret:
            credential_webhook_secret_set(organization=organization, provider="chatwoot", secret=secret)


@pytest.fixture
def signed_a(org_a):
    connect_chatwoot(org_a)
    return org_a


def post_chatwoot(client, organization, payload, *, secret=SECRET, token=None, timestamp=None, delivery_id=None,
                  body=None):
    body = json.dumps(payload).encode() if body is None else body
    headers = signed_webhook_headers(secret, body, timestamp=timestamp, delivery_id=delivery_id)
    headers.pop("Content-Type")
    return client.post(f"/webhooks/chatwoot/{token or organization.webhook_token}/", body,
                       content_type="application/json", headers=headers)


def rows(organization):
    """Everything a delivery could have written in ``organization``."""
    with bind_organization(organization):
        return (Contact.objects.count(), Conversation.objects.count(), Message.objects.count(),
                WebhookDelivery.objects.count())


def a_message(stub, content="Can I move my appointment?", *, phone="+61 412 345 678"):
    contact = stub.add_contact("Ava Smith", phone_number=phone, email="ava@example.com")
    conversation = stub.add_conversation(contact["id"], inbox_id=1)
    message = stub.add_message(conversation["id"], content)
    return stub.message_webhook_payload(message["id"])


# -- Chatwoot ------------------------------------------------------------------------------------------
def test_a_message_before_the_sync_brings_its_conversation_and_matched_contact(client, signed_a, chatwoot):
    with bind_organization(signed_a):
        ava = Contact.objects.create(organization=signed_a, first_name="Ava", last_name="Smith",
                                     phone_raw="0412345678", phone_e164="+61412345678", cliniko_patient_id=77)
    payload = a_message(chatwoot)

    response = post_chatwoot(client, signed_a, payload)

    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    with bind_organization(signed_a):
        conversation = Conversation.objects.get(provider="chatwoot", external_id=str(payload["conversation"]["id"]))
        message = Message.objects.get(conversation=conversation)
        ava.refresh_from_db()
    assert conversation.contact_id == ava.pk and ava.chatwoot_contact_id == payload["conversation"]["meta"][
        "sender"]["id"]
    assert (message.content, message.direction, conversation.message_count) == (
        "Can I move my appointment?", "inbound", 1)
    assert conversation.unanswered_since == message.sent_at


def test_a_replayed_delivery_is_a_duplicate_and_adds_nothing(client, signed_a, chatwoot):
    payload = a_message(chatwoot)
    first = post_chatwoot(client, signed_a, payload, delivery_id="dlv-1")
    before = rows(signed_a)

    replay = post_chatwoot(client, signed_a, payload, delivery_id="dlv-1")
    retried_as_new = post_chatwoot(client, signed_a, payload, delivery_id="dlv-2")

    assert first.json() == {"status": "processed"}
    assert (replay.status_code, replay.json()) == (200, {"status": "duplicate"})
    assert retried_as_new.json() == {"status": "processed"}
    after = rows(signed_a)
    assert after[:3] == before[:3] and after[3] == before[3] + 1  # same rows; only the second delivery id kept
    with bind_organization(signed_a):
        assert Conversation.objects.get().message_count == 1


def test_a_bad_signature_is_401_and_writes_nothing(client, signed_a, chatwoot):
    before = rows(signed_a)

    wrong = post_chatwoot(client, signed_a, a_message(chatwoot), secret="not-the-secret")
    unsigned = post_chatwoot(client, signed_a, a_message(chatwoot, phone="+61 400 000 001"), secret=None)

    assert (wrong.status_code, unsigned.status_code) == (401, 401)
    assert rows(signed_a) == before


def test_a_signed_body_that_was_changed_is_401(client, signed_a, chatwoot):
    payload = a_message(chatwoot)
    body = json.dumps(payload).encode()
    headers = signed_webhook_headers(SECRET, body)
    headers.pop("Content-Type")
    tampered = body.replace(b"Can I move", b"Please delete")

    response = client.post(f"/webhooks/chatwoot/{signed_a.webhook_token}/", tampered,
                           content_type="application/json", headers=headers)

    assert response.status_code == 401
    assert rows(signed_a)[1:] == (0, 0, 0)


def test_a_stale_timestamp_is_400_and_writes_nothing(client, signed_a, chatwoot):
    before = rows(signed_a)

    response = post_chatwoot(client, signed_a, a_message(chatwoot), timestamp=int(time.time()) - 301)

    assert (response.status_code, response.json()) == (400, {"error": "stale timestamp"})
    assert rows(signed_a) == before


def test_a_wrong_url_token_is_404_and_writes_nothing(client, signed_a, org_b, chatwoot):
    before_a, before_b = rows(signed_a), rows(org_b)

    unknown = post_chatwoot(client, signed_a, a_message(chatwoot), token="x" * 43)
    prefix = post_chatwoot(client, signed_a, a_message(chatwoot), token=signed_a.webhook_token[:-1])

    assert (unknown.status_code, prefix.status_code) == (404, 404)
    assert rows(signed_a) == before_a and rows(org_b) == before_b


def test_a_webhook_for_a_naming_ids_that_exist_only_in_b_never_writes_into_b(client, signed_a, org_b, chatwoot):
    # Organization B has synced conversation 1 with message 1; A's URL now receives a delivery naming them.
    connect_chatwoot(org_b, secret="secret-of-b")
    payload = a_message(chatwoot, "Hello from B's patient")
    assert post_chatwoot(client, org_b, payload, secret="secret-of-b").json() == {"status": "processed"}
    with bind_organization(org_b):
        b_state = sorted(Message.objects.values_list("external_id", "content", "conversation_id"))
        b_conversation = Conversation.objects.values("id", "message_count", "contact_id", "status").get()
    edited = {**payload, "event": "message_updated", "content": "Rewritten through A"}

    response = post_chatwoot(client, signed_a, edited)

    assert response.json() == {"status": "processed"}
    with bind_organization(org_b):
        assert sorted(Message.objects.values_list("external_id", "content", "conversation_id")) == b_state
        assert Conversation.objects.values("id", "message_count", "contact_id", "status").get() == b_conversation
    with bind_organization(signed_a):
        a_conversation = Conversation.objects.get()
        assert a_conversation.pk != b_conversation["id"]
        assert Message.objects.get().content == "Rewritten through A"


def test_a_delivery_from_another_chatwoot_account_is_refused(client, signed_a, chatwoot):
    payload = {**a_message(chatwoot), "account": {"id": 2, "name": "Someone else"}}

    response = post_chatwoot(client, signed_a, payload)

    assert response.status_code == 400
    assert rows(signed_a)[1:] == (0, 0, 0)


def test_a_malformed_body_is_400_and_writes_nothing(client, signed_a, chatwoot):
    not_json = post_chatwoot(client, signed_a, None, body=b"{not json")
    not_object = post_chatwoot(client, signed_a, [1, 2])
    no_event = post_chatwoot(client, signed_a, {"id": 1})
    bad_message = post_chatwoot(client, signed_a, {**a_message(chatwoot), "id": "not-an-id"})

    assert [r.status_code for r in (not_json, not_object, no_event, bad_message)] == [400, 400, 400, 400]
    assert rows(signed_a)[1:] == (0, 0, 0)


def test_unknown_events_are_accepted_and_ignored(client, signed_a):
    response = post_chatwoot(client, signed_a, {"event": "conversation_typing_on", "account": {"id": 1}})

    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    assert rows(signed_a)[1:] == (0, 0, 1)


def test_conversation_events_create_and_update_the_conversation(client, signed_a, chatwoot):
    contact = chatwoot.add_contact("Walk In", phone_number="+61 400 111 222")
    conversation = chatwoot.add_conversation(contact["id"], inbox_id=1)
    created = post_chatwoot(client, signed_a, chatwoot.conversation_webhook_payload(conversation["id"]))
    chatwoot.set_status(conversation["id"], "resolved")

    changed = post_chatwoot(client, signed_a, chatwoot.conversation_webhook_payload(
        conversation["id"], "conversation_status_changed", changed_attributes=[{"status": ["open", "resolved"]}]))

    assert created.json() == changed.json() == {"status": "processed"}
    with bind_organization(signed_a):
        stored = Conversation.objects.get(external_id=str(conversation["id"]))
        lead = Contact.objects.get(pk=stored.contact_id)
    assert stored.status == "resolved"
    assert (lead.cliniko_patient_id, lead.chatwoot_contact_id, lead.first_name) == (None, contact["id"], "Walk")


def test_contact_events_match_the_contact(client, signed_a, chatwoot):
    with bind_organization(signed_a):
        for cliniko_id, first in ((1, "Jo"), (2, "Max")):
            Contact.objects.create(organization=signed_a, first_name=first, last_name="Lee", phone_raw="0412111222",
                                   phone_e164="+61412111222", cliniko_patient_id=cliniko_id)
    contact = chatwoot.add_contact("Jo Lee", phone_number="0412 111 222")

    response = post_chatwoot(client, signed_a, chatwoot.contact_webhook_payload(contact["id"]))

    assert response.json() == {"status": "processed"}
    with bind_organization(signed_a):
        lead = Contact.objects.get(chatwoot_contact_id=contact["id"])
        assert lead.cliniko_patient_id is None
        assert ContactMatchCandidate.objects.filter(lead=lead).count() == 2


def test_without_a_webhook_secret_unsigned_deliveries_are_accepted(client, org_a, chatwoot):
    connect_chatwoot(org_a, secret=None)

    response = post_chatwoot(client, org_a, a_message(chatwoot), secret=None)

    assert response.json() == {"status": "processed"}
    assert rows(org_a)[2] == 1


def test_a_delivery_is_applied_well_within_a_second(client, signed_a, chatwoot):
    """The measurement behind applying deliveries in the request rather than enqueueing them."""
    payloads = [a_message(chatwoot, f"message {n}", phone=f"+61 400 000 {n:03d}") for n in range(20)]

    started = time.perf_counter()
    for payload in payloads:
        assert post_chatwoot(client, signed_a, payload).json() == {"status": "processed"}
    per_delivery = (time.perf_counter() - started) / len(payloads)

    assert per_delivery < 0.25, f"{per_delivery * 1000:.0f} ms per delivery"


# -- ManyChat ------------------------------------------------------------------------------------------
def connect_manychat(organization, *, secret: str | None = None):
    with bind_organization(organization):
        credential_set(organization=organization, provider="manychat", secret="1234:manychat-" + organization.slug)
        if secret:
            credential_webhook_secret_set(organization=organization, provider="manychat", secret=secret)


def post_manychat(client, organization, payload, *, secret=None, token=None):
    headers = {"X-Routiq-Webhook-Secret": secret} if secret else {}
    return client.post(f"/webhooks/manychat/{token or organization.webhook_token}/", json.dumps(payload),
                       content_type="application/json", headers=headers)


EXTERNAL_REQUEST = {"subscriber_id": "9000123", "channel": "whatsapp", "text": "Do you have a slot on Friday?",
                    "time": "2024-05-01T09:30:12+10:00", "name": "Ava Smith", "phone": "+61412345678"}


def test_a_manychat_external_request_is_recorded_in_the_subscribers_conversation(client, org_a):
    connect_manychat(org_a)
    with bind_organization(org_a):
        ava = Contact.objects.create(organization=org_a, first_name="Ava", last_name="Smith", phone_raw="0412 345 678",
                                     phone_e164="+61412345678", cliniko_patient_id=88)

    first = post_manychat(client, org_a, EXTERNAL_REQUEST)
    again = post_manychat(client, org_a, EXTERNAL_REQUEST)
    epoch = post_manychat(client, org_a, {**EXTERNAL_REQUEST, "text": "Or Saturday?", "time": 1714520000})

    assert (first.json(), again.json(), epoch.json()) == (
        {"status": "processed"}, {"status": "duplicate"}, {"status": "processed"})
    with bind_organization(org_a):
        conversation = Conversation.objects.get(provider="manychat", external_id="9000123")
        messages = list(Message.objects.filter(conversation=conversation).order_by("sent_at"))
        ava.refresh_from_db()
    assert (conversation.contact_id, conversation.channel, conversation.message_count) == (ava.pk, "whatsapp", 2)
    assert ava.manychat_subscriber_id == "9000123"
    assert [(m.content, m.direction, m.sent_at) for m in messages] == [
        ("Do you have a slot on Friday?", "inbound", datetime(2024, 4, 30, 23, 30, 12, tzinfo=UTC)),
        ("Or Saturday?", "inbound", datetime(2024, 4, 30, 23, 33, 20, tzinfo=UTC)),
    ]


def test_a_manychat_request_needs_the_shared_secret_when_one_is_set(client, org_a):
    connect_manychat(org_a, secret=MANYCHAT_SECRET)

    missing = post_manychat(client, org_a, EXTERNAL_REQUEST)
    wrong = post_manychat(client, org_a, EXTERNAL_REQUEST, secret="guess")
    right = post_manychat(client, org_a, EXTERNAL_REQUEST, secret=MANYCHAT_SECRET)

    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert rows(org_a)[2:] == (1, 1)


@pytest.mark.parametrize("change", [
    {"subscriber_id": None}, {"subscriber_id": "12ab"}, {"text": ""}, {"time": "2024-05-01T09:30:12"},
    {"time": "yesterday"}, {"direction": "sideways"},
])
def test_a_malformed_manychat_request_is_400_and_writes_nothing(client, org_a, change):
    connect_manychat(org_a)

    response = post_manychat(client, org_a, {**EXTERNAL_REQUEST, **change})

    assert response.status_code == 400
    assert rows(org_a)[1:] == (0, 0, 0)


def test_a_manychat_request_with_a_wrong_token_is_404(client, org_a):
    connect_manychat(org_a)

    assert post_manychat(client, org_a, EXTERNAL_REQUEST, token="nope").status_code == 404
    assert rows(org_a)[1:] == (0, 0, 0)


def test_a_manychat_request_to_a_never_touches_bs_subscriber(client, org_a, org_b):
    connect_manychat(org_a)
    connect_manychat(org_b)
    assert post_manychat(client, org_b, EXTERNAL_REQUEST).json() == {"status": "processed"}
    with bind_organization(org_b):
        b_before = (list(Contact.objects.values_list("pk", "manychat_subscriber_id", "first_name")),
                    list(Conversation.objects.values_list("pk", "message_count", "contact_id")))

    response = post_manychat(client, org_a, {**EXTERNAL_REQUEST, "name": "Someone Else"})

    assert response.json() == {"status": "processed"}  # a delivery of its own in A, not a duplicate of B's
    with bind_organization(org_b):
        assert (list(Contact.objects.values_list("pk", "manychat_subscriber_id", "first_name")),
                list(Conversation.objects.values_list("pk", "message_count", "contact_id"))) == b_before
    with bind_organization(org_a):
        assert Conversation.objects.get(provider="manychat").message_count == 1
        assert Contact.objects.get(manychat_subscriber_id="9000123").first_name == "Someone"


def test_a_message_delivery_asks_for_a_dashboard_refresh_once_per_window(
        client, signed_a, chatwoot, empty_queue, django_capture_on_commit_callbacks, settings):
    settings.DASHBOARD_REFRESH_DEBOUNCE_SECONDS = 86400  # one window a day: the two posts cannot straddle two
    registry = empty_queue("default").scheduled_job_registry
    with django_capture_on_commit_callbacks(execute=True):
        post_chatwoot(client, signed_a, {"event": "conversation_typing_on", "account": {"id": 1}})
    assert registry.get_job_ids() == []  # nothing kept, nothing to refresh

    with django_capture_on_commit_callbacks(execute=True):
        assert post_chatwoot(client, signed_a, a_message(chatwoot)).json() == {"status": "processed"}
        assert post_chatwoot(client, signed_a, a_message(chatwoot, "And Friday?")).json() == {"status": "processed"}

    (job_id,) = registry.get_job_ids()  # debounced: both in one window
    assert job_id.startswith(f"dashboard-{signed_a.pk}-")
