"""ManyChat: the client against a local server speaking ManyChat's API, per-endpoint pacing in Redis, and
linking a patient to their subscriber."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings

from messaging.clients.manychat import (
    FIND_BY_SYSTEM_FIELD,
    SUBSCRIBER_INFO,
    ManyChatClient,
    endpoint_limiter,
    manychat_ratelimit_key,
)
from messaging.manychat_links import manychat_subscriber_link
from messaging.matching import ExternalIdentity, contact_unlink, contacts_for_identities
from patients.models import Contact
from routiq.http import VendorAuthError, VendorClientError
from routiq.testing.manychat_stub import ManyChatStub
from tenants.models import User
from tenants.rls.binding import bind_organization


@pytest.fixture
def token():
    return f"1234:{uuid.uuid4().hex}"


@pytest.fixture
def manychat(token):
    with ManyChatStub(token=token) as stub:
        yield stub


@pytest.fixture
def redis_client(token):
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    prefix = manychat_ratelimit_key(token, "").rstrip(":")
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def client(manychat, token):
    return ManyChatClient(token, base_url=manychat.base_url, max_retries=0)


def test_find_by_phone_and_by_email(manychat, client):
    ava = manychat.add_subscriber(first_name="Ava", phone="+61412345678", email="Ava@Example.com")

    assert client.subscribers_by_system_field(phone="+61412345678") == [ava]
    assert client.subscribers_by_system_field(email="ava@example.com") == [ava]
    assert client.subscribers_by_system_field(phone="+61400000000") == []
    assert [(r.path, r.query) for r in manychat.requests] == [
        ("/fb/subscriber/findBySystemField", {"phone": "+61412345678"}),
        ("/fb/subscriber/findBySystemField", {"email": "ava@example.com"}),
        ("/fb/subscriber/findBySystemField", {"phone": "+61400000000"}),
    ]


def test_get_info_and_its_400(manychat, client):
    ava = manychat.add_subscriber(first_name="Ava")

    assert client.subscriber_info(ava["id"]) == ava
    with pytest.raises(VendorClientError) as raised:
        client.subscriber_info("123")
    assert raised.value.status == 400


def test_a_wrong_token_is_an_auth_error(manychat):
    with pytest.raises(VendorAuthError):
        ManyChatClient("1234:wrong", base_url=manychat.base_url, max_retries=0).subscriber_info("1")


def test_a_lookup_needs_exactly_one_field_and_an_e164_phone(client, manychat):
    with pytest.raises(ValueError):
        client.subscribers_by_system_field(phone="+61412345678", email="a@example.com")
    with pytest.raises(ValueError):
        client.subscribers_by_system_field(phone="0412 345 678")
    assert manychat.requests == []


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        # Redis keeps the bucket as 14-digit text: a wait shorter than the clock's resolution at this epoch
        # would never move it (real time always moves on), so a sleep lasts at least a microsecond.
        self.sleeps.append(seconds)
        self.now += max(seconds, 1e-6)


@pytest.mark.parametrize(("endpoint", "per_second"), [(SUBSCRIBER_INFO, 10), (FIND_BY_SYSTEM_FIELD, 50)])
def test_each_endpoint_is_paced_at_its_documented_limit(redis_client, token, endpoint, per_second):
    clock = FakeTime()
    limiter = endpoint_limiter(redis_client, token, endpoint, sleep=clock.sleep, clock=clock)

    for _ in range(per_second * 3):
        limiter.acquire()

    granted_per_second = per_second * 3 / (clock.now - 1_800_000_000.0)
    assert per_second * 0.8 <= granted_per_second <= per_second
    assert token.split(":")[1] not in limiter.key


def test_endpoints_have_separate_budgets(redis_client, token):
    clock = FakeTime()
    info = endpoint_limiter(redis_client, token, SUBSCRIBER_INFO, sleep=clock.sleep, clock=clock)
    find = endpoint_limiter(redis_client, token, FIND_BY_SYSTEM_FIELD, sleep=clock.sleep, clock=clock)

    while info.try_acquire() == 0:
        pass

    assert find.try_acquire() == 0


def test_a_paced_client_waits_between_calls_through_redis(manychat, token, redis_client):
    ava = manychat.add_subscriber(first_name="Ava")
    paced = ManyChatClient.for_token(token, redis_client=redis_client, base_url=manychat.base_url)

    for _ in range(5):
        paced.subscriber_info(ava["id"])

    times = [r.at for r in manychat.requests]
    assert times[-1] - times[0] >= 3 / 9  # one free, then 9 a second


# --- Linking a patient to their subscriber --------------------------------------------------------------


def patient(organization, *, phone="", e164=None, email="", cliniko_id=501):
    with bind_organization(organization):
        return Contact.objects.create(organization=organization, first_name="Ava", last_name="Smith",
                                      phone_raw=phone, phone_e164=e164, email=email, cliniko_patient_id=cliniko_id)


@pytest.mark.django_db
def test_a_patient_is_linked_to_the_subscriber_with_their_phone(org_a, manychat, client):
    ava = manychat.add_subscriber(first_name="Ava", phone="+61412345678")
    contact = patient(org_a, phone="0412 345 678", e164="+61412345678")

    with bind_organization(org_a):
        assert manychat_subscriber_link(organization=org_a, contact=contact, client=client) == ava["id"]
        assert Contact.objects.get(pk=contact.pk).manychat_subscriber_id == ava["id"]


@pytest.mark.django_db
def test_a_patient_is_linked_by_email_when_the_phone_finds_nobody(org_a, manychat, client):
    ava = manychat.add_subscriber(first_name="Ava", email="ava@example.com")
    contact = patient(org_a, phone="0412 345 678", e164="+61412345678", email="AVA@example.com")

    with bind_organization(org_a):
        assert manychat_subscriber_link(organization=org_a, contact=contact, client=client) == ava["id"]


@pytest.mark.django_db
def test_two_subscribers_with_the_phone_link_nobody(org_a, manychat, client):
    manychat.add_subscriber(first_name="Jo", phone="+61412345678")
    manychat.add_subscriber(first_name="Max", phone="+61412345678")
    contact = patient(org_a, phone="0412 345 678", e164="+61412345678")

    with bind_organization(org_a):
        assert manychat_subscriber_link(organization=org_a, contact=contact, client=client) is None
        assert Contact.objects.get(pk=contact.pk).manychat_subscriber_id is None


@pytest.mark.django_db
def test_linking_takes_over_the_subscribers_lead_but_not_against_an_unlink(org_a, manychat, client):
    ava = manychat.add_subscriber(first_name="Ava", phone="+61412345678")
    with bind_organization(org_a):
        lead_id = contacts_for_identities(organization=org_a, identities=[
            ExternalIdentity("manychat", ava["id"], "Ava")])[ava["id"]]
    contact = patient(org_a, phone="0412 345 678", e164="+61412345678")

    with bind_organization(org_a):
        assert manychat_subscriber_link(organization=org_a, contact=contact, client=client) == ava["id"]
        assert Contact.objects.get(pk=lead_id).deleted_at is not None
        admin = User.objects.create(username="mc-admin", clerk_user_id="user_mc_admin")
        contact_unlink(organization=org_a, patient=contact, provider="manychat", actor=admin)
        contact.refresh_from_db()
        assert manychat_subscriber_link(organization=org_a, contact=contact, client=client) is None
        assert Contact.objects.get(pk=contact.pk).manychat_subscriber_id is None
