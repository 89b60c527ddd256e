"""The Cliniko sync: Cliniko's streams on the shared engine (routiq/sync.py).

A resource is a few streams (the live list, the archived or cancelled list, the deleted tombstones). What is
Cliniko's lives here: each stream pages through Cliniko sorted by updated_at ascending from its high-water
mark minus a small overlap (records share one-second timestamps; upserts make re-reading harmless), and
advances the mark to the newest timestamp of each page. The engine does the rest: the lock per organization
and resource, the checkpoint committed with its page, the sync log, skipped records.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from django.conf import settings

from patients import services
from patients.clients.cliniko import ClinikoClient, ClinikoPage
from patients.cliniko_records import (
    AppointmentRow,
    PatientRow,
    Tombstone,
    appointment_row,
    cliniko_id,
    patient_row,
    timestamp,
    tombstone,
)
from routiq.sync import MalformedRecord, PageProgress, Stream, SyncAlreadyRunning, WriteCounts, run_sync
from tenants.models import Organization, SyncCheckpoint, SyncLog

PROVIDER = "cliniko"

__all__ = ["RESOURCES", "PageProgress", "SyncAlreadyRunning", "cliniko_streams", "sync_cliniko"]


def read_patient(record: dict, organization: Organization) -> PatientRow:
    return patient_row(record, organization.country)


def read_appointment(record: dict, organization: Organization) -> AppointmentRow:
    return appointment_row(record)


def read_tombstone(record: dict, organization: Organization) -> Tombstone:
    return tombstone(record)


def write_patients(organization: Organization, rows: list[PatientRow]) -> WriteCounts:
    counts = services.contacts_upsert_from_cliniko(organization=organization, rows=rows)
    services.active_patients_refresh(organization=organization, contact_ids=counts.contact_ids)
    return counts


def write_patient_tombstones(organization: Organization, rows: list[Tombstone]) -> WriteCounts:
    return services.contacts_mark_deleted(organization=organization, tombstones=rows)


def write_appointments(organization: Organization, rows: list[AppointmentRow]) -> WriteCounts:
    counts = services.appointments_upsert_from_cliniko(organization=organization, rows=rows)
    services.active_patients_refresh(organization=organization, contact_ids=counts.contact_ids)
    return counts


def write_appointment_tombstones(organization: Organization, rows: list[Tombstone]) -> WriteCounts:
    counts = services.appointments_mark_deleted(organization=organization, tombstones=rows)
    services.active_patients_refresh(organization=organization, contact_ids=counts.contact_ids)
    return counts


class Reader(Protocol):  # named, not a Callable: cliniko_streams passes organization by keyword
    def __call__(self, record: dict, organization: Organization) -> object: ...


Writer = Callable[[Organization, list], WriteCounts]

# resource -> its streams as (Cliniko endpoint = checkpoint key, read, write), run in this order.
RESOURCES: dict[str, tuple[tuple[str, Reader, Writer], ...]] = {
    "patients": (
        ("patients", read_patient, write_patients),
        ("patients/archived", read_patient, write_patients),
        ("patients/deleted", read_tombstone, write_patient_tombstones),
    ),
    "appointments": (
        ("individual_appointments", read_appointment, write_appointments),
        ("individual_appointments/cancelled", read_appointment, write_appointments),
        ("individual_appointments/deleted", read_tombstone, write_appointment_tombstones),
    ),
}


def cliniko_streams(*, organization: Organization, resource: str, client: ClinikoClient) -> list[Stream]:
    return [
        Stream(name=endpoint, pages=functools.partial(pages_since_mark, client, endpoint),
               read=functools.partial(read, organization=organization), write=write,
               advance=advance_high_water_mark, record_id=record_id)
        for endpoint, read, write in RESOURCES[resource]
    ]


def sync_cliniko(
    *, organization: Organization, resource: str, client: ClinikoClient, full: bool = False, job_id: str = "",
    on_page: Callable[[PageProgress], None] | None = None,
) -> SyncLog:
    """Run one sync of ``resource`` for the bound organization. Raises VendorError after recording it."""
    return run_sync(organization=organization, provider=PROVIDER, resource=resource,
                    streams=cliniko_streams(organization=organization, resource=resource, client=client),
                    full=full, job_id=job_id, on_page=on_page)


def pages_since_mark(client: ClinikoClient, endpoint: str, checkpoint: SyncCheckpoint, full: bool):
    """From the high-water mark minus the overlap, inclusive: several records can share the mark's second,
    and some of them may not have been on the last committed page.

    Keyset, not offset: after each page the list is asked again from the page's newest second (inclusive,
    page 1). Following ``links.next`` (page=2, 3, …) would page by offset, and a record that moves while the
    run pages past it (edited, so its updated_at jumps to the end; archived or deleted, so it leaves the list)
    shifts every later record one place back: the record at the page boundary lands on a page already read,
    and with the mark past it no incremental run would read it again. Records of the newest second that the
    previous page already gave are left out, so none is fetched twice. Only when a whole page shares one
    second does the walk go on by offset, inside that second."""
    since = None
    if checkpoint.high_water_mark is not None and not full:
        since = checkpoint.high_water_mark - timedelta(seconds=settings.SYNC_OVERLAP_SECONDS)
    seen: set[str] = set()  # the records of second ``since`` already given
    while True:
        for page in client.pages(endpoint, updated_after=since, inclusive=True):
            marks = [record_mark(record) for record in page.records]
            fresh = [record for record, mark in zip(page.records, marks, strict=True)
                     if not (since is not None and mark == since and record_key(record) in seen)]
            yield dataclasses.replace(page, records=fresh)
            if page.next_url is None:
                return
            newest = max((mark for mark in marks if mark is not None), default=None)
            if newest is not None and (since is None or newest > since):
                seen = {record_key(r) for r, mark in zip(page.records, marks, strict=True) if mark == newest}
                since = newest
                break  # ask again from the newest second
            seen |= {record_key(record) for record in page.records}  # one second fills the page: on by offset
        else:
            return


def record_key(record: dict) -> str:
    return repr(record.get("id"))


def record_id(record: dict) -> str:
    try:
        return str(cliniko_id(record.get("id")))
    except MalformedRecord:
        return "unreadable"


def record_mark(record: dict):
    try:
        return timestamp(record.get("updated_at") or record.get("deleted_at"))
    except MalformedRecord:
        return None


def advance_high_water_mark(checkpoint: SyncCheckpoint, page: ClinikoPage) -> None:
    """Move the high-water mark to the newest timestamp of the page, skipped records included: the page
    is done with, and re-reading a record that cannot be read would only skip it again. Never backwards: a
    full run re-reads from the start without losing the incremental runs' place."""
    newest = max((mark for mark in map(record_mark, page.records) if mark is not None), default=None)
    if newest is not None and (checkpoint.high_water_mark is None or newest > checkpoint.high_water_mark):
        checkpoint.high_water_mark = newest
