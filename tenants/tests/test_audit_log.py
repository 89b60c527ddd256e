"""audit_logs is append-only and partitioned by month (tenants/migrations/0006), as the app role and the owner."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.db import DatabaseError, DataError, ProgrammingError, connection, transaction
from psycopg import sql

from tenants.audit import audit_record
from tenants.maintenance_jobs import create_audit_log_partitions
from tenants.models import AuditLog
from tenants.rls.binding import bind_organization, platform_access
from tenants.rls.partitions import ensure_audit_partitions, first_of_month, partition_name

pytestmark = pytest.mark.django_db

UTC = datetime.UTC
APPEND_ONLY = "audit_logs is append-only"


def utc_today() -> datetime.date:
    return datetime.datetime.now(UTC).date()


def record(organization, action: str = "test.audited") -> AuditLog:
    return audit_record(action=action, organization=organization, actor_label="test", changes={"n": 1})


def insert_row(organization, created_at: datetime.datetime) -> int:
    """A row with an explicit created_at (the model's auto_now_add would overwrite it)."""
    with bind_organization(organization), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audit_logs (organization_id, actor_label, action, object_type, object_id, user_agent,
                                    changes, created_at)
            VALUES (%s, 'test', 'test.dated', '', '', '', '{}', %s) RETURNING id
            """,
            [organization.pk, created_at],
        )
        return cursor.fetchone()[0]


def partition_holding(organization, row_id: int) -> str:
    with bind_organization(organization), connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM audit_logs WHERE id = %s", [row_id])
        return cursor.fetchone()[0]


def count_in(table: str, row_id: int) -> int:
    with connection.cursor() as cursor:
        query = sql.SQL("SELECT count(*) FROM {} WHERE id = %s").format(sql.Identifier("public", table))
        cursor.execute(query, [row_id])
        return cursor.fetchone()[0]


def current_user() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        return cursor.fetchone()[0]


def policies(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT policyname, permissive, roles, cmd, qual, with_check FROM pg_policies
            WHERE schemaname = 'public' AND tablename = %s ORDER BY policyname
            """,
            [table],
        )
        return cursor.fetchall()


# --- append-only ---------------------------------------------------------------------------------------------


def test_app_role_cannot_update_an_audit_row(org_a):
    assert current_user() == settings.DATABASE_APP_ROLE
    row = record(org_a, "test.original")

    with bind_organization(org_a):
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            AuditLog.objects.filter(pk=row.pk).update(action="test.tampered")
        row.action = "test.tampered"
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            row.save()
        assert AuditLog.objects.get(pk=row.pk).action == "test.original"


def test_app_role_cannot_delete_an_audit_row(org_a):
    row = record(org_a)

    with bind_organization(org_a):
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            AuditLog.objects.filter(pk=row.pk).delete()
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            row.delete()
        assert AuditLog.objects.filter(pk=row.pk).exists()


def test_app_role_cannot_update_or_delete_through_the_partition(org_a):
    row = record(org_a, "test.original")
    partition = partition_holding(org_a, row.pk)
    assert partition == partition_name(utc_today().replace(day=1))

    with bind_organization(org_a), connection.cursor() as cursor:
        for statement in ("UPDATE {} SET action = 'test.tampered' WHERE id = %s", "DELETE FROM {} WHERE id = %s"):
            with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
                cursor.execute(sql.SQL(statement).format(sql.Identifier("public", partition)), [row.pk])
        assert AuditLog.objects.get(pk=row.pk).action == "test.original"


def test_app_role_cannot_truncate(org_a):
    row = record(org_a)
    partition = partition_holding(org_a, row.pk)

    for table in ("audit_logs", partition, "audit_logs_default"):
        # The app role holds no TRUNCATE privilege; were it granted, the trigger would still refuse.
        with pytest.raises(ProgrammingError, match=f"permission denied|{APPEND_ONLY}"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("public", table)))
    with bind_organization(org_a):
        assert AuditLog.objects.filter(pk=row.pk).exists()


@pytest.mark.owner_role
def test_owner_role_cannot_update_or_delete_either(org_a):
    assert current_user() != settings.DATABASE_APP_ROLE
    row = record(org_a, "test.original")
    partition = partition_holding(org_a, row.pk)

    with bind_organization(org_a):
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            AuditLog.objects.filter(pk=row.pk).update(action="test.tampered")
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            AuditLog.objects.filter(pk=row.pk).delete()
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier("public", partition)))
        assert AuditLog.objects.get(pk=row.pk).action == "test.original"


@pytest.mark.owner_role
def test_owner_role_cannot_truncate_either(org_a):
    # No insert in this transaction: PostgreSQL refuses TRUNCATE of a table with pending (deferred FK) trigger
    # events before any TRUNCATE trigger runs, which would hide what this test is about. The organizations
    # created for the session were audited, so there are rows to lose.
    assert current_user() != settings.DATABASE_APP_ROLE
    this_month = partition_name(utc_today().replace(day=1))
    with platform_access("test"):
        before = AuditLog.objects.count()
    assert before > 0

    for table in ("audit_logs", this_month, "audit_logs_default"):
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("public", table)))
    with platform_access("test"):
        assert AuditLog.objects.count() == before


# --- partitions ----------------------------------------------------------------------------------------------


def test_audit_logs_is_partitioned_by_month_with_a_composite_primary_key(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = 'public.audit_logs'::regclass")
        assert cursor.fetchone()[0] == "p"
        cursor.execute("SELECT pg_get_partkeydef('public.audit_logs'::regclass)")
        assert cursor.fetchone()[0] == "RANGE (created_at)"
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'public.audit_logs'::regclass AND contype = 'p'"
        )
        assert cursor.fetchone()[0] == "PRIMARY KEY (id, created_at)"
        cursor.execute("SELECT pg_get_serial_sequence('public.audit_logs', 'id')")
        assert cursor.fetchone()[0] == "public.audit_logs_id_seq"
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'public.audit_logs'::regclass"
        )
        partitions = {name for (name,) in cursor.fetchall()}
    this_month = utc_today().replace(day=1)
    assert {"audit_logs_default", *(partition_name(first_of_month(this_month, n)) for n in range(4))} <= partitions


def test_a_row_lands_in_its_months_partition(org_a):
    month = first_of_month(utc_today(), 2)
    ensure_audit_partitions()  # the migration made them; a long-lived database relies on the job
    row_id = insert_row(org_a, datetime.datetime(month.year, month.month, 10, 12, tzinfo=UTC))

    assert partition_holding(org_a, row_id) == partition_name(month)


def test_a_row_for_a_month_without_partition_lands_in_the_default_partition(org_a):
    row_id = insert_row(org_a, datetime.datetime(2090, 6, 15, tzinfo=UTC))

    assert partition_holding(org_a, row_id) == "audit_logs_default"


def test_ensure_audit_partitions_as_the_app_role_creates_forced_rls_partitions(org_a):
    assert current_user() == settings.DATABASE_APP_ROLE
    wanted = ["audit_logs_y2030m01", "audit_logs_y2030m02", "audit_logs_y2030m03"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT has_schema_privilege('public', 'CREATE')")
        assert cursor.fetchone()[0] is False  # the app role cannot create tables: the function does it
        for name in wanted:
            cursor.execute("SELECT to_regclass(%s)", [f"public.{name}"])
            assert cursor.fetchone()[0] is None

    assert ensure_audit_partitions(months_ahead=2, today=datetime.date(2030, 1, 1)) == wanted
    assert ensure_audit_partitions(months_ahead=2, today=datetime.date(2030, 1, 20)) == wanted  # idempotent

    parent_policies = policies("audit_logs")
    assert parent_policies
    with connection.cursor() as cursor:
        for name in wanted:
            cursor.execute(
                """
                SELECT c.relispartition, c.relrowsecurity, c.relforcerowsecurity, pg_get_expr(c.relpartbound, c.oid),
                       i.inhparent::regclass::text
                FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.oid = %s::regclass
                """,
                [f"public.{name}"],
            )
            is_partition, enabled, forced, bounds, parent = cursor.fetchone()
            assert (is_partition, enabled, forced, parent) == (True, True, True, "audit_logs")
            month = datetime.date(2030, int(name[-2:]), 1)
            assert bounds == (f"FOR VALUES FROM ('{month} 00:00:00+00') TO ('{first_of_month(month, 1)} 00:00:00+00')")
            assert policies(name) == parent_policies
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass ORDER BY tgname", [name])
            assert {"audit_logs_append_only", "audit_logs_no_truncate"} <= {t for (t,) in cursor.fetchall()}

    row_id = insert_row(org_a, datetime.datetime(2030, 2, 15, tzinfo=UTC))
    assert partition_holding(org_a, row_id) == "audit_logs_y2030m02"
    with bind_organization(org_a), connection.cursor() as cursor:
        with pytest.raises(ProgrammingError, match=APPEND_ONLY), transaction.atomic():
            cursor.execute("UPDATE audit_logs_y2030m02 SET action = 'test.tampered' WHERE id = %s", [row_id])


def test_partition_function_validates_its_month(db):
    for month, message in (
        ("2030-01-15", "not the first day of a month"),
        ("1999-12-01", "out of range"),
        ("2999-01-01", "out of range"),
        (None, "month is required"),
    ):
        with pytest.raises(DataError, match=message), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT public.create_audit_log_partition(%s::date)", [month])


@pytest.mark.owner_role
def test_scheduled_job_keeps_the_coming_months_partitioned(db):
    this_month = utc_today().replace(day=1)
    furthest = partition_name(first_of_month(this_month, 3))
    with connection.cursor() as cursor:
        # The migration made the coming months' partitions already; drop the furthest (as the owner) so that
        # the job, run as the app role like the worker, has one to create.
        cursor.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("public", furthest)))
        cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(settings.DATABASE_APP_ROLE)))

    result = create_audit_log_partitions()

    for n in range(4):
        assert partition_name(first_of_month(this_month, n)) in result
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)::text", [f"public.{furthest}"])
        assert cursor.fetchone()[0] == furthest


def test_first_of_month_rolls_over_years():
    assert first_of_month(datetime.date(2026, 11, 25), 3) == datetime.date(2027, 2, 1)
    assert first_of_month(datetime.date(2026, 12, 31), 1) == datetime.date(2027, 1, 1)
    assert first_of_month(datetime.date(2027, 1, 5)) == datetime.date(2027, 1, 1)


# --- Row Level Security, through the parent and through a partition named directly -----------------------------


def test_other_organizations_rows_are_invisible_through_parent_and_partition(org_a, org_b):
    row_b = record(org_b)
    partition = partition_holding(org_b, row_b.pk)
    with bind_organization(org_b):
        assert count_in("audit_logs", row_b.pk) == 1
        assert count_in(partition, row_b.pk) == 1  # the app role can read the partition by name at all

    with bind_organization(org_a):
        assert count_in("audit_logs", row_b.pk) == 0
        assert count_in(partition, row_b.pk) == 0
        assert not AuditLog.objects.filter(pk=row_b.pk).exists()


def test_with_nothing_bound_no_audit_row_is_visible(org_a):
    row = record(org_a)
    partition = partition_holding(org_a, row.pk)

    with connection.cursor() as cursor:
        for table in ("audit_logs", partition, "audit_logs_default"):
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table)))
            assert cursor.fetchone()[0] == 0, table


def test_a_partition_refuses_a_row_for_another_organization(org_a, org_b):
    partition = partition_name(utc_today().replace(day=1))
    with bind_organization(org_a), connection.cursor() as cursor:
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {} (organization_id, actor_label, action, object_type, object_id, user_agent, "
                    "changes, created_at) VALUES (%s, '', 'test.forged', '', '', '', '{{}}', now())"
                ).format(sql.Identifier("public", partition)),
                [org_b.pk],
            )


# --- the writer ---------------------------------------------------------------------------------------------------


def test_audit_record_still_returns_a_saved_row_with_increasing_ids(org_a):
    first = record(org_a, "test.first")
    second = record(org_a, "test.second")

    assert isinstance(first.pk, int) and second.pk > first.pk
    with bind_organization(org_a):
        stored = AuditLog.objects.get(pk=second.pk)
    assert (stored.action, stored.organization_id, stored.changes) == ("test.second", org_a.pk, {"n": 1})


def test_audit_failures_are_database_errors_callers_can_catch(org_a):
    # The trigger's SQLSTATE is insufficient_privilege (42501): Django raises ProgrammingError, a DatabaseError.
    row = record(org_a)
    with bind_organization(org_a):
        with pytest.raises(DatabaseError) as raised, transaction.atomic():
            AuditLog.objects.filter(pk=row.pk).delete()
    assert raised.value.__cause__.sqlstate == "42501"




def test_creating_a_month_moves_its_rows_out_of_the_default_partition(org_a, org_b):
    """Rows of a month that had no partition wait in the default partition; creating the month moves them
    (every organization's), so the month can always be created, and the default partition stays append-only."""
    month = first_of_month(utc_today(), 100)
    following = first_of_month(month, 1)
    row_a = insert_row(org_a, datetime.datetime(month.year, month.month, 15, tzinfo=UTC))
    row_b = insert_row(org_b, datetime.datetime.combine(following, datetime.time(), tzinfo=UTC)
                       - datetime.timedelta(seconds=1))  # the month's last second
    stays = insert_row(org_a, datetime.datetime.combine(following, datetime.time(), tzinfo=UTC))
    assert {partition_holding(org_a, row_a), partition_holding(org_b, row_b)} == {"audit_logs_default"}
    with connection.cursor() as cursor:  # the job runs in a transaction of its own; this test's rows are in
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # its transaction, their deferred FK checks still due

    assert ensure_audit_partitions(months_ahead=0, today=month) == [partition_name(month)]

    assert partition_holding(org_a, row_a) == partition_holding(org_b, row_b) == partition_name(month)
    assert partition_holding(org_a, stays) == "audit_logs_default"
    with connection.cursor() as cursor:  # the default partition is append-only and forced again
        cursor.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.audit_logs_default'::regclass")
        assert cursor.fetchone() == (True,)
        cursor.execute("SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'public.audit_logs_default'::regclass "
                       "AND tgname = 'audit_logs_append_only'")
        assert cursor.fetchone() == ("O",)
    with bind_organization(org_a), pytest.raises(DatabaseError, match=APPEND_ONLY), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_logs_default WHERE id = %s", [stays])
