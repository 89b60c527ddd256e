"""Local stand-in for the Cliniko REST API (v1) for tests, benchmarks and the dev demo.

It speaks Cliniko's wire protocol -- Basic auth with the API key as username and an
empty password, a mandatory ``User-Agent: App (contact@email)``, page/per_page
pagination with absolute ``links``, repeated ``q[]`` filters, 19-digit ids, and 429 +
``X-RateLimit-Reset`` -- so the real HTTP client can run against it unpatched.
Stdlib only (no Django). Timestamps come from an explicit clock (``stub.clock``) and
have second precision, so several records can share one ``updated_at``, as in Cliniko.

    with ClinikoStub(api_keys=["key-au1"]) as stub:
        stub.seed(patients=500)
        client = Client(base_url=stub.base_url, api_key="key-au1")

Standalone: ``python -m routiq.testing.cliniko_stub --port 8765 --api-key demo-key --seed-patients 500``
"""

from __future__ import annotations

import argparse
import base64
import binascii
import math
import operator
import random
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from routiq.testing.stub_server import DEFAULT_CLOCK, NOT_JSON, StubError, StubServer

ID_BASE = 1390726237298631000  # ids stay 19 digits: beyond 2**53, so float parsing corrupts them
USER_AGENT_RE = re.compile(r"^\S.*\s\([^\s()@]+@[^\s()@]+\.[^\s()@]+\)$")  # "App name (contact@email)"
FILTER_RE = re.compile(r"^(\w+):(>=|<=|>|<|=)(.*)$")
OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
DATETIME_FIELDS = frozenset({"created_at", "updated_at", "archived_at", "deleted_at", "cancelled_at", "starts_at"})
TIMESTAMP_KEYS = DATETIME_FIELDS | {"ends_at"}
FAULT_KINDS = frozenset({"status", "rate_limit", "malformed", "not_json", "missing_key", "delay"})

PATIENT_FIELDS: dict[str, Any] = {
    "first_name": "", "last_name": "", "email": None, "date_of_birth": None, "title": None, "sex": None,
    "address_1": None, "city": None, "state": None, "post_code": None, "country": "Australia",
    "time_zone": "Australia/Sydney", "patient_phone_numbers": [],
}
# Made-up ids for the links-only relations of an appointment.
PRACTITIONER_IDS = (1390726237298600101, 1390726237298600102, 1390726237298600103)
APPOINTMENT_TYPE_IDS = (1390726237298600201, 1390726237298600202)
BUSINESS_IDS = (1390726237298600301,)
APPOINTMENT_FIELDS: dict[str, Any] = {
    "starts_at": None, "ends_at": None, "patient_name": None, "cancelled_at": None, "cancellation_reason": None,
    "cancellation_note": None, "did_not_arrive": False, "patient_arrived": False, "notes": None,
    "practitioner_id": PRACTITIONER_IDS[0], "appointment_type_id": APPOINTMENT_TYPE_IDS[0],
    "business_id": BUSINESS_IDS[0],
}
RELATIONS = {"patient": "patients", "practitioner": "practitioners",
             "appointment_type": "appointment_types", "business": "businesses"}
STATE_FIELDS = ("archived_at", "deleted_at", "created_at", "updated_at")  # settable, normally stamped

PATIENT_FILTERS = frozenset({"id", "created_at", "updated_at", "archived_at", "deleted_at"})
APPOINTMENT_FILTERS = PATIENT_FILTERS | {"patient_id", "starts_at", "cancelled_at"}
TOMBSTONE_FILTERS = frozenset({"id", "deleted_at", "updated_at"})
# Listing path under /v1 -> (resource key, which records it shows).
LISTINGS: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "/patients": ("patients", lambda r: r["archived_at"] is None and r["deleted_at"] is None),
    "/patients/archived": ("patients", lambda r: r["archived_at"] is not None and r["deleted_at"] is None),
    "/patients/deleted": ("patients", lambda r: r["deleted_at"] is not None),
    "/individual_appointments": (
        "individual_appointments", lambda r: r["cancelled_at"] is None and r["deleted_at"] is None),
    "/individual_appointments/cancelled": (
        "individual_appointments", lambda r: r["cancelled_at"] is not None and r["deleted_at"] is None),
    "/individual_appointments/deleted": ("individual_appointments", lambda r: r["deleted_at"] is not None),
}

FIRST_NAMES = ("Olivia", "Charlotte", "Amelia", "Isla", "Mia", "Ava", "Grace", "Chloe", "Emily", "Sophie",
               "Zoë", "Siobhán", "Mei", "Priya", "Fatima", "Jack", "Oliver", "William", "Noah", "James",
               "Thomas", "Lachlan", "Liam", "Ethan", "Lucas", "Henry", "Cooper", "Mohammed", "Arjun", "Minh",
               "David", "Michael", "Peter", "Susan", "Margaret", "Karen", "Jennifer", "Robert", "John", "Mary")
LAST_NAMES = ("Smith", "Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Johnson",
              "Martin", "White", "Anderson", "Walker", "Thompson", "Thomas", "Lee", "Ryan", "Kelly", "King",
              "Harris", "Robinson", "Clarke", "Wright", "Mitchell", "Campbell", "Roberts", "Scott", "Evans",
              "Chen", "Wang", "Singh", "Patel", "Tran", "Murphy", "O'Brien", "Hughes", "Papadopoulos",
              "Rossi", "Kowalski", "Smith-Jones")
PLACES = (("Sydney", "NSW", "2000", "Australia/Sydney", "02"), ("Newcastle", "NSW", "2300", "Australia/Sydney", "02"),
          ("Melbourne", "VIC", "3000", "Australia/Melbourne", "03"), ("Geelong", "VIC", "3220", "Australia/Melbourne", "03"),
          ("Brisbane", "QLD", "4000", "Australia/Brisbane", "07"), ("Gold Coast", "QLD", "4217", "Australia/Brisbane", "07"),
          ("Perth", "WA", "6000", "Australia/Perth", "08"), ("Adelaide", "SA", "5000", "Australia/Adelaide", "08"),
          ("Hobart", "TAS", "7000", "Australia/Hobart", "03"), ("Canberra", "ACT", "2600", "Australia/Sydney", "02"),
          ("Darwin", "NT", "0800", "Australia/Darwin", "08"))
STREETS = ("George St", "King St", "High St", "Church St", "Victoria Rd", "Main Rd", "Station St", "Beach Rd",
           "Park Ave", "Queen St", "Bridge Rd", "Smith St")


def _parse_dt(value: datetime | str) -> datetime:
    """Aware UTC datetime; naive values are taken as UTC (Cliniko speaks UTC)."""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).astimezone(UTC)


def _fmt(dt: datetime | None) -> str | None:
    return None if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class _ApiError(StubError):
    """Short-circuits a request into Cliniko's JSON error form."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, {"message": message}, headers)


class ClinikoStub(StubServer):
    """The fake Cliniko shard. Binds its port on construction; start()/stop() once (or use ``with``).

    State methods take ids as int or str and return records in API form, as a client would see them.
    """

    fault_kinds = FAULT_KINDS
    api_root = "/v1"

    def __init__(self, api_keys: Iterable[str] = ("test-key",), *, ids_as_strings: bool = True,
                 rate_limit_per_minute: int | None = 200, port: int = 0,
                 clock: datetime = DEFAULT_CLOCK) -> None:
        super().__init__(port=port, clock=_parse_dt(clock))
        self.api_keys = frozenset([api_keys] if isinstance(api_keys, str) else api_keys)
        self.ids_as_strings = ids_as_strings
        self.rate_limit_per_minute = rate_limit_per_minute
        self._patients: dict[int, dict] = {}
        self._appointments: dict[int, dict] = {}
        self._id_counter = 0
        self._raw: dict[int, tuple[dict[str, Any], frozenset[str]]] = {}  # record id -> (served values, dropped keys)
        self._windows: dict[str, tuple[float, int]] = {}  # api key -> (window start, count)
        self.rate_limited = 0  # requests answered 429 by the rate limit (not by a queued fault)

    # -- clock, faults ---------------------------------------------------------------------
    def _now(self) -> datetime:
        return _parse_dt(self.clock).replace(microsecond=0)

    def queue_faults(self, kind: str, count: int = 1, *, status: int = 503, seconds: float = 1.0,
                     path_contains: str = "", path_prefix: str = "") -> None:
        """Make the next ``count`` requests (optionally only under ``path_prefix``, or only those whose path
        contains ``path_contains``, as with every stand-in) misbehave.

        kinds: "status" (answer ``status``, default 503), "rate_limit" (429 with
        X-RateLimit-Reset = now + ``seconds``), "malformed" (200, truncated JSON), "not_json" (200, a
        body that is not JSON at all, as a proxy's error page would be), "missing_key" (200, JSON without the resource key), "delay" (sleep ``seconds``,
        then answer normally). Faults fire before auth and are not rate-limit counted.
        """
        if path_prefix and not path_prefix.startswith("/v1"):
            path_prefix = "/v1" + path_prefix
        self._queue_fault(kind, count, status=status, seconds=seconds,
                          applies=lambda path: path.startswith(path_prefix) and path_contains in path)

    # -- state API -----------------------------------------------------------------------
    def add_patient(self, **fields: Any) -> dict:
        with self._lock:
            now = self._now()
            rec = {"id": self._next_id(), **PATIENT_FIELDS, "archived_at": None, "deleted_at": None,
                   "created_at": now, "updated_at": now}
            rec.update(self._clean(fields, PATIENT_FIELDS))
            self._patients[rec["id"]] = rec
            return self._public(rec)

    def update_patient(self, patient_id: int | str, **fields: Any) -> dict:
        return self._update(self._patients, patient_id, PATIENT_FIELDS, fields)

    def archive_patient(self, patient_id: int | str) -> dict:
        return self.update_patient(patient_id, archived_at=self._now())

    def unarchive_patient(self, patient_id: int | str) -> dict:
        return self.update_patient(patient_id, archived_at=None)

    def delete_patient(self, patient_id: int | str) -> dict:
        return self.update_patient(patient_id, deleted_at=self._now())

    def add_appointment(self, patient_id: int | str, starts_at: datetime | str, **fields: Any) -> dict:
        with self._lock:
            patient = self._patients[int(patient_id)]
            now, starts = self._now(), _parse_dt(starts_at).replace(microsecond=0)
            rec = {"id": self._next_id(), **APPOINTMENT_FIELDS, "starts_at": starts,
                   "ends_at": starts + timedelta(minutes=30),
                   "patient_name": f"{patient['first_name']} {patient['last_name']}".strip(),
                   "patient_id": patient["id"], "archived_at": None, "deleted_at": None,
                   "created_at": now, "updated_at": now}
            rec.update(self._clean(fields, APPOINTMENT_FIELDS))
            self._appointments[rec["id"]] = rec
            return self._public(rec)

    def update_appointment(self, appointment_id: int | str, **fields: Any) -> dict:
        return self._update(self._appointments, appointment_id, APPOINTMENT_FIELDS, fields)

    def cancel_appointment(self, appointment_id: int | str, reason: int = 50, note: str | None = None) -> dict:
        return self.update_appointment(appointment_id, cancelled_at=self._now(), cancellation_reason=reason,
                                       cancellation_note=note)

    def delete_appointment(self, appointment_id: int | str) -> dict:
        return self.update_appointment(appointment_id, deleted_at=self._now())

    def serve_raw(self, record_id: int | str, *, drop: Iterable[str] = (), **fields: Any) -> None:
        """Serve this record with these JSON values (any type, unchecked) and without the ``drop`` keys, as a
        corrupted Cliniko record would arrive; filters and sorting still use its real values."""
        with self._lock:
            self._raw[int(record_id)] = (fields, frozenset(drop))

    def all_patients(self, include_deleted: bool = False) -> list[dict]:
        """Live + archived patients (API form, id order), to compare a synced DB against."""
        with self._lock:
            return [self._public(r) for r in self._patients.values() if include_deleted or not r["deleted_at"]]

    def all_appointments(self, include_deleted: bool = False) -> list[dict]:
        """Live + cancelled appointments (API form, id order)."""
        with self._lock:
            return [self._public(r) for r in self._appointments.values() if include_deleted or not r["deleted_at"]]

    def _next_id(self) -> int:
        self._id_counter += 1
        return ID_BASE + self._id_counter

    def _clean(self, fields: dict[str, Any], allowed: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - set(allowed) - set(STATE_FIELDS)
        if unknown:
            raise TypeError(f"unknown field(s): {sorted(unknown)}")
        out = dict(fields)
        for key, value in fields.items():
            if key in TIMESTAMP_KEYS and value is not None:
                out[key] = _parse_dt(value).replace(microsecond=0)
            elif isinstance(value, date):
                out[key] = value.isoformat()
            elif key == "patient_phone_numbers":
                out[key] = [dict(p) for p in value]
        return out

    def _update(self, store: dict[int, dict], record_id: int | str, allowed: dict[str, Any],
                fields: dict[str, Any]) -> dict:
        with self._lock:
            rec = store[int(record_id)]
            rec.update(self._clean(fields, allowed))
            if "updated_at" not in fields:
                rec["updated_at"] = self._now()
            return self._public(rec)

    def _public(self, rec: dict, tombstone: bool = False) -> dict:
        out = self._public_form(rec, tombstone)
        if rec["id"] in self._raw:
            fields, drop = self._raw[rec["id"]]
            out = {key: value for key, value in {**out, **fields}.items() if key not in drop}
        return out

    def _public_form(self, rec: dict, tombstone: bool = False) -> dict:
        kind = "individual_appointments" if "starts_at" in rec else "patients"
        rid, base = rec["id"], self.base_url
        out: dict[str, Any] = {"id": str(rid) if self.ids_as_strings else rid}
        if tombstone:
            return {**out, "deleted_at": _fmt(rec["deleted_at"]), "links": {"self": f"{base}/{kind}/{rid}"}}
        for key, value in rec.items():
            if key in TIMESTAMP_KEYS:
                out[key] = _fmt(value)
            elif key == "patient_phone_numbers":
                out[key] = [dict(p) for p in value]
            elif not key.endswith("_id") and key != "id":
                out[key] = value
        if kind == "patients":
            out["links"] = {"self": f"{base}/patients/{rid}", "appointments": f"{base}/patients/{rid}/appointments"}
        else:
            for rel, coll in RELATIONS.items():
                out[rel] = {"links": {"self": f"{base}/{coll}/{rec[rel + '_id']}"}}
            out["links"] = {"self": f"{base}/individual_appointments/{rid}"}
        return out

    # -- deterministic fake data --------------------------------------------------------
    def seed(self, patients: int = 100, appointments_per_patient: int = 2, seed: int = 42) -> None:
        """Add realistic Australian patients/appointments, all stamped at or before the clock.

        ~20% of records share one "bulk update" updated_at second, ~3% of patients are
        archived and ~7% of appointments cancelled; nothing is deleted.
        """
        rng = random.Random(seed)
        with self._lock:
            now = self._now()
            bulk = now - timedelta(days=1)  # e.g. a mass consent update touching many rows at once
            for _ in range(patients):
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                city, state, post_code, tz, area = rng.choice(PLACES)
                created = now - timedelta(seconds=rng.randrange(2 * 86400, 3 * 365 * 86400))
                updated = bulk if rng.random() < 0.2 else min(now, created + timedelta(seconds=rng.randrange(400 * 86400)))
                local = re.sub(r"[^a-z.]", "", f"{first}.{last}".lower().replace("ë", "e").replace("á", "a"))
                pid = self._next_id()  # the id suffix keeps emails unique across repeated seed() calls
                rec = {"id": pid, "first_name": first, "last_name": last,
                       "email": None if rng.random() < 0.07 else f"{local}{pid - ID_BASE}@example.{rng.choice(('com', 'net', 'org'))}",
                       "date_of_birth": None if rng.random() < 0.08 else
                       (date(1940, 1, 1) + timedelta(days=rng.randrange(80 * 365))).isoformat(),
                       "title": rng.choice(("Mr", "Ms", "Mrs", "Miss", "Dr", None)),
                       "sex": rng.choice(("Female", "Male", None)),
                       "address_1": None if rng.random() < 0.1 else f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
                       "city": city, "state": state, "post_code": post_code, "country": "Australia", "time_zone": tz,
                       "patient_phone_numbers": [_fake_phone(rng, area) for _ in range(rng.choice((0, 1, 1, 1, 1, 1, 1, 2)))],
                       "archived_at": updated if rng.random() < 0.03 else None, "deleted_at": None,
                       "created_at": created, "updated_at": updated}
                self._patients[pid] = rec
                for _ in range(appointments_per_patient):
                    self._seed_appointment(rng, rec, now)

    def _seed_appointment(self, rng: random.Random, patient: dict, now: datetime) -> None:
        day = (now + timedelta(days=rng.randint(-180, 60))).replace(hour=0, minute=0, second=0)
        starts = day + timedelta(hours=rng.randint(8, 17) - 10, minutes=rng.choice((0, 15, 30, 45)))  # AEST ~ UTC+10
        created = min(now, max(patient["created_at"], starts - timedelta(seconds=rng.randrange(3600, 30 * 86400))))
        updated = min(now, created + timedelta(minutes=rng.randrange(0, 3000)))
        cancelled = updated if rng.random() < 0.07 else None
        past = starts < now and cancelled is None
        dna = past and rng.random() < 0.05
        rec = {"id": self._next_id(), "starts_at": starts,
               "ends_at": starts + timedelta(minutes=rng.choice((30, 45, 60))),
               "patient_name": f"{patient['first_name']} {patient['last_name']}", "cancelled_at": cancelled,
               "cancellation_reason": rng.choice((10, 20, 30, 40, 50, 60)) if cancelled else None,
               "cancellation_note": "Rescheduled by phone" if cancelled and rng.random() < 0.5 else None,
               "did_not_arrive": dna, "patient_arrived": past and not dna, "notes": None,
               "practitioner_id": rng.choice(PRACTITIONER_IDS), "appointment_type_id": rng.choice(APPOINTMENT_TYPE_IDS),
               "business_id": BUSINESS_IDS[0], "patient_id": patient["id"],
               "archived_at": None, "deleted_at": None, "created_at": created, "updated_at": updated}
        self._appointments[rec["id"]] = rec

    # -- HTTP ------------------------------------------------------------------------
    def _respond(self, method: str, path: str, pairs: list[tuple[str, str]], headers: Any,
                 body: bytes) -> dict | bytes:
        fault = self._take_fault(path)
        if fault and fault.kind == "status":
            raise _ApiError(fault.status, f"Forced fault: HTTP {fault.status}")
        if fault and fault.kind == "rate_limit":
            raise _ApiError(429, "Too many requests (forced)",
                            {"X-RateLimit-Reset": str(math.ceil(time.time() + fault.seconds))})
        if fault and fault.kind == "malformed":
            return b'{"patients": [{"id": "13907262372'  # truncated mid-body
        if fault and fault.kind == "not_json":
            return NOT_JSON
        if fault and fault.kind == "missing_key":
            return {"total_entries": 0, "links": {"self": self.base_url + path[3:]}}
        if fault and fault.kind == "delay":
            self._pause(fault.seconds)
        if not USER_AGENT_RE.match(headers.get("User-Agent", "")):
            raise _ApiError(403, "A User-Agent of the form 'App name (contact@email)' is required")
        self._check_rate_limit(self._authenticate(headers.get("Authorization", "")))
        sub = path[3:] if path.startswith("/v1/") else None
        if method == "GET" and sub in LISTINGS:
            return self._list(sub, pairs)
        match = re.fullmatch(r"/(patients|individual_appointments)/(\d+)", sub or "")
        if method == "GET" and match:
            store = self._patients if match[1] == "patients" else self._appointments
            with self._lock:
                rec = store.get(int(match[2]))
                if rec is not None and rec["deleted_at"] is None:
                    return self._public(rec)
        raise _ApiError(404, "Not found")

    def _authenticate(self, header: str) -> str:
        scheme, _, token = header.partition(" ")
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        # Cliniko: the API key is the username and the password must be empty.
        if scheme.lower() != "basic" or not sep or password or user not in self.api_keys:
            raise _ApiError(401, "Unauthorized: use HTTP Basic auth with the API key as username and no password")
        return user

    def _check_rate_limit(self, api_key: str) -> None:
        if self.rate_limit_per_minute is None:
            return
        now = time.time()
        with self._lock:  # fixed 60 s window per key, opened by its first request
            start, count = self._windows.get(api_key, (now, 0))
            if now - start >= 60:
                start, count = now, 0
            self._windows[api_key] = (start, count + 1)
        if count + 1 > self.rate_limit_per_minute:
            with self._lock:
                self.rate_limited += 1
            raise _ApiError(429, "Rate limit exceeded", {"X-RateLimit-Reset": str(math.ceil(start + 60))})

    def _list(self, sub: str, pairs: list[tuple[str, str]]) -> dict:
        key, visible = LISTINGS[sub]
        tombstones = sub.endswith("/deleted")
        allowed = TOMBSTONE_FILTERS if tombstones else PATIENT_FILTERS if key == "patients" else APPOINTMENT_FILTERS
        params = dict(pairs)  # last value wins for scalar params
        per_page = min(max(_int_param(params, "per_page", 50), 1), 100)
        page = _int_param(params, "page", 1)
        sort, order = params.get("sort", "created_at"), params.get("order", "asc")
        sortable = allowed | {"created_at"}  # tombstones too keep the default created_at order
        if page < 1 or sort not in sortable or order not in ("asc", "desc"):
            raise _ApiError(400, f"Invalid page/sort/order (sortable fields: {sorted(sortable)})")
        conditions = [_parse_filter(v, allowed) for k, v in pairs if k == "q[]"]
        with self._lock:
            store = self._patients if key == "patients" else self._appointments
            rows = sorted((r for r in store.values() if visible(r) and all(c(r) for c in conditions)),
                          key=lambda r: r["id"])
            # Stable sort (also with reverse=True) keeps ties in id-asc order; nulls sort last in asc.
            rows.sort(key=lambda r: (r[sort] is None, r[sort]), reverse=order == "desc")
            start = (page - 1) * per_page
            body: dict[str, Any] = {key: [self._public(r, tombstones) for r in rows[start:start + per_page]],
                                    "total_entries": len(rows), "links": {"self": self._url(sub, pairs)}}
        if start + per_page < len(rows):
            body["links"]["next"] = self._url(sub, pairs, page + 1)
        if page > 1:
            body["links"]["previous"] = self._url(sub, pairs, page - 1)
        return body

    def _url(self, sub: str, pairs: list[tuple[str, str]], page: int | None = None) -> str:
        if page is not None:  # keep every other param (incl. repeated q[]) and replace page
            pairs = [(k, v) for k, v in pairs if k != "page"] + [("page", str(page))]
        return f"{self.base_url}{sub}" + (f"?{urlencode(pairs)}" if pairs else "")


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except ValueError:
        raise _ApiError(400, f"{name} must be an integer") from None


def _parse_filter(raw: str, allowed: frozenset[str]) -> Callable[[dict], bool]:
    match = FILTER_RE.match(raw)
    if not match:
        raise _ApiError(400, f"Malformed filter {raw!r}; expected FIELD:OPVALUE, e.g. updated_at:>2024-01-01T00:00:00Z")
    name, op, text = match.groups()
    if name not in allowed:
        raise _ApiError(400, f"Unknown filter field {name!r}; filterable: {sorted(allowed)}")
    convert: Callable[[str], Any] = _parse_dt if name in DATETIME_FIELDS else int
    try:
        if op == "=":
            wanted = {convert(v) for v in text.split(",")}
            return lambda r: r[name] in wanted
        bound, compare = convert(text), OPS[op]
    except ValueError:  # note: an unencoded "+00:00" arrives as " 00:00" and lands here
        raise _ApiError(400, f"Invalid value {text!r} for filter field {name!r}") from None
    return lambda r: r[name] is not None and compare(r[name], bound)


def _fake_phone(rng: random.Random, area: str) -> dict[str, str]:
    digits = f"{rng.randrange(10**8):08d}"
    roll = rng.random()
    if roll < 0.6:
        return {"phone_type": "Mobile", "number": f"04{digits[:2]} {digits[2:5]} {digits[5:]}"}
    if roll < 0.8:
        return {"phone_type": "Mobile", "number": f"+61 4{digits[:2]} {digits[2:5]} {digits[5:]}"}
    return {"phone_type": rng.choice(("Home", "Work")), "number": f"({area}) {digits[:4]} {digits[4:]}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Cliniko API stub in the foreground.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", dest="api_keys", action="append", help="accepted key (repeatable); default demo-key")
    parser.add_argument("--seed-patients", type=int, default=0)
    parser.add_argument("--appointments-per-patient", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate-limit", type=int, default=200, help="requests/minute per key; 0 disables")
    parser.add_argument("--ids-as-numbers", action="store_true", help="serialise ids as JSON numbers")
    args = parser.parse_args(argv)
    stub = ClinikoStub(args.api_keys or ["demo-key"], ids_as_strings=not args.ids_as_numbers,
                       rate_limit_per_minute=args.rate_limit or None, port=args.port, clock=datetime.now(UTC))
    stub.seed(patients=args.seed_patients, appointments_per_patient=args.appointments_per_patient, seed=args.seed)
    print(f"Cliniko stub at {stub.base_url} (keys: {', '.join(sorted(stub.api_keys))}); Ctrl-C to stop", flush=True)
    stub.serve_until_interrupted()


if __name__ == "__main__":
    main()
