"""The vendor-sync engine every vendor uses: a vendor declares streams, the engine runs them.

A vendor's sync is a short list of ``Stream``s (see patients/sync.py for Cliniko, messaging/sync.py for
Chatwoot). Each stream says how to page from where its checkpoint stopped, how to read one vendor record into
one row, how to write one page of rows set-based, and how to move its checkpoint past a page. The engine knows
nothing about time, ids or offsets; it owns what every vendor needs the same:

- one run per (organization, provider, resource): ``pg_try_advisory_lock`` on this connection, released at
  the end or when a killed worker's connection dies, so the retried job can take over at once; a second run
  raises ``SyncAlreadyRunning``;
- each page written and its checkpoint saved in ONE transaction, so a killed worker resumes after its last
  committed page: no duplicate (writes are upserts anyway), no loss;
- a ``sync_logs`` row per run with fetched/created/updated/archived/failed counts, saved with each page;
- a record that cannot be read (``MalformedRecord``) is logged by id and reason, never by contents, counted in
  ``failed_count`` and skipped, and the rest of its page is written: otherwise one poison record would fail
  every run of the sync for good, until someone fixed it at the vendor;
- runs left "running" by a killed worker are closed as interrupted by the next run (which holds the lock, so
  they cannot still be running).

    log = run_sync(organization=org, provider="cliniko", resource="patients", streams=[...], job_id=job.id)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from routiq.http import VendorError
from tenants.models import Organization, SyncCheckpoint, SyncLog, SyncStatus
from tenants.rls.binding import require_organization_id

logger = logging.getLogger(__name__)

__all__ = ["MalformedRecord", "PageProgress", "Stream", "SyncAlreadyRunning", "WriteCounts", "run_sync"]


class SyncAlreadyRunning(RuntimeError):
    """Another run of the same resource holds the lock for this organization."""


class MalformedRecord(ValueError):
    """One vendor record cannot be read: the engine skips and counts it. Say what is wrong, never the value."""


@dataclass
class WriteCounts:
    """What one page's write did. ``contact_ids``: contacts whose derived data the vendor must recompute."""

    created: int = 0
    updated: int = 0
    archived: int = 0
    contact_ids: set[UUID] = field(default_factory=set)


RECORD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def default_record_id(record: dict) -> str:
    """The record's ``id`` for a log line, or "unreadable": only a short plain token, never a value that
    might be someone's data in the wrong field."""
    value = record.get("id") if isinstance(record, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and RECORD_ID.fullmatch(value):
        return value
    return "unreadable"


@dataclass(frozen=True)
class Stream:
    """One vendor list to mirror. ``name`` is the checkpoint key, unique per provider (e.g. "conversations").

    ``pages(checkpoint, full)`` yields pages from where the checkpoint stopped (``full``: from the start); a
    page has ``.records`` (list of dicts) and whatever ``advance`` needs. ``read(record)`` returns one row or
    raises MalformedRecord. ``write(organization, rows)`` writes one page set-based and returns WriteCounts.
    ``advance(checkpoint, page)`` moves the checkpoint past the page; the engine saves it with the page.
    """

    name: str
    pages: Callable[[SyncCheckpoint, bool], Iterable[Any]]
    read: Callable[[dict], Any]
    write: Callable[[Organization, list], WriteCounts]
    advance: Callable[[SyncCheckpoint, Any], None]
    record_id: Callable[[dict], str] = default_record_id  # for the "record skipped" log line


@dataclass
class PageProgress:
    stream: str
    records: int
    total_entries: int | None


def run_sync(
    *, organization: Organization, provider: str, resource: str, streams: list[Stream], full: bool = False,
    job_id: str = "", on_page: Callable[[PageProgress], None] | None = None,
) -> SyncLog:
    """Run ``streams`` in order as one sync of ``resource`` for the bound organization; return its log.

    Raises SyncAlreadyRunning (nothing written) or, after recording it in the log, whatever stopped the run
    (VendorError and the like: the job decides whether a retry can help).
    """
    if require_organization_id() != str(organization.pk):
        raise RuntimeError("run_sync must run with its organization bound.")
    names = [stream.name for stream in streams]
    if len(set(names)) != len(names):
        raise ValueError(f"stream names are checkpoint keys and must be unique: {names}")
    with advisory_lock(organization, provider, resource) as acquired:
        if not acquired:
            raise SyncAlreadyRunning(f"A {provider} {resource} sync is already running for {organization.pk}.")
        close_interrupted_runs(organization, provider, resource)
        log = SyncLog.objects.create(
            organization=organization, provider=provider, resource=resource, is_full=full, job_id=job_id
        )
        try:
            for stream in streams:
                sync_stream(organization, provider, stream, log, full=full, on_page=on_page)
        except (VendorError, ValueError) as exc:
            # Vendor errors are scrubbed of secrets and bodies; a ValueError here is a bad argument or a bug
            # (an unreadable record does not get here: read_page skips it).
            finish(log, SyncStatus.FAILED, error=f"{exc.__class__.__name__}: {exc}")
            logger.warning("%s sync failed organization_id=%s resource=%s error=%s",
                           provider, organization.pk, resource, exc)
            raise
        except Exception as exc:
            # Other messages (a database error's DETAIL, say) may quote a row: the class only, the rest in the
            # worker's log through the traceback RQ records.
            finish(log, SyncStatus.FAILED, error=f"{exc.__class__.__name__} (see the worker log)")
            raise
        except BaseException:
            finish(log, SyncStatus.FAILED, error="interrupted")
            raise
        finish(log, SyncStatus.SUCCEEDED)
        logger.info("%s sync done organization_id=%s resource=%s fetched=%s created=%s updated=%s archived=%s "
                    "skipped=%s", provider, organization.pk, resource, log.fetched_count, log.created_count,
                    log.updated_count, log.archived_count, log.failed_count)
        return log


def sync_stream(organization: Organization, provider: str, stream: Stream, log: SyncLog, *, full: bool,
                on_page: Callable[[PageProgress], None] | None) -> None:
    checkpoint, _ = SyncCheckpoint.objects.get_or_create(
        organization=organization, provider=provider, stream=stream.name
    )
    for page in stream.pages(checkpoint, full):
        records = list(page.records)
        rows = read_page(organization, provider, stream, records)
        with transaction.atomic():
            counts = stream.write(organization, rows)
            stream.advance(checkpoint, page)
            checkpoint.save(update_fields=["high_water_mark", "cursor", "updated_at"])
            log.fetched_count += len(records)
            log.created_count += counts.created
            log.updated_count += counts.updated
            log.archived_count += counts.archived
            log.failed_count += len(records) - len(rows)
            log.save(update_fields=["fetched_count", "created_count", "updated_count", "archived_count",
                                    "failed_count"])
        if on_page is not None:
            on_page(PageProgress(stream.name, len(records), getattr(page, "total_entries", None)))


def read_page(organization: Organization, provider: str, stream: Stream, records: list[dict]) -> list:
    """The rows of a page's readable records; an unreadable one is logged (its id and what is wrong with it,
    never its contents) and skipped."""
    rows = []
    for record in records:
        try:
            rows.append(stream.read(record))
        except MalformedRecord as exc:
            logger.warning("%s record skipped organization_id=%s stream=%s %s_id=%s reason=%s", provider,
                           organization.pk, stream.name, provider, stream.record_id(record), exc)
    return rows


def finish(log: SyncLog, status: str, *, error: str = "") -> None:
    log.status, log.error, log.finished_at = status, error[:2000], timezone.now()
    log.save(update_fields=["status", "error", "finished_at"])


def close_interrupted_runs(organization: Organization, provider: str, resource: str) -> None:
    """Runs still marked running while we hold the lock were killed: say so in their log rows."""
    SyncLog.objects.filter(
        organization=organization, provider=provider, resource=resource, status=SyncStatus.RUNNING
    ).update(status=SyncStatus.FAILED, error="interrupted (worker stopped); resumed by a later run",
             finished_at=timezone.now())


class advisory_lock:  # noqa: N801 - used as a context manager
    """pg_try_advisory_lock on (organization, "provider:resource"), held by this connection for the run.

    Session-level, not transaction-level: the run commits once per page, and the lock must outlive those
    commits. It dies with the connection, so a killed worker never leaves it behind.
    """

    def __init__(self, organization: Organization, provider: str, resource: str):
        self.keys = (str(organization.pk), f"{provider}:{resource}")
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
