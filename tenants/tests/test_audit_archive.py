"""Audit logs past the retention are archived to files and restorable; nothing younger than 7 years is touched."""

from __future__ import annotations

import datetime
import gzip
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction
from psycopg import sql

from routiq.tests.test_settings import import_settings
from tenants import audit_archive
from tenants.maintenance_jobs import archive_old_audit_logs
from tenants.rls.binding import platform_access, write_alias
from tenants.rls.partitions import ensure_audit_partitions, first_of_month, partition_name
from tenants.tests.test_audit_log import insert_row, partition_holding

pytestmark = pytest.mark.django_db
UTC = datetime.UTC


@pytest.fixture
def archive_dir(settings, tmp_path):
    settings.AUDIT_ARCHIVE_DIR = tmp_path / "audit"
    return settings.AUDIT_ARCHIVE_DIR


def today() -> datetime.date:
    return datetime.datetime.now(UTC).date()


def at(month: datetime.date, day: int) -> datetime.datetime:
    return datetime.datetime(month.year, month.month, day, 12, tzinfo=UTC)


def midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(), tzinfo=UTC)


def all_rows(month: datetime.date) -> list[tuple]:
    """Every organization's audit rows of the month, read as the platform role."""
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in audit_archive.COLUMNS)
    with platform_access("test"), connections[write_alias()].cursor() as cursor:
        cursor.execute(sql.SQL("SELECT {} FROM audit_logs WHERE created_at >= %s AND created_at < %s ORDER BY id")
                       .format(columns), [midnight(month), midnight(first_of_month(month, 1))])
        return cursor.fetchall()


def partition_exists(month: datetime.date) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [f"public.{partition_name(month)}"])
        return cursor.fetchone()[0] is not None


def immediate_constraints() -> None:
    with connection.cursor() as cursor:  # the job's transaction is the test's: deferred FK checks are due
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # before a partition can be detached


@pytest.fixture
def history(org_a, org_b):
    """Audit rows of both clinics: two months over 8 years old (one partitioned, one still waiting in the
    default partition), and one month six years old."""
    partitioned, waiting = first_of_month(today(), -100), first_of_month(today(), -98)
    young = first_of_month(today(), -72)
    ensure_audit_partitions(months_ahead=0, today=partitioned)
    rows = {
        "partitioned": [insert_row(org_a, at(partitioned, 2)), insert_row(org_b, at(partitioned, 20))],
        "waiting": [insert_row(org_b, at(waiting, 9))],
        "young": [insert_row(org_a, at(young, 3))],
    }
    assert partition_holding(org_b, rows["waiting"][0]) == "audit_logs_default"
    immediate_constraints()
    return {"partitioned": partitioned, "waiting": waiting, "young": young, "rows": rows}


def test_archive_then_restore_returns_every_organizations_rows(archive_dir, history):
    before = {month: all_rows(history[month]) for month in ("partitioned", "waiting", "young")}
    assert [len(before[m]) for m in ("partitioned", "waiting", "young")] == [2, 1, 1]

    result = archive_old_audit_logs()

    assert result == "archived 2 months of audit logs, 3 rows"
    for month in ("partitioned", "waiting"):
        assert all_rows(history[month]) == []
        assert not partition_exists(history[month])
        manifest = json.loads((archive_dir / f"{partition_name(history[month])}.json").read_text())
        assert manifest["rows"] == len(before[month]) and manifest["format"] == audit_archive.FORMAT
        with gzip.open(archive_dir / manifest["data"], "rt") as handle:
            assert len(handle.read().splitlines()) == len(before[month])
    assert all_rows(history["young"]) == before["young"]  # six years old: stays

    for month in ("partitioned", "waiting"):
        call_command("restore_audit_archive", archive_dir / f"{partition_name(history[month])}.json")
        assert all_rows(history[month]) == before[month]


def test_a_longer_retention_keeps_more(archive_dir, history, settings):
    settings.AUDIT_LOG_RETENTION_YEARS = 9

    assert [a.month for a in audit_archive.archive_old_audit_logs()] == []
    assert partition_exists(history["partitioned"])


def drop(month: datetime.date, rows: int):
    with platform_access("test"), transaction.atomic(using=write_alias()):
        with connections[write_alias()].cursor() as cursor:
            cursor.execute("SELECT public.drop_archived_audit_log_partition(%s, %s)", [month, rows])


def test_the_database_refuses_to_drop_a_month_younger_than_seven_years(history):
    seven_years_ago = first_of_month(today(), -84)
    for month in (history["young"], seven_years_ago):
        ensure_audit_partitions(months_ahead=0, today=month)
    immediate_constraints()
    for month in (history["young"], seven_years_ago, first_of_month(today())):
        with pytest.raises(DatabaseError, match="younger than the legal minimum"):
            drop(month, 1)
        assert partition_exists(month)


def test_the_drop_refuses_a_wrong_count_and_leaves_the_month_attached(org_a, history):
    with pytest.raises(DatabaseError, match="holds 2 rows, the archive 1"):
        drop(history["partitioned"], 1)

    assert partition_holding(org_a, history["rows"]["partitioned"][0]) == partition_name(history["partitioned"])


def test_the_app_role_cannot_call_the_drop_function(history):
    with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT public.drop_archived_audit_log_partition(%s, 2)", [history["partitioned"]])


def test_a_restore_refuses_an_altered_archive_and_a_month_already_back(archive_dir, history):
    audit_archive.archive_old_audit_logs()
    manifest = archive_dir / f"{partition_name(history['partitioned'])}.json"
    data = archive_dir / f"{partition_name(history['partitioned'])}.copy.gz"
    original = data.read_bytes()
    data.write_bytes(gzip.compress(b"forged\n"))
    with pytest.raises(CommandError, match="SHA-256"):
        call_command("restore_audit_archive", manifest)

    data.write_bytes(original)
    call_command("restore_audit_archive", manifest)
    with pytest.raises(CommandError, match="already holds audit rows"):
        call_command("restore_audit_archive", manifest)


def test_settings_refuse_a_retention_below_the_legal_minimum():
    result = import_settings(DEBUG="1", AUDIT_LOG_RETENTION_YEARS="6")

    assert result.returncode != 0
    assert "legal minimum of 7 years" in result.stderr
