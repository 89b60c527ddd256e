"""Tests for the Cliniko API stub, driven over real HTTP with `requests`."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from routiq.testing.cliniko_stub import ClinikoStub

KEY = "key-au1"
UA = "RoutIQ test suite (dev@routiq.example)"


@pytest.fixture
def stub() -> Iterator[ClinikoStub]:
    with ClinikoStub(api_keys=[KEY], rate_limit_per_minute=None) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = (KEY, "")
        session.headers.update({"User-Agent": UA, "Accept": "application/json"})
        yield session


def get(http: requests.Session, stub: ClinikoStub, path: str, **params: Any) -> requests.Response:
    return http.get(stub.base_url + path, params=params, timeout=5)


def walk(http: requests.Session, url: str, key: str, **params: Any) -> list[dict]:
    """Follow links.next the way a real client would; returns every record seen."""
    seen: list[dict] = []
    response = http.get(url, params=params, timeout=5)
    while True:
        response.raise_for_status()
        body = response.json()
        seen.extend(body[key])
        if "next" not in body["links"]:
            return seen
        response = http.get(body["links"]["next"], timeout=5)


@pytest.mark.parametrize("auth", [("wrong-key", ""), (KEY, "secret"), None])
def test_bad_credentials_are_401_json(stub: ClinikoStub, http: requests.Session, auth: tuple | None) -> None:
    http.auth = auth
    response = get(http, stub, "/patients")
    assert response.status_code == 401
    assert response.json()["message"]


@pytest.mark.parametrize("user_agent", [None, "python-requests/2.34", "RoutIQ", "RoutIQ (not-an-email)"])
def test_user_agent_must_name_app_and_contact_email(stub: ClinikoStub, http: requests.Session,
                                                    user_agent: str | None) -> None:
    # None makes requests drop the header entirely (the stubs allow only str and bytes).
    http.headers["User-Agent"] = user_agent  # type: ignore[assignment]
    response = get(http, stub, "/patients")
    assert response.status_code == 403
    assert "User-Agent" in response.json()["message"]


def test_pagination_walk_returns_every_patient_exactly_once(stub: ClinikoStub, http: requests.Session) -> None:
    stub.seed(patients=250, appointments_per_patient=0)
    live = [p["id"] for p in stub.all_patients() if p["archived_at"] is None]
    first = get(http, stub, "/patients", per_page=100).json()
    assert first["total_entries"] == len(live) and len(first["patients"]) == 100
    assert "previous" not in first["links"]
    second = http.get(first["links"]["next"], timeout=5).json()
    assert dict(parse_qsl(urlsplit(second["links"]["previous"]).query))["page"] == "1"

    ids = [p["id"] for p in walk(http, stub.base_url + "/patients", "patients", per_page=100)]
    assert len(ids) == len(set(ids)) == len(live)
    assert set(ids) == set(live)
    assert [r.params("page") for r in stub.requests[-3:]] == [[], ["2"], ["3"]]


def test_next_link_is_absolute_and_keeps_repeated_q_params(stub: ClinikoStub, http: requests.Session) -> None:
    for _ in range(5):
        stub.add_patient(first_name="Ann")
    filters = ["created_at:>=2024-01-01T00:00:00Z", "updated_at:<2030-01-01T00:00:00Z"]
    body = get(http, stub, "/patients", per_page=2, sort="updated_at", **{"q[]": filters}).json()
    assert body["links"]["next"].startswith(stub.base_url + "/patients?")
    query = parse_qsl(urlsplit(body["links"]["next"]).query)
    assert [v for k, v in query if k == "q[]"] == filters
    assert ("per_page", "2") in query and ("sort", "updated_at") in query and ("page", "2") in query


def test_per_page_defaults_to_50_and_clamps_to_100(stub: ClinikoStub, http: requests.Session) -> None:
    stub.seed(patients=160, appointments_per_patient=0)
    assert len(get(http, stub, "/patients").json()["patients"]) == 50
    assert len(get(http, stub, "/patients", per_page=500).json()["patients"]) == 100
    assert get(http, stub, "/patients", per_page="many").status_code == 400


def test_updated_at_filter_with_sort_sees_same_second_updates(stub: ClinikoStub, http: requests.Session) -> None:
    patients = [stub.add_patient(first_name=f"P{i}") for i in range(5)]
    cursor = stub.clock.strftime("%Y-%m-%dT%H:%M:%SZ")
    stub.advance(seconds=1)
    for p in reversed(patients[1:4]):  # three updates sharing one second, applied in reverse id order
        stub.update_patient(p["id"], last_name="Changed")

    params = {"sort": "updated_at", "order": "asc", "per_page": 100}
    after = get(http, stub, "/patients", **params, **{"q[]": f"updated_at:>{cursor}"}).json()["patients"]
    assert [p["id"] for p in after] == [p["id"] for p in patients[1:4]]  # ties broken by id asc
    assert {p["updated_at"] for p in after} == {stub.clock.strftime("%Y-%m-%dT%H:%M:%SZ")}
    for value in (cursor, cursor.replace("Z", ".000000Z"), cursor.replace("Z", "+00:00")):
        inclusive = get(http, stub, "/patients", **params, **{"q[]": f"updated_at:>={value}"}).json()
        assert inclusive["total_entries"] == 5
    desc = get(http, stub, "/patients", sort="updated_at", order="desc").json()["patients"]
    assert [p["id"] for p in desc] == [p["id"] for p in patients[1:4] + patients[:1] + patients[4:]]


@pytest.mark.parametrize("q", ["first_name:=Ann", "updated_at:~2024", "updated_at:>yesterday", "id:=abc"])
def test_bad_filters_are_400_json(stub: ClinikoStub, http: requests.Session, q: str) -> None:
    response = get(http, stub, "/patients", **{"q[]": q})
    assert response.status_code == 400
    assert response.json()["message"]


def test_archived_and_deleted_patient_listings(stub: ClinikoStub, http: requests.Session) -> None:
    live, archived, deleted = (stub.add_patient(first_name=n) for n in ("Live", "Arch", "Gone"))
    stub.advance(seconds=30)
    stub.archive_patient(archived["id"])
    stub.delete_patient(deleted["id"])

    def ids(path: str) -> list[str]:
        return [p["id"] for p in get(http, stub, path).json()["patients"]]

    assert ids("/patients") == [live["id"]]
    assert ids("/patients/archived") == [archived["id"]]
    assert ids("/patients/deleted") == [deleted["id"]]
    assert get(http, stub, f"/patients/{archived['id']}").json()["archived_at"] is not None
    assert get(http, stub, f"/patients/{deleted['id']}").status_code == 404
    assert [p["id"] for p in stub.all_patients()] == [live["id"], archived["id"]]
    stub.unarchive_patient(archived["id"])
    assert ids("/patients") == [live["id"], archived["id"]] and ids("/patients/archived") == []


def test_tombstones_have_only_id_deleted_at_and_links(stub: ClinikoStub, http: requests.Session) -> None:
    patient = stub.add_patient(first_name="Gone")
    appointment = stub.add_appointment(patient["id"], "2024-06-01T00:00:00Z")
    before = stub.clock.strftime("%Y-%m-%dT%H:%M:%SZ")
    stub.advance(minutes=5)
    stub.delete_patient(patient["id"])
    stub.delete_appointment(appointment["id"])
    for path, key, record in (("/patients/deleted", "patients", patient),
                              ("/individual_appointments/deleted", "individual_appointments", appointment)):
        [tombstone] = get(http, stub, path, **{"q[]": f"deleted_at:>{before}"}).json()[key]
        assert tombstone == {"id": record["id"], "deleted_at": "2024-05-01T09:05:00Z",
                             "links": {"self": record["links"]["self"]}}
        assert get(http, stub, path, **{"q[]": "updated_at:>=2024-05-01T09:05:01Z"}).json()[key] == []
        assert get(http, stub, path, **{"q[]": "first_name:=x"}).status_code == 400


def test_appointment_listings_relations_and_patient_filter(stub: ClinikoStub, http: requests.Session) -> None:
    ann, bob = stub.add_patient(first_name="Ann", last_name="Lee"), stub.add_patient(first_name="Bob")
    kept = stub.add_appointment(ann["id"], "2024-06-01T00:00:00Z")
    cancelled = stub.add_appointment(ann["id"], "2024-06-02T00:00:00Z")
    stub.add_appointment(bob["id"], "2024-06-03T00:00:00Z")
    stub.cancel_appointment(cancelled["id"], reason=30)

    body = get(http, stub, "/individual_appointments", **{"q[]": f"patient_id:={ann['id']}"}).json()
    [appointment] = body["individual_appointments"]
    assert appointment["id"] == kept["id"] and appointment["patient_name"] == "Ann Lee"
    assert appointment["patient"] == {"links": {"self": f"{stub.base_url}/patients/{ann['id']}"}}
    assert set(appointment["practitioner"]) == {"links"} and appointment["ends_at"] == "2024-06-01T00:30:00Z"
    [gone] = get(http, stub, "/individual_appointments/cancelled").json()["individual_appointments"]
    assert (gone["id"], gone["cancellation_reason"]) == (cancelled["id"], 30)
    assert get(http, stub, "/individual_appointments").json()["total_entries"] == 2


@pytest.mark.parametrize("as_strings", [True, False])
def test_19_digit_ids_round_trip_exactly(http: requests.Session, as_strings: bool) -> None:
    with ClinikoStub(api_keys=[KEY], ids_as_strings=as_strings) as stub:
        stub.seed(patients=3, appointments_per_patient=0)
        raw = http.get(stub.base_url + "/patients", timeout=5).text
        ids = [p["id"] for p in json.loads(raw)["patients"]]
        assert all(isinstance(i, str if as_strings else int) for i in ids)
        assert all(len(str(i)) == 19 and int(i) > 2**53 for i in ids)
        assert all(float(int(i)) != int(i) for i in ids[:1])  # a float64 parser would corrupt these
        body = http.get(stub.base_url + "/patients", params={"q[]": f"id:={ids[0]},{ids[2]}"}, timeout=5).json()
        assert [p["id"] for p in body["patients"]] == [ids[0], ids[2]]
        assert http.get(f"{stub.base_url}/patients/{ids[1]}", timeout=5).json()["id"] == ids[1]


def test_rate_limit_answers_429_with_reset_per_key(http: requests.Session) -> None:
    with ClinikoStub(api_keys=[KEY, "other"], rate_limit_per_minute=3) as stub:
        statuses = [http.get(stub.base_url + "/patients", timeout=5).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = http.get(stub.base_url + "/patients", timeout=5)
        reset = int(limited.headers["X-RateLimit-Reset"])
        assert time.time() < reset <= time.time() + 61
        assert limited.json()["message"]
        assert http.get(stub.base_url + "/patients", auth=("other", ""), timeout=5).status_code == 200


def test_forced_faults_fire_in_order_then_recover(stub: ClinikoStub, http: requests.Session) -> None:
    stub.queue_faults("status", 2)
    stub.queue_faults("rate_limit", seconds=1)
    stub.queue_faults("malformed")
    stub.queue_faults("missing_key")
    assert [get(http, stub, "/patients").status_code for _ in range(2)] == [503, 503]
    limited = get(http, stub, "/patients")
    assert limited.status_code == 429
    assert 0 < int(limited.headers["X-RateLimit-Reset"]) - time.time() <= 2
    malformed = get(http, stub, "/patients")
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    missing = get(http, stub, "/patients")
    assert missing.status_code == 200 and "patients" not in missing.json()
    assert get(http, stub, "/patients").json()["patients"] == []
    with pytest.raises(ValueError):
        stub.queue_faults("explode")


def test_fault_path_prefix_and_delay_timeout(stub: ClinikoStub, http: requests.Session) -> None:
    stub.queue_faults("status", status=502, path_prefix="/patients/deleted")
    assert get(http, stub, "/patients").status_code == 200
    assert get(http, stub, "/patients/deleted").status_code == 502
    stub.queue_faults("delay", seconds=2)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        http.get(stub.base_url + "/patients", timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert get(http, stub, "/patients").status_code == 200  # the next request is served normally


def test_request_log_records_method_path_query_and_headers(stub: ClinikoStub, http: requests.Session) -> None:
    get(http, stub, "/patients", per_page=100, **{"q[]": ["updated_at:>2024-05-01T09:00:00Z", "id:=1"]})
    http.post(stub.base_url + "/patients", json={"first_name": "x"}, timeout=5)
    first, second = stub.requests
    assert (first.method, first.path) == ("GET", "/v1/patients")
    assert first.query == [("per_page", "100"), ("q[]", "updated_at:>2024-05-01T09:00:00Z"), ("q[]", "id:=1")]
    assert first.params("q[]") == ["updated_at:>2024-05-01T09:00:00Z", "id:=1"]
    assert first.headers["User-Agent"] == UA and first.headers["Accept"] == "application/json"
    assert first.headers["Authorization"].startswith("Basic ")
    assert second.method == "POST"
    stub.reset_log()
    assert stub.requests == []


def test_unknown_routes_and_methods_are_404_json(stub: ClinikoStub, http: requests.Session) -> None:
    patient = stub.add_patient(first_name="Ann")
    assert get(http, stub, "/patients/1").status_code == 404
    assert get(http, stub, "/practitioners").json()["message"]
    assert http.delete(patient["links"]["self"], timeout=5).status_code == 404
    assert http.get(patient["links"]["self"], timeout=5).json() == patient


def test_state_api_stamps_records_with_the_controllable_clock(stub: ClinikoStub) -> None:
    patient = stub.add_patient(first_name="Ann", patient_phone_numbers=[{"phone_type": "Mobile",
                                                                          "number": "0412 345 678"}])
    assert patient["created_at"] == patient["updated_at"] == "2024-05-01T09:00:00Z"
    stub.advance(seconds=90.7)  # sub-second clock parts are dropped, as Cliniko does
    updated = stub.update_patient(patient["id"], email="ann@example.com")
    assert (updated["created_at"], updated["updated_at"]) == ("2024-05-01T09:00:00Z", "2024-05-01T09:01:30Z")
    assert stub.clock.utcoffset() == timedelta(0)
    with pytest.raises(TypeError):
        stub.update_patient(patient["id"], favourite_colour="blue")
    with pytest.raises(KeyError):
        stub.archive_patient(12345)


def test_seed_is_deterministic_realistic_and_fast() -> None:
    def strip_links(records: list[dict]) -> list[dict]:  # links embed each stub's own port
        return [{k: v for k, v in r.items() if k not in ("links", "patient", "practitioner",
                                                         "appointment_type", "business")} for r in records]

    with ClinikoStub() as one, ClinikoStub() as two, ClinikoStub() as other:
        started = time.perf_counter()
        one.seed(patients=10_000, appointments_per_patient=2, seed=7)
        assert time.perf_counter() - started < 3
        two.seed(patients=10_000, appointments_per_patient=2, seed=7)
        other.seed(patients=10_000, appointments_per_patient=2, seed=8)
        patients = one.all_patients()
        assert strip_links(patients) == strip_links(two.all_patients())
        assert strip_links(one.all_appointments()) == strip_links(two.all_appointments())
        assert strip_links(patients) != strip_links(other.all_patients())

    emails = [p["email"] for p in patients if p["email"]]
    numbers = [n["number"] for p in patients for n in p["patient_phone_numbers"]]
    assert len(patients) == 10_000 and len(emails) == len(set(emails)) < 10_000
    assert any(p["last_name"] == "Smith" for p in patients)
    assert any(n.startswith("04") for n in numbers) and any(n.startswith("+61 4") for n in numbers)
    assert any(n.startswith("(0") for n in numbers) and any(p["date_of_birth"] is None for p in patients)
    assert 0 < sum(p["archived_at"] is not None for p in patients) < 1000
    # realistic same-second collisions: many records share one updated_at
    assert Counter(p["updated_at"] for p in patients).most_common(1)[0][1] > 100
