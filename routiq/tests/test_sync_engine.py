"""The vendor-sync engine (routiq/sync.py) with a tiny fake vendor, as the app role.

The fake vendor serves records with ids 1..N in pages of three, paged by an id cursor kept in the checkpoint
(like Chatwoot's message ids); its write creates contacts with plain INSERTs, so a page written twice would
fail on the unique Cliniko-id index instead of passing as an upsert would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import cast

import psycopg
import pytest
from django.db import connection

from patients.models import Contact
from routiq.sync import MalformedRecord, Stream, SyncAlreadyRunning, WriteCounts, run_sync
from tenants.models import SyncCheckpoint, SyncLog, SyncStatus
from tenants.rls.binding import bind_organization, bound_organization_id

pytestmark = pytest.mark.django_db
PROVIDER = "fakevendor"
PAGE_SIZE = 3


class Killed(BaseException):
    """Stands in for the worker dying mid-page: not an Exception, so nothing in between may swallow it."""


@dataclass
class FakePage:
    records: list[dict] = field(repr=False)
    next_cursor: str


@dataclass
class FakeVendor:
    records: list[dict]
    served: list[int | None] = field(default_factory=list)  # ids handed out, in order
    fail_on_page: int | None = None  # the write of this page (1-based within a run) raises after inserting
    kill_on_page: int | None = None
    pages_written: int = 0

    def pages(self, checkpoint: SyncCheckpoint, full: bool):
        after = 0 if full or not checkpoint.cursor else int(checkpoint.cursor)
        remaining = [r for r in self.records if isinstance(r.get("id"), int) and r["id"] > after
                     or r.get("after") is not None and r["after"] > after]
        for start in range(0, len(remaining), PAGE_SIZE):
            page = remaining[start:start + PAGE_SIZE]
            self.served.extend(r.get("id") for r in page)
            last = page[-1]
            yield FakePage(records=page, next_cursor=str(last["id"] if isinstance(last.get("id"), int)
                                                           else last["after"]))

    def read(self, record: dict) -> tuple[int, str]:
        if not isinstance(record.get("id"), int):
            raise MalformedRecord("bad id")
        if not isinstance(record.get("name"), str):
            raise MalformedRecord(f"bad name {type(record.get('name')).__name__}")
        return record["id"], record["name"]

    def write(self, organization, rows: list[tuple[int, str]]) -> WriteCounts:
        assert bound_organization_id() == str(organization.pk)
        Contact.objects.bulk_create(
            [Contact(organization=organization, cliniko_patient_id=vendor_id, first_name=name)
             for vendor_id, name in rows]
        )
        self.pages_written += 1
        if self.pages_written == self.fail_on_page:
            raise ValueError("the write failed after its INSERT")
        if self.pages_written == self.kill_on_page:
            raise Killed
        return WriteCounts(created=len(rows))

    @staticmethod
    def advance(checkpoint: SyncCheckpoint, page: FakePage) -> None:
        checkpoint.cursor = page.next_cursor

    def stream(self, name: str = "things") -> Stream:
        return Stream(name=name, pages=self.pages, read=self.read, write=self.write, advance=self.advance)


def vendor_of(count: int) -> FakeVendor:
    return FakeVendor(records=[{"id": n, "name": f"Name {n}"} for n in range(1, count + 1)])


def run(organization, vendor: FakeVendor, **kwargs) -> SyncLog:
    with bind_organization(organization):
        return run_sync(organization=organization, provider=PROVIDER, resource="things",
                        streams=[vendor.stream()], **kwargs)


def synced_ids(organization) -> list[int]:
    with bind_organization(organization):
        return sorted(cast("list[int]", Contact.objects.values_list("cliniko_patient_id", flat=True)))  # Cliniko only


def cursor_of(organization, stream: str = "things") -> str:
    with bind_organization(organization):
        return SyncCheckpoint.objects.get(provider=PROVIDER, stream=stream).cursor


def test_a_run_writes_every_page_logs_counts_and_checkpoints_the_last(org_a):
    log = run(org_a, vendor_of(8), job_id="job-1")

    assert synced_ids(org_a) == list(range(1, 9))
    assert (log.status, log.fetched_count, log.created_count, log.failed_count) == (SyncStatus.SUCCEEDED, 8, 8, 0)
    assert (log.provider, log.resource, log.job_id, log.finished_at is not None) == (PROVIDER, "things", "job-1",
                                                                                    True)
    assert cursor_of(org_a) == "8"


def test_a_second_run_is_refused_while_one_holds_the_lock(org_a):
    params = connection.get_connection_params()  # TCP or an embedded server's socket directory
    holder = psycopg.connect(**{key: params[key] for key in ("dbname", "user", "password", "host", "port")
                                if params.get(key)}, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", [str(org_a.pk), f"{PROVIDER}:things"])
        with pytest.raises(SyncAlreadyRunning):
            run(org_a, vendor_of(4))
        with bind_organization(org_a):
            assert not SyncLog.objects.exists()  # refused before anything was written
        assert synced_ids(org_a) == []
    finally:
        holder.close()

    # The server drops a closed connection's locks when its backend exits, a moment after close() returns.
    wait_until_no_advisory_locks()
    assert run(org_a, vendor_of(4)).status == SyncStatus.SUCCEEDED  # released with the holder's connection


def wait_until_no_advisory_locks(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)


def test_the_lock_is_per_resource_and_organization(org_a, org_b):
    params = connection.get_connection_params()
    holder = psycopg.connect(**{key: params[key] for key in ("dbname", "user", "password", "host", "port")
                                if params.get(key)}, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", [str(org_a.pk), f"{PROVIDER}:other"])
        holder.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", [str(org_b.pk), f"{PROVIDER}:things"])

        assert run(org_a, vendor_of(2)).status == SyncStatus.SUCCEEDED
    finally:
        holder.close()


def test_a_write_that_raises_mid_run_rolls_back_its_page_and_checkpoint_together(org_a):
    vendor = vendor_of(10)
    vendor.fail_on_page = 3

    with pytest.raises(ValueError, match="after its INSERT"):
        run(org_a, vendor)

    assert synced_ids(org_a) == list(range(1, 7))  # pages 1 and 2; page 3's INSERT went with its transaction
    assert cursor_of(org_a) == "6"  # and the checkpoint stayed where the committed pages end
    with bind_organization(org_a):
        failed = SyncLog.objects.get()
    assert (failed.status, failed.fetched_count, failed.created_count) == (SyncStatus.FAILED, 6, 6)
    assert failed.error == "ValueError: the write failed after its INSERT"

    resumed = run(org_a, vendor_of(10))

    assert synced_ids(org_a) == list(range(1, 11))  # the plain INSERTs prove no page was written twice
    assert (resumed.status, resumed.fetched_count) == (SyncStatus.SUCCEEDED, 4)


def test_a_killed_run_resumes_after_its_last_committed_page_and_is_closed_as_interrupted(org_a):
    vendor = vendor_of(11)
    vendor.kill_on_page = 2

    with pytest.raises(Killed):
        run(org_a, vendor)
    with bind_organization(org_a):
        # A SIGKILL runs no cleanup: the run's log row stays "running", as the killed worker leaves it.
        SyncLog.objects.update(status=SyncStatus.RUNNING, error="", finished_at=None)
        killed = SyncLog.objects.get()
    assert synced_ids(org_a) == [1, 2, 3]

    resumed = run(org_a, vendor_of(11))

    assert synced_ids(org_a) == list(range(1, 12))
    assert (resumed.status, resumed.fetched_count) == (SyncStatus.SUCCEEDED, 8)  # from the checkpoint on
    with bind_organization(org_a):
        killed.refresh_from_db()
    assert killed.status == SyncStatus.FAILED and killed.error.startswith("interrupted")
    assert killed.finished_at is not None


def test_an_interrupted_run_records_itself_as_interrupted(org_a):
    vendor = vendor_of(5)
    vendor.kill_on_page = 1

    with pytest.raises(Killed):
        run(org_a, vendor)

    with bind_organization(org_a):
        log = SyncLog.objects.get()
    assert (log.status, log.error) == (SyncStatus.FAILED, "interrupted")


def test_only_this_resources_running_logs_are_closed(org_a):
    with bind_organization(org_a):
        other_resource = SyncLog.objects.create(organization=org_a, provider=PROVIDER, resource="others")
        other_provider = SyncLog.objects.create(organization=org_a, provider="cliniko", resource="things")

    run(org_a, vendor_of(1))

    with bind_organization(org_a):
        assert SyncLog.objects.get(pk=other_resource.pk).status == SyncStatus.RUNNING
        assert SyncLog.objects.get(pk=other_provider.pk).status == SyncStatus.RUNNING


def test_malformed_records_are_skipped_counted_and_logged_by_id_only(org_a, caplog):
    vendor = vendor_of(7)
    vendor.records[1]["name"] = {"secret": "Jane Citizen"}  # id 2, on the first page
    vendor.records[5] = {"id": "Jane Citizen", "name": "x", "after": 6}  # no usable id: its contents stay out
    caplog.set_level(logging.WARNING, logger="routiq.sync")

    log = run(org_a, vendor)

    assert (log.status, log.fetched_count, log.created_count, log.failed_count) == (SyncStatus.SUCCEEDED, 7, 5, 2)
    assert synced_ids(org_a) == [1, 3, 4, 5, 7]
    assert cursor_of(org_a) == "7"  # the page of a skipped record is done with, and the mark moves past it
    warnings = [r.getMessage() for r in caplog.records if "record skipped" in r.getMessage()]
    assert len(warnings) == 2
    assert f"{PROVIDER}_id=2 reason=bad name dict" in warnings[0]
    assert f"{PROVIDER}_id=unreadable reason=bad id" in warnings[1]
    assert not any("Jane" in warning or "Citizen" in warning for warning in warnings)


def test_streams_run_in_order_each_with_its_own_checkpoint_and_full_starts_over(org_a):
    first, second = vendor_of(4), FakeVendor(records=[{"id": n, "name": "B"} for n in range(101, 103)])
    streams = [first.stream("first"), second.stream("second")]
    with bind_organization(org_a):
        run_sync(organization=org_a, provider=PROVIDER, resource="things", streams=streams)
    assert (cursor_of(org_a, "first"), cursor_of(org_a, "second")) == ("4", "102")
    assert first.served == [1, 2, 3, 4] and second.served == [101, 102]

    with bind_organization(org_a):
        Contact.objects.all().delete()
        again = run_sync(organization=org_a, provider=PROVIDER, resource="things", streams=streams)
        assert again.fetched_count == 0  # incremental: nothing past the checkpoints
        full = run_sync(organization=org_a, provider=PROVIDER, resource="things", streams=streams, full=True)

    assert (full.fetched_count, full.is_full) == (6, True)
    assert synced_ids(org_a) == [1, 2, 3, 4, 101, 102]


def test_the_run_needs_its_organization_bound(org_a, org_b):
    with pytest.raises(RuntimeError, match="bound"), bind_organization(org_b):
        run_sync(organization=org_a, provider=PROVIDER, resource="things", streams=[vendor_of(1).stream()])


def test_stream_names_are_checkpoint_keys_and_must_be_unique(org_a):
    vendor = vendor_of(1)
    with pytest.raises(ValueError, match="unique"), bind_organization(org_a):
        run_sync(organization=org_a, provider=PROVIDER, resource="things", streams=[vendor.stream(), vendor.stream()])


def test_an_unexpected_error_is_logged_by_class_only_since_its_message_may_quote_a_row(org_a):
    vendor = vendor_of(2)

    def write(organization, rows):
        raise RuntimeError("Key (email)=(jane@example.com) already exists")

    stream = Stream(name="things", pages=vendor.pages, read=vendor.read, write=write, advance=vendor.advance)
    with pytest.raises(RuntimeError), bind_organization(org_a):
        run_sync(organization=org_a, provider=PROVIDER, resource="things", streams=[stream])

    with bind_organization(org_a):
        log = SyncLog.objects.get()
    assert (log.status, log.error) == (SyncStatus.FAILED, "RuntimeError (see the worker log)")
