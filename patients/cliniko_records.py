"""Cliniko JSON records -> column values.

A record that cannot be read (no id, an unparseable timestamp, a field of the wrong type) raises
MalformedRecord; the sync skips that one record, logs and counts it, and writes the rest of its page. Text is
cleaned of what PostgreSQL cannot store (NUL; lone surrogates, which JSON's \\u escapes can produce), so one
odd name never stops a sync.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, overload

import phonenumbers

from routiq.sync import MalformedRecord  # the engine skips and counts what raises it

SMALLINT = range(-(2**15), 2**15)
UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # NUL is refused by PostgreSQL text; a lone surrogate by UTF-8


def cliniko_id(value) -> int:
    # 19-digit ids arrive as JSON strings or exact ints; a float would already have lost digits.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedRecord(f"bad id {type(value).__name__}")
    try:
        number = int(value)
    except ValueError as exc:
        raise MalformedRecord("bad id") from exc
    if not 0 < number < 2**63:
        raise MalformedRecord("id out of range")
    return number


@overload
def timestamp(value, *, required: Literal[True]) -> datetime: ...
@overload
def timestamp(value, *, required: bool = False) -> datetime | None: ...
def timestamp(value, *, required: bool = False) -> datetime | None:
    if value in (None, ""):
        if required:
            raise MalformedRecord("missing timestamp")
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise MalformedRecord("bad timestamp") from exc
    if moment.tzinfo is None:
        raise MalformedRecord("timestamp without zone")
    return moment


def day(value) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return None  # a bad birth date is not worth failing a page for


def text(value, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedRecord(f"text field is {type(value).__name__}")
    return clean_text(str(value))[:limit]


def small_int(value) -> int | None:
    """A code for a smallint column; anything else is no code (not worth skipping the record for)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value in SMALLINT else None


def clean_text(value: str) -> str:
    """Drop NULs; a lone surrogate becomes U+FFFD (the replacement character), as a UTF-8 decoder would."""
    return UNSTORABLE.sub(lambda match: "" if match[0] == "\x00" else "\ufffd", value)


def linked_id(record: dict, relation: str) -> int | None:
    """The id at the end of ``record[relation].links.self`` (Cliniko links relations, it does not embed them)."""
    related = record.get(relation)
    links = related.get("links") if isinstance(related, dict) else None
    link = links.get("self") if isinstance(links, dict) else None
    if not isinstance(link, str):
        return None
    tail = link.rstrip("/").rsplit("/", 1)[-1]
    return cliniko_id(tail) if tail.isdigit() else None


def e164(raw: str, region: str) -> str | None:
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def preferred_phone(record: dict) -> str:
    listed = record.get("patient_phone_numbers")
    numbers = [n for n in listed if isinstance(n, dict) and n.get("number")] if isinstance(listed, list) else []
    mobile = next((n for n in numbers if str(n.get("phone_type", "")).lower() == "mobile"), None)
    chosen = mobile or (numbers[0] if numbers else None)
    return text(chosen["number"], 64) if chosen else ""


@dataclass(frozen=True)
class PatientRow:
    cliniko_id: int
    first_name: str
    last_name: str
    email: str
    phone_raw: str
    phone_e164: str | None
    date_of_birth: date | None
    created_at: datetime | None
    updated_at: datetime
    archived_at: datetime | None


def patient_row(record: dict, region: str) -> PatientRow:
    if "id" not in record:
        raise MalformedRecord("patient without id")
    phone = preferred_phone(record)
    return PatientRow(
        cliniko_id=cliniko_id(record["id"]),
        first_name=text(record.get("first_name"), 200),
        last_name=text(record.get("last_name"), 200),
        email=text(record.get("email"), 320),
        phone_raw=phone,
        phone_e164=e164(phone, region),
        date_of_birth=day(record.get("date_of_birth")),
        created_at=timestamp(record.get("created_at")),
        updated_at=timestamp(record.get("updated_at"), required=True),
        archived_at=timestamp(record.get("archived_at")),
    )


@dataclass(frozen=True)
class AppointmentRow:
    cliniko_id: int
    patient_id: int | None
    starts_at: datetime
    ends_at: datetime | None
    cancelled_at: datetime | None
    cancellation_reason: int | None
    did_not_arrive: bool
    patient_arrived: bool
    notes: str
    created_at: datetime | None
    updated_at: datetime
    archived_at: datetime | None


def appointment_row(record: dict) -> AppointmentRow:
    if "id" not in record:
        raise MalformedRecord("appointment without id")
    return AppointmentRow(
        cliniko_id=cliniko_id(record["id"]),
        patient_id=linked_id(record, "patient"),
        starts_at=timestamp(record.get("starts_at"), required=True),
        ends_at=timestamp(record.get("ends_at")),
        cancelled_at=timestamp(record.get("cancelled_at")),
        cancellation_reason=small_int(record.get("cancellation_reason")),
        did_not_arrive=bool(record.get("did_not_arrive")),
        patient_arrived=bool(record.get("patient_arrived")),
        notes=text(record.get("notes"), 2000),
        created_at=timestamp(record.get("created_at")),
        updated_at=timestamp(record.get("updated_at"), required=True),
        archived_at=timestamp(record.get("archived_at")),
    )


@dataclass(frozen=True)
class Tombstone:
    cliniko_id: int
    deleted_at: datetime
    updated_at: datetime


def tombstone(record: dict) -> Tombstone:
    if "id" not in record:
        raise MalformedRecord("tombstone without id")
    deleted_at = timestamp(record.get("deleted_at"), required=True)
    return Tombstone(cliniko_id(record["id"]), deleted_at, timestamp(record.get("updated_at")) or deleted_at)
