"""The webhook frame (routiq/webhooks.py) with a tiny fake vendor, over HTTP, as the app role.

The fake vendor signs ``X-Fake-Signature: hex HMAC-SHA256(body)``, names its delivery in
``X-Fake-Delivery``, and its URL token picks the organization. Its handler writes a contact in the named
organization and enqueues a job on commit, like a real vendor's.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import time

import django_rq
import pytest
from django.db import transaction
from django.http import HttpRequest
from django.test import Client
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from patients.models import Contact
from routiq import webhooks
from routiq.webhooks import RetryLater, Verified, WebhookRejected, receive
from tenants.models import Organization, WebhookDelivery
from tenants.rls.binding import bind_organization, bound_organization_id

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
SECRET = b"fake-vendor-secret"
ENQUEUED: list[tuple[str, str]] = []  # (organization id, name): what the handler scheduled on commit


def verify(request: HttpRequest, *, token: str) -> Verified:
    organization = Organization.objects.filter(clerk_org_id=token, is_active=True).first()
    if organization is None:
        raise WebhookRejected(404, "unknown webhook")
    expected = hmac.new(SECRET, request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Fake-Signature", "")):
        raise WebhookRejected(401, "invalid signature")
    try:
        payload = json.loads(request.body)
    except ValueError as exc:
        raise WebhookRejected(400, "malformed body") from exc
    return Verified(delivery_id=request.headers.get("X-Fake-Delivery", ""), event_type=str(payload.get("event")),
                    payload=payload, organization=organization)


def handle(verified: Verified) -> bool:
    payload, organization = verified.payload, verified.organization
    assert organization is not None
    assert bound_organization_id() == str(organization.pk)  # the frame binds the token's organization
    if payload["event"] == "ignored":
        return False
    if payload["event"] == "later":
        raise RetryLater("waiting for something")
    if payload["event"] == "crash":
        Contact.objects.create(organization=organization, first_name="Half written")
        raise RuntimeError("database went away")
    contact = Contact.objects.create(organization=organization, first_name=payload["name"])  # KeyError: no name
    transaction.on_commit(lambda: ENQUEUED.append((str(organization.pk), contact.first_name)))
    return True


@csrf_exempt
def fake_webhook(request, token):
    return receive(request, provider="fake", verify=functools.partial(verify, token=token), handle=handle)


urlpatterns = [path("webhooks/fake/<str:token>/", fake_webhook)]


@pytest.fixture(autouse=True)
def clean_state():
    ENQUEUED.clear()
    yield
    redis = django_rq.get_connection("default")
    keys = list(redis.scan_iter("throttle:webhooks:fake:*"))
    if keys:
        redis.delete(*keys)


def post(client, organization, payload, *, delivery="dlv-1", secret=SECRET, ip="10.9.9.9", body=None):
    body = json.dumps(payload).encode() if body is None else body
    signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return client.post(f"/webhooks/fake/{organization.clerk_org_id}/", body, content_type="application/json",
                       HTTP_X_FAKE_SIGNATURE=signature, HTTP_X_FAKE_DELIVERY=delivery, REMOTE_ADDR=ip)


def contact_names(organization) -> list[str]:
    with bind_organization(organization):
        return sorted(Contact.objects.values_list("first_name", flat=True))


def test_a_delivery_is_handled_in_its_organization_recorded_once_and_enqueues_on_commit(
    client, org_a, org_b, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, org_a, {"event": "contact", "name": "Ava"})

    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert contact_names(org_a) == ["Ava"] and contact_names(org_b) == []
    assert ENQUEUED == [(str(org_a.pk), "Ava")]
    delivery = WebhookDelivery.objects.get()
    assert (delivery.provider, delivery.delivery_id, delivery.event_type, delivery.status) == (
        "fake", f"{org_a.pk}:dlv-1", "contact", "processed")


def test_a_replayed_delivery_is_a_duplicate_and_changes_nothing(client, org_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, org_a, {"event": "contact", "name": "Ava"})
        replay = post(client, org_a, {"event": "contact", "name": "Ava"})

    assert (first.json(), replay.status_code, replay.json()) == ({"status": "processed"}, 200,
                                                                 {"status": "duplicate"})
    assert contact_names(org_a) == ["Ava"]
    assert len(ENQUEUED) == 1 and WebhookDelivery.objects.count() == 1


def test_one_delivery_id_in_two_organizations_is_two_deliveries(client, org_a, org_b):
    assert post(client, org_a, {"event": "contact", "name": "Ava"}, delivery="same").json()["status"] == "processed"
    assert post(client, org_b, {"event": "contact", "name": "Bo"}, delivery="same").json()["status"] == "processed"

    assert (contact_names(org_a), contact_names(org_b)) == (["Ava"], ["Bo"])


def test_a_bad_signature_is_refused_with_nothing_written(client, org_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, org_a, {"event": "contact", "name": "Mallory"}, secret=b"wrong")

    assert (response.status_code, response.json()) == (401, {"error": "invalid signature"})
    assert not WebhookDelivery.objects.exists() and contact_names(org_a) == [] and ENQUEUED == []


def test_a_malformed_body_is_400_and_an_unusable_delivery_id_too(client, org_a):
    malformed = post(client, org_a, None, body=b"{not json")
    no_id = post(client, org_a, {"event": "contact", "name": "Ava"}, delivery="")
    nul_id = post(client, org_a, {"event": "contact", "name": "Ava"}, delivery="dlv\x00")
    long_id = post(client, org_a, {"event": "contact", "name": "Ava"}, delivery="d" * 170)

    assert [r.status_code for r in (malformed, no_id, nul_id, long_id)] == [400, 400, 400, 400]
    assert not WebhookDelivery.objects.exists() and contact_names(org_a) == []


def test_data_that_cannot_be_stored_is_recorded_failed_and_acknowledged_once(
    client, org_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        too_long = post(client, org_a, {"event": "contact", "name": "N" * 500}, delivery="dlv-long")  # DataError
        no_name = post(client, org_a, {"event": "contact"}, delivery="dlv-noname")  # KeyError
        again = post(client, org_a, {"event": "contact"}, delivery="dlv-noname")

    assert [(r.status_code, r.json()) for r in (too_long, no_name, again)] == [
        (200, {"status": "failed"}), (200, {"status": "failed"}), (200, {"status": "duplicate"})]
    assert contact_names(org_a) == [] and ENQUEUED == []  # the handler's writes and enqueues rolled back
    failed = {d.delivery_id: d for d in WebhookDelivery.objects.filter(status="failed")}
    assert set(failed) == {f"{org_a.pk}:dlv-long", f"{org_a.pk}:dlv-noname"}
    assert "KeyError('name')" in failed[f"{org_a.pk}:dlv-noname"].error
    assert "DataError" in failed[f"{org_a.pk}:dlv-long"].error


def test_a_handler_that_raises_records_nothing_and_answers_5xx_so_the_vendor_retries(org_a):
    client = Client(raise_request_exception=False)

    response = post(client, org_a, {"event": "crash"}, delivery="dlv-crash")

    assert response.status_code == 500
    assert not WebhookDelivery.objects.exists()
    assert contact_names(org_a) == []  # the half-written row went with the transaction
    # The vendor's retry of the same delivery is processed afresh, not taken for a duplicate.
    assert post(client, org_a, {"event": "contact", "name": "Ava"}, delivery="dlv-crash").json() == {
        "status": "processed"}


def test_retry_later_is_409_and_not_recorded(client, org_a):
    response = post(client, org_a, {"event": "later"}, delivery="dlv-later")

    assert (response.status_code, response.json()) == (409, {"status": "retry", "reason": "waiting for something"})
    assert not WebhookDelivery.objects.exists()


def test_an_ignored_event_is_acknowledged_as_ignored(client, org_a):
    assert post(client, org_a, {"event": "ignored"}).json() == {"status": "ignored"}
    assert WebhookDelivery.objects.get().event_type == "ignored"


def test_the_endpoint_is_throttled_per_client_address(client, org_a, settings):
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 2
    ip = f"10.{time.time_ns() % 250}.{time.time_ns() % 249}.8"

    responses = [post(client, org_a, {"event": "ignored"}, delivery=f"dlv-rl-{n}", ip=ip) for n in range(3)]
    elsewhere = post(client, org_a, {"event": "ignored"}, delivery="dlv-rl-x", ip="10.255.255.2")

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert 1 <= int(responses[2]["Retry-After"]) <= 60
    assert elsewhere.status_code == 200
    assert WebhookDelivery.objects.count() == 3  # the throttled one wrote nothing


def test_only_post_is_accepted(client, org_a):
    assert client.get(f"/webhooks/fake/{org_a.clerk_org_id}/").status_code == 405


def test_an_inactive_organization_gets_404_with_nothing_written(rf, org_a):
    request = rf.post("/webhooks/fake/x/", b"{}", content_type="application/json", REMOTE_ADDR="10.1.2.3")
    inactive = Organization(pk=org_a.pk, name="Gone", is_active=False)

    response = webhooks.receive(request, provider="fake", handle=handle, verify=lambda request: Verified(
        delivery_id="dlv-gone", event_type="contact", payload={"event": "contact", "name": "X"},
        organization=inactive))

    assert response.status_code == 404
    assert not WebhookDelivery.objects.exists()
