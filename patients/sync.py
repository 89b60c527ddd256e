"""The Cliniko sync engine: vendor pages -> set-based upserts, one committed checkpoint per page.

A resource is a few streams (the live list, the archived or cancelled list, the deleted tombstones). Each
stream pages through Cliniko sorted by updated_at ascending from its high-water mark minus a small overlap
(records share one-second timestamps; upserts make re-reading harmless). Each page is written and its
checkpoint advanced in one transaction, so a killed worker resumes after its last committed page: no
duplicate, no loss. A PostgreSQL advisory lock keeps one run per organization and resource; it dies with
the connection of a killed worker, so the retried job can take over at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from patients import services
from patients.clients.cliniko import ClinikoClient, ClinikoPage
from patients.cliniko_records import (
    AppointmentRow,
    MalformedRecord,
    PatientRow,
    Tombstone,
    appointment_row,
    cliniko_id,
    patient_row,
    timestamp,
    tombstone,
)
from routiq.http import VendorError
from tenants.models import Organization, SyncCheckpoint, SyncLog, SyncStatus
from tenants.rls.binding import require_organization_id

logger = logging.getLogger(__name__)
PROVIDER = "cliniko"


class SyncAlreadyRunning(RuntimeError):
    pass


@dataclass(frozen=True)
class Stream:
    endpoint: str
    read: Callable[[dict, Organization], object]  # one vendor record -> one row; raises MalformedRecord
    write: Callable[[Organization, list], services.WriteCounts]  # one page of rows, one statement


def read_patient(record: dict, organization: Organization) -> PatientRow:
    return patient_row(record, organization.country)


def read_appointment(record: dict, organization: Organization) -> AppointmentRow:
    return appointment_row(record)


def read_tombstone(record: dict, organization: Organization) -> Tombstone:
    return tombstone(record)


def write_patients(organization: Organization, rows: list[PatientRow]) -> services.WriteCounts:
    counts = services.contacts_upsert_from_cliniko(organization=organization, rows=rows)
    services.active_patients_refresh(organization=organization, contact_ids=counts.contact_ids)
    return counts


def write_patient_tombstones(organization: Organization, rows: list[Tombstone]) -> services.WriteCounts:
    return services.contacts_mark_deleted(organization=organization, tombstones=rows)


def write_appointments(organization: Organization, rows: list[AppointmentRow]) -> services.WriteCounts:
    counts = services.appointments_upsert_from_cliniko(organization=organization, rows=rows)
    services.active_patients_refresh(organization=organization, contact_ids=counts.contact_ids)
    return counts


def write_appointment_tombstones(organization: Organization, rows: list[Tombstone]) -> services.WriteCounts:
    counts = services.appointments_mark_deleted(organization=organization, tombstones=rows)
    services.active_patients_refresh(organization=organization, contact_ids=counts.contact_ids)
    return counts


RESOURCES: dict[str, list[Stream]] = {
    "patients": [
        Stream("patients", read_patient, write_patients),
        Stream("patients/archived", read_patient, write_patients),
        Stream("patients/deleted", read_tombstone, write_patient_tombstones),
    ],
    "appointments": [
        Stream("individual_appointments", read_appointment, write_appointments),
        Stream("individual_appointments/cancelled", read_appointment, write_appointments),
        Stream("individual_appointments/deleted", read_tombstone, write_appointment_tombstones),
    ],
}


@dataclass
class PageProgress:
    stream: str
    records: int
    total_entries: int | None


def sync_cliniko(
    *, organization: Organization, resource: str, client: ClinikoClient, full: bool = False, job_id: str = "",
    on_page: Callable[[PageProgress], None] | None = None,
) -> SyncLog:
    """Run one sync of ``resource`` for the bound organization. Raises VendorError after recording it."""
    if require_organization_id() != str(organization.pk):
        raise RuntimeError("sync_cliniko must run with its organization bound.")
    streams = RESOURCES[resource]
    with advisory_lock(organization, resource) as acquired:
        if not acquired:
            raise SyncAlreadyRunning(f"A {resource} sync is already running for {organization.pk}.")
        close_interrupted_runs(organization, resource)
        log = SyncLog.objects.create(
            organization=organization, provider=PROVIDER, resource=resource, is_full=full, job_id=job_id
        )
        try:
            for stream in streams:
                sync_stream(organization, stream, client, log, full=full, on_page=on_page)
        except (VendorError, ValueError) as exc:
            # A bad record does not get here (read_page skips it); a ValueError here is a bad argument or a bug.
            finish(log, SyncStatus.FAILED, error=f"{exc.__class__.__name__}: {exc}")
            logger.warning("cliniko sync failed organization_id=%s resource=%s error=%s",
                           organization.pk, resource, exc)
            raise
        except BaseException:
            finish(log, SyncStatus.FAILED, error="interrupted")
            raise
        finish(log, SyncStatus.SUCCEEDED)
        logger.info("cliniko sync done organization_id=%s resource=%s fetched=%s created=%s updated=%s archived=%s "
                    "skipped=%s", organization.pk, resource, log.fetched_count, log.created_count,
                    log.updated_count, log.archived_count, log.failed_count)
        return log


def sync_stream(organization, stream: Stream, client: ClinikoClient, log: SyncLog, *, full: bool, on_page) -> None:
    checkpoint, _ = SyncCheckpoint.objects.get_or_create(
        organization=organization, provider=PROVIDER, stream=stream.endpoint
    )
    since = None
    if checkpoint.high_water_mark is not None and not full:
        since = checkpoint.high_water_mark - timedelta(seconds=settings.SYNC_OVERLAP_SECONDS)
    for page in client.pages(stream.endpoint, updated_after=since, inclusive=True):
        rows = read_page(organization, stream, page.records)
        with transaction.atomic():
            counts = stream.write(organization, rows)
            advance(checkpoint, page)
            log.fetched_count += len(page.records)
            log.created_count += counts.created
            log.updated_count += counts.updated
            log.archived_count += counts.archived
            log.failed_count += len(page.records) - len(rows)
            log.save(update_fields=["fetched_count", "created_count", "updated_count", "archived_count",
                                    "failed_count"])
        if on_page is not None:
            on_page(PageProgress(stream.endpoint, len(page.records), page.total_entries))


def read_page(organization: Organization, stream: Stream, records: list[dict]) -> list:
    """The rows of a page's readable records. One bad record is logged (its id and what is wrong with it,
    never its contents) and skipped, and the rest of the page is written: otherwise it would fail every run
    of the sync, for good, until someone fixed it in Cliniko."""
    rows = []
    for record in records:
        try:
            rows.append(stream.read(record, organization))
        except MalformedRecord as exc:
            logger.warning("cliniko record skipped organization_id=%s stream=%s cliniko_id=%s reason=%s",
                           organization.pk, stream.endpoint, record_id(record), exc)
    return rows


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


def advance(checkpoint: SyncCheckpoint, page: ClinikoPage) -> None:
    """Move the high-water mark to the newest timestamp of the page, skipped records included: the page
    is done with, and re-reading a record that cannot be read would only skip it again."""
    newest = max((mark for mark in map(record_mark, page.records) if mark is not None), default=None)
    if newest is not None and (checkpoint.high_water_mark is None or newest > checkpoint.high_water_mark):
        checkpoint.high_water_mark = newest
        checkpoint.save(update_fields=["high_water_mark", "updated_at"])


def finish(log: SyncLog, status: str, *, error: str = "") -> None:
    log.status, log.error, log.finished_at = status, error[:2000], timezone.now()
    log.save(update_fields=["status", "error", "finished_at"])


def close_interrupted_runs(organization: Organization, resource: str) -> None:
    """Runs still marked running while we hold the lock were killed: say so in their log rows."""
    SyncLog.objects.filter(
        organization=organization, provider=PROVIDER, resource=resource, status=SyncStatus.RUNNING
    ).update(status=SyncStatus.FAILED, error="interrupted (worker stopped); resumed by a later run",
             finished_at=timezone.now())


class advisory_lock:  # noqa: N801 - used as a context manager
    """pg_try_advisory_lock on (organization, resource), held by this connection for the run."""

    def __init__(self, organization: Organization, resource: str):
        self.keys = (str(organization.pk), f"{PROVIDER}:{resource}")
        self.acquired = False

    def __enter__(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", self.keys)
            self.acquired = cursor.fetchone()[0]
        return self.acquired

    def __exit__(self, *exc_info) -> None:
        if self.acquired and connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", self.keys)
