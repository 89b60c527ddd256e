"""ClinikoClient (and the shared VendorHttpClient under it) against the local Cliniko stub. No database."""

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis
import requests
from django.conf import settings

from patients.clients.cliniko import (
    ClinikoClient,
    ClinikoPage,
    cliniko_base_url,
    cliniko_ratelimit_key,
)
from routiq.http import (
    VendorAuthError,
    VendorHttpClient,
    VendorRateLimited,
    VendorRedirected,
    VendorResponseError,
    VendorUnavailable,
)
from routiq.testing.cliniko_stub import ID_BASE, ClinikoStub

API_KEY = "MS0xMzkwNzI2MjM3Mjk4NjMxNzcwLXNlY3JldA-au2"
EMAIL = "ops@routiq.example"


class Recorder:
    """Stands in for time.sleep and for a limiter: records, never waits."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.acquired = 0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def acquire(self) -> None:
        self.acquired += 1


@pytest.fixture
def stub():
    with ClinikoStub(api_keys=[API_KEY], rate_limit_per_minute=None) as running:
        yield running


@pytest.fixture
def recorder():
    return Recorder()


def make_client(stub, recorder, api_key=API_KEY, **kwargs):
    kwargs.setdefault("timeout", (2, 5))
    kwargs.setdefault("random", lambda: 1.0)  # backoff at the top of its jitter range: deterministic
    return ClinikoClient(api_key, contact_email=EMAIL, base_url=stub.base_url, sleep=recorder.sleep, **kwargs)


def listing_requests(stub, path="/v1/patients"):
    return [r for r in stub.requests if r.path == path]


def collect(client, resource, **kwargs):
    return [record for page in client.pages(resource, **kwargs) for record in page.records]


# -- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "override", "expected"), [
    ("abc-au2", None, "https://api.au2.cliniko.com/v1"),
    ("abc", None, "https://api.au1.cliniko.com/v1"),
    ("abc-uk1", None, "https://api.uk1.cliniko.com/v1"),
    ("abc-UK1", None, "https://api.uk1.cliniko.com/v1"),
    ("abc-us12", None, "https://api.us12.cliniko.com/v1"),
    ("abc-xyz", None, "https://api.au1.cliniko.com/v1"),
    ("abc-au123", None, "https://api.au1.cliniko.com/v1"),
    ("a-b-ca1", None, "https://api.ca1.cliniko.com/v1"),
    ("abc-au2", "http://127.0.0.1:8765/v1/", "http://127.0.0.1:8765/v1"),
])
def test_base_url_comes_from_the_key_shard_unless_overridden(key, override, expected):
    assert cliniko_base_url(key, override) == expected


def test_sends_basic_auth_with_the_key_and_an_empty_password_and_a_user_agent(stub, recorder):
    make_client(stub, recorder).check_connection()

    (request,) = stub.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
    assert request.headers["User-Agent"] == f"RoutIQ ({EMAIL})"
    assert request.headers["Accept"] == "application/json"
    assert request.params("per_page") == ["1"]


def test_a_bad_key_raises_auth_error_without_leaking_the_key(stub, recorder):
    bad_key = "not-a-valid-secret-key-au2"
    client = make_client(stub, recorder, api_key=bad_key)

    with pytest.raises(VendorAuthError) as caught:
        client.check_connection()

    err = caught.value
    assert err.status == 401 and err.retryable is False and err.provider == "cliniko"
    assert len(stub.requests) == 1 and recorder.sleeps == []  # not retried
    for text in (str(err), repr(err), err.message, repr(client), repr(client.http)):
        assert bad_key not in text
        assert "Unauthorized" not in text  # the stub's body: a vendor's words never reach our error text
    assert err.summary == "authentication refused (HTTP 401)"


def test_a_redirect_is_not_followed_and_the_key_goes_to_no_other_host(recorder):
    from routiq.testing.vendor_stubs import RecordingServer

    with RecordingServer() as vendor, RecordingServer() as other:
        vendor.redirect_to(f"{other.base_url}/v1/patients")
        client = ClinikoClient(API_KEY, contact_email=EMAIL, base_url=vendor.base_url + "/v1", sleep=recorder.sleep)

        with pytest.raises(VendorRedirected) as caught:
            client.check_connection()

    assert caught.value.status == 302 and caught.value.retryable is False
    assert len(vendor.requests) == 1 and other.requests == []


def test_an_invalid_contact_email_is_refused_up_front():
    with pytest.raises(ValueError):
        ClinikoClient(API_KEY, contact_email="")


# -- pagination and filters ------------------------------------------------------------------
def test_follows_links_next_and_collects_every_patient_exactly_once(stub, recorder):
    stub.seed(patients=250, appointments_per_patient=0)
    client = make_client(stub, recorder)

    pages = list(client.pages("patients", per_page=100)) + list(client.pages("patients/archived", per_page=100))

    ids = [record["id"] for page in pages for record in page.records]
    assert len(ids) == len(set(ids)) == 250
    assert set(ids) == {p["id"] for p in stub.all_patients()}
    live = listing_requests(stub)
    assert len(live) == 3  # 250 live+archived, a few archived: 3 pages of <= 100
    assert all(r.params("per_page") == ["100"] and r.params("sort") == ["updated_at"]
               and r.params("order") == ["asc"] for r in live)
    assert pages[0].total_entries == sum(len(p.records) for p in pages if "/archived" not in p.url)
    assert pages[0].next_url == pages[1].url and pages[2].next_url is None
    updated = [r["updated_at"] for p in pages[:3] for r in p.records]
    assert updated == sorted(updated)  # time order, so the caller can checkpoint per page


def test_updated_after_is_sent_as_a_utc_filter_and_only_newer_records_come_back(stub, recorder):
    stub.seed(patients=30, appointments_per_patient=1)
    mark = stub.clock  # 2024-05-01T09:00:00Z; every seeded record is at or before it
    stub.advance(seconds=5)
    changed = [stub.update_patient(p["id"], first_name="Changed")["id"] for p in stub.all_patients()[:3]]
    client = make_client(stub, recorder)

    aest = timezone(timedelta(hours=10))
    records = collect(client, "patients", updated_after=mark.astimezone(aest))

    assert sorted(r["id"] for r in records) == sorted(changed)
    (request,) = listing_requests(stub)
    assert request.params("q[]") == ["updated_at:>2024-05-01T09:00:00Z"]


def test_inclusive_resume_and_other_resources(stub, recorder):
    patient = stub.add_patient(first_name="Ann", last_name="Lee")
    appointment = stub.add_appointment(patient["id"], starts_at=stub.clock + timedelta(days=1))
    stub.advance(seconds=1)
    stub.cancel_appointment(appointment["id"])
    client = make_client(stub, recorder)

    records = collect(client, "individual_appointments/cancelled", updated_after=stub.clock, inclusive=True)

    assert [r["id"] for r in records] == [appointment["id"]]
    assert listing_requests(stub, "/v1/individual_appointments/cancelled")[0].params("q[]") == [
        "updated_at:>=2024-05-01T09:00:01Z"]


@pytest.mark.parametrize("ids_as_strings", [True, False])
def test_19_digit_ids_survive_exactly(recorder, ids_as_strings):
    with ClinikoStub(api_keys=[API_KEY], ids_as_strings=ids_as_strings, rate_limit_per_minute=None) as stub:
        stub.seed(patients=5, appointments_per_patient=0)
        expected = {p["id"] for p in stub.all_patients()}
        records = collect(make_client(stub, recorder), "patients") + collect(
            make_client(stub, recorder), "patients/archived")

    ids = {r["id"] for r in records}
    assert ids == expected
    assert all(type(i) is (str if ids_as_strings else int) for i in ids)
    assert all(int(i) > ID_BASE > 2**53 for i in ids)


def test_pages_validates_its_arguments(stub, recorder):
    client = make_client(stub, recorder)
    with pytest.raises(ValueError):
        next(client.pages("invoices"))
    with pytest.raises(ValueError):
        next(client.pages("patients", per_page=101))
    with pytest.raises(ValueError):
        next(client.pages("patients", updated_after=datetime(2024, 5, 1)))  # naive
    assert stub.requests == []


def test_page_repr_keeps_patient_data_out():
    page = ClinikoPage(records=[{"first_name": "Olivia"}], next_url=None, url="u", total_entries=1)
    assert "Olivia" not in repr(page)


# -- faults --------------------------------------------------------------------------------
def test_a_429_is_waited_out_until_x_ratelimit_reset_then_succeeds(stub, recorder):
    stub.add_patient(first_name="Ann")
    stub.queue_faults("rate_limit", seconds=5)

    records = collect(make_client(stub, recorder), "patients")

    assert len(records) == 1
    assert len(recorder.sleeps) == 1 and 4 <= recorder.sleeps[0] <= 6.01
    assert len(listing_requests(stub)) == 2


def test_a_429_that_keeps_coming_raises_rate_limited(recorder):
    with ClinikoStub(api_keys=[API_KEY], rate_limit_per_minute=1) as stub:
        client = make_client(stub, recorder, max_rate_limit_retries=2, max_rate_limit_wait=10)
        client.check_connection()  # spends the stub's whole minute
        with pytest.raises(VendorRateLimited) as caught:
            client.check_connection()

    assert caught.value.retryable is True and caught.value.status == 429
    assert recorder.sleeps == [10, 10]  # the ~60 s reset, clamped to max_rate_limit_wait
    assert caught.value.retry_after == 10
    assert len(stub.requests) == 4


def test_503s_are_retried_with_exponential_backoff_then_succeed(stub, recorder):
    stub.queue_faults("status", count=3, status=503)

    make_client(stub, recorder).check_connection()

    assert recorder.sleeps == [0.5, 1.0, 2.0]
    assert len(stub.requests) == 4


def test_more_503s_than_max_retries_raise_unavailable(stub, recorder):
    stub.queue_faults("status", count=10, status=503)

    with pytest.raises(VendorUnavailable) as caught:
        make_client(stub, recorder, max_retries=3).check_connection()

    assert caught.value.retryable is True and caught.value.status == 503
    assert len(stub.requests) == 4 and len(recorder.sleeps) == 3


def test_a_read_timeout_is_retried(stub, recorder):
    stub.queue_faults("delay", count=1, seconds=2)

    make_client(stub, recorder, timeout=(2, 0.2)).check_connection()

    assert len(stub.requests) == 2 and recorder.sleeps == [0.5]


def test_read_timeouts_beyond_max_retries_raise_unavailable(stub, recorder):
    stub.queue_faults("delay", count=3, seconds=2)

    with pytest.raises(VendorUnavailable) as caught:
        make_client(stub, recorder, timeout=(2, 0.2), max_retries=2).check_connection()

    assert caught.value.status is None and "ReadTimeout" in caught.value.message
    assert len(stub.requests) == 3 and len(recorder.sleeps) == 2


def test_a_connection_error_is_retried_then_unavailable(recorder):
    with ClinikoStub(api_keys=[API_KEY]) as stub:
        base_url = stub.base_url  # nothing listens here once the stub is stopped
    client = ClinikoClient(API_KEY, contact_email=EMAIL, base_url=base_url, sleep=recorder.sleep, max_retries=1)

    with pytest.raises(VendorUnavailable):
        client.check_connection()
    assert len(recorder.sleeps) == 1


@pytest.mark.parametrize("kind", ["malformed", "missing_key"])
def test_an_unusable_body_raises_response_error(stub, recorder, kind):
    stub.queue_faults(kind)

    with pytest.raises(VendorResponseError) as caught:
        collect(make_client(stub, recorder), "patients")

    assert caught.value.retryable is False
    assert len(stub.requests) == 1


def test_the_limiter_is_asked_once_per_http_attempt(stub, recorder):
    stub.seed(patients=250, appointments_per_patient=0)
    stub.queue_faults("status", count=2, status=502)
    client = make_client(stub, recorder, limiter=recorder)

    collect(client, "patients", per_page=100)

    assert recorder.acquired == len(stub.requests) == 5  # 2 failed attempts + 3 pages


def test_absolute_urls_on_another_host_are_refused_before_sending_the_key(stub, recorder):
    client = make_client(stub, recorder, limiter=recorder)

    with pytest.raises(VendorResponseError):
        client.http.get_json("https://evil.example/v1/patients")
    assert recorder.acquired == 0 and stub.requests == []


# -- shared rate limit ---------------------------------------------------------------------
def test_for_key_paces_through_a_redis_bucket_named_by_a_hash_of_the_key(stub, recorder):
    api_key = f"{uuid.uuid4().hex}-au2"
    stub.api_keys = frozenset([api_key])
    redis_client = redis.Redis.from_url(settings.REDIS_URL)  # the configured Redis; the bucket name is unique
    bucket = cliniko_ratelimit_key(api_key)
    try:
        client = ClinikoClient.for_key(api_key, redis_client=redis_client, contact_email=EMAIL,
                                       base_url=stub.base_url, sleep=recorder.sleep)
        client.check_connection()

        assert bucket.startswith("ratelimit:cliniko:") and len(bucket) == len("ratelimit:cliniko:") + 16
        assert api_key not in bucket
        assert redis_client.exists(bucket)
        limiter = client.http.limiter
        assert (limiter.key, limiter.burst, limiter.rate_per_minute) == (bucket, 10, 190)  # 10 + 190 <= 200/min
    finally:
        redis_client.delete(bucket)
        redis_client.close()


# -- VendorHttpClient details ----------------------------------------------------------------
def response_with(**headers):
    response = requests.Response()
    response.status_code = 429
    response.headers.update(headers)
    return response


def test_rate_limit_wait_reads_retry_after_seconds_dates_and_reset_epochs():
    now = 1_714_554_000.0  # 2024-05-01T09:00:00Z
    http = VendorHttpClient(provider="x", base_url="https://x.example", clock=lambda: now, max_rate_limit_wait=120)

    assert http.rate_limit_wait(response_with(**{"Retry-After": "7"})) == 7
    assert http.rate_limit_wait(response_with(**{"Retry-After": "Wed, 01 May 2024 09:00:30 GMT"})) == 30
    assert http.rate_limit_wait(response_with(**{"X-RateLimit-Reset": str(int(now) + 12)})) == 12
    assert http.rate_limit_wait(response_with(**{"X-RateLimit-Reset": str(int(now) - 5)})) == 0
    assert http.rate_limit_wait(response_with(**{"Retry-After": "3600"})) == 120
    assert http.rate_limit_wait(response_with()) is None
    assert datetime.fromtimestamp(now, UTC) == datetime(2024, 5, 1, 9, tzinfo=UTC)


def test_backoff_is_exponential_with_full_jitter_and_capped():
    http = VendorHttpClient(provider="x", base_url="https://x.example", random=lambda: 1.0)
    assert [http.backoff(n) for n in (1, 2, 3, 4, 8, 20)] == [0.5, 1.0, 2.0, 4.0, 30.0, 30.0]
    assert VendorHttpClient(provider="x", base_url="https://x.example", random=lambda: 0.25).backoff(3) == 0.5
