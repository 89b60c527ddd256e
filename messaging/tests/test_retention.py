"""Retention: months of messages past an organization's retention are archived to files and restorable."""

from __future__ import annotations

import datetime
import gzip
import json
import stat

import pytest
from django.core.management import CommandError, call_command
from django.db import ProgrammingError, connection, transaction
from django.utils import timezone
from psycopg import sql

from messaging import retention
from messaging.partitions import ensure_message_partitions
from messaging.search import message_search
from messaging.tests import factories
from tenants.rls.binding import bind_organization
from tenants.rls.partitions import first_of_month, partition_name

pytestmark = pytest.mark.django_db
UTC = datetime.UTC


@pytest.fixture
def archive_dir(settings, tmp_path):
    settings.MESSAGE_ARCHIVE_DIR = tmp_path / "archive"
    settings.MESSAGE_RETENTION_MONTHS = 12
    return settings.MESSAGE_ARCHIVE_DIR


def today() -> datetime.date:
    return timezone.now().date()


def at(month: datetime.date, day: int, hour: int = 9) -> datetime.datetime:
    return datetime.datetime(month.year, month.month, day, hour, tzinfo=UTC)


def month_rows(organization, month: datetime.date) -> list[tuple]:
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in retention.COLUMNS)
    with bind_organization(organization), connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT {} FROM messages WHERE sent_at >= %s AND sent_at < %s ORDER BY id").format(
            columns), [at(month, 1, 0), at(first_of_month(month, 1), 1, 0)])
        return cursor.fetchall()


def partition_exists(organization, month: datetime.date) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [f'"{organization.schema_name}".{partition_name(month, "messages")}'])
        return cursor.fetchone()[0] is not None


def search(organization, word: str) -> list[int]:
    with bind_organization(organization):
        return [hit.message_id for hit in message_search(organization=organization, query=word, limit=50)]


@pytest.fixture
def history(org_a):
    """Clinic A: a conversation with messages 14 months back (past a 12-month retention) and last month."""
    old, recent = first_of_month(today(), -14), first_of_month(today(), -1)
    with bind_organization(org_a):
        ensure_message_partitions(organization=org_a, months_ahead=0, today=old)
    thread = factories.conversation(org_a, factories.contact(org_a))
    old_messages = [
        factories.message(org_a, thread, at(old, 3), "Knee still sore, zephyrine cream?"),
        factories.message(org_a, thread, at(old, 3, 10), "Line one\nline two\tand a tab \\ and a backslash",
                          direction="outbound", attachments=[{"type": "image", "name": "x.png", "url": "https://e/x"}]),
        factories.message(org_a, thread, at(old, 28), "A private note", private=True, sender_name="Dr Ng"),
    ]
    factories.message(org_a, thread, at(recent, 5), "Recent message")
    with connection.cursor() as cursor:  # the job runs in a transaction of its own: here the rows' deferred
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # FK checks are due before the partition is detached
    return {"old": old, "recent": recent, "old_ids": [m.pk for m in old_messages]}


def test_archive_then_restore_returns_the_same_rows(org_a, archive_dir, history):
    old = history["old"]
    before = month_rows(org_a, old)
    assert len(before) == 3
    assert search(org_a, "zephyrine") == [history["old_ids"][0]]

    with bind_organization(org_a):
        assert retention.months_past_retention(org_a) == [old]
        (archive,) = retention.archive_old_messages(organization=org_a)

    assert (archive.month, archive.rows) == (old, 3)
    assert not partition_exists(org_a, old)
    assert month_rows(org_a, old) == []
    assert len(month_rows(org_a, history["recent"])) == 1  # within the retention: kept
    assert search(org_a, "zephyrine") == []  # the month's search documents went with it
    directory = archive_dir / org_a.schema_name
    assert sorted(p.name for p in directory.iterdir()) == [f"messages_y{old:%Y}m{old:%m}.copy.gz",
                                                            f"messages_y{old:%Y}m{old:%m}.json"]
    assert stat.S_IMODE(archive.data.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    manifest = json.loads(archive.manifest.read_text())
    assert (manifest["organization_id"], manifest["month"], manifest["rows"]) == (str(org_a.pk), old.isoformat(), 3)
    assert len(gzip.decompress(archive.data.read_bytes()).splitlines()) == 3

    call_command("restore_archive", str(archive.manifest))

    assert month_rows(org_a, old) == before
    assert partition_exists(org_a, old)
    assert search(org_a, "zephyrine") == [history["old_ids"][0]]


def test_old_rows_waiting_in_the_default_partition_are_archived_too(org_a, archive_dir, history):
    """History synced before its month had a partition waits in messages_default; archival takes it too."""
    older = first_of_month(history["old"], -2)
    thread = factories.conversation(org_a, factories.contact(org_a))
    waiting = factories.message(org_a, thread, at(older, 7), "Synced from long ago")
    with bind_organization(org_a), connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM messages WHERE id = %s", [waiting.pk])
        assert cursor.fetchone()[0].endswith("messages_default")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    with bind_organization(org_a):
        archives = retention.archive_old_messages(organization=org_a)

    assert [(a.month, a.rows) for a in archives] == [(older, 1), (history["old"], 3)]
    assert month_rows(org_a, older) == []


def test_nothing_is_archived_within_the_retention_or_when_it_is_zero(org_a, archive_dir, history, settings):
    with bind_organization(org_a):
        assert retention.months_past_retention(org_a, today=first_of_month(history["old"], 12)) == []
        assert retention.months_past_retention(org_a, today=first_of_month(history["old"], 13)) == [history["old"]]
        settings.MESSAGE_RETENTION_MONTHS = 0
        assert retention.months_past_retention(org_a) == []
        org_a.message_retention_months = 13  # the organization's own setting wins over the platform's
        assert retention.months_past_retention(org_a) == [history["old"]]
        org_a.message_retention_months = 24
        assert retention.months_past_retention(org_a) == []


def drop_call(organization, month, rows):
    with connection.cursor() as cursor, transaction.atomic():
        cursor.execute(sql.SQL("SELECT {}(%s, %s)").format(
            sql.Identifier(organization.schema_name, "drop_archived_messages_partition")), [month, rows])


def test_the_drop_function_refuses_anything_but_its_own_complete_ended_month(org_a, org_b, archive_dir, history):
    old = history["old"]
    with bind_organization(org_b), pytest.raises(ProgrammingError, match="bind this schema's organization first"):
        drop_call(org_a, old, 3)  # B bound, A's schema
    with pytest.raises(ProgrammingError, match="bind this schema's organization first"):
        drop_call(org_a, old, 3)  # nothing bound
    with bind_organization(org_a):
        with pytest.raises(Exception, match="holds 3 rows, the archive 2"):
            drop_call(org_a, old, 2)  # a row the file does not have
        with pytest.raises(Exception, match="not a month that has ended"):
            drop_call(org_a, first_of_month(today(), 0), 0)
    assert partition_exists(org_a, old) and len(month_rows(org_a, old)) == 3


def test_a_restore_refuses_an_altered_archive_and_a_month_already_back(org_a, archive_dir, history):
    with bind_organization(org_a):
        (archive,) = retention.archive_old_messages(organization=org_a)
    original = archive.data.read_bytes()
    archive.data.write_bytes(gzip.compress(gzip.decompress(original).replace(b"sore", b"fine")))
    with pytest.raises(CommandError, match="does not match its manifest"):
        call_command("restore_archive", str(archive.manifest))
    archive.data.write_bytes(original)
    call_command("restore_archive", str(archive.manifest))
    with pytest.raises(CommandError, match="already holds messages"):
        call_command("restore_archive", str(archive.manifest))
    assert len(month_rows(org_a, history["old"])) == 3


def test_the_daily_fan_out_enqueues_one_job_per_organization(org_a, org_b, empty_queue,
                                                             django_capture_on_commit_callbacks):
    from tenants.models import Organization

    queue = empty_queue("default")
    active = set(Organization.objects.filter(is_active=True).values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        assert retention.archive_old_messages_everywhere() == len(active)
    assert set(queue.job_ids) == {f"message-archival-{pk}" for pk in active}
    assert retention.archive_messages_for(str(org_b.pk)) == "archived 0 months, 0 messages"  # retention 0
