"""The one cross-organization door: the platform role, admitted by the public tables' policies by name.

The app role can set whatever it likes (an SQL injection could): no setting opens another organization's
rows. The platform role reads every organization's public rows and no tenant table at all. These tests run
the platform role the way the suite does (SET ROLE on the test's connection, see conftest.py); the last one
runs it as production does, a connection of its own logged in as the platform role.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import ProgrammingError, connection, transaction
from psycopg import sql

from routiq.testing.rows import PUBLIC_TABLES, TENANT_TABLES
from tenants.models import SyncLog
from tenants.rls.binding import bind_organization, in_platform_access, platform_access, write_alias

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def save_row(table: str, organization) -> None:
    builders = {**TENANT_TABLES, **PUBLIC_TABLES}
    with bind_organization(organization):
        builders[table](organization).save()


def count_rows(table: str, organization) -> int:
    schema = "public" if table in PUBLIC_TABLES else organization.schema_name
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE organization_id = %s").format(sql.Identifier(schema, table)),
            [organization.pk],
        )
        return cursor.fetchone()[0]


def current_user() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        return cursor.fetchone()[0]


@pytest.mark.parametrize("table", PUBLIC_TABLES)
def test_platform_access_reads_every_organizations_public_rows(table, org_a, org_b):
    for organization in (org_a, org_b):
        save_row(table, organization)

    with platform_access("test"):
        assert current_user() == settings.DATABASE_PLATFORM_ROLE
        assert count_rows(table, org_a) >= 1 and count_rows(table, org_b) >= 1
    assert current_user() == settings.DATABASE_APP_ROLE
    assert count_rows(table, org_b) == 0


@pytest.mark.parametrize("table", PUBLIC_TABLES)
def test_the_app_role_cannot_open_the_door_with_a_setting(table, org_a, org_b):
    save_row(table, org_b)

    with connection.cursor() as cursor:
        # What the old policies trusted, and what any SQL injection can send.
        cursor.execute("SELECT set_config('app.platform_access', 'on', false)")
    assert count_rows(table, org_b) == 0
    with bind_organization(org_a):
        assert count_rows(table, org_b) == 0


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_the_platform_role_cannot_reach_a_tenant_table_even_with_an_organization_set(table, org_a):
    save_row(table, org_a)

    with platform_access("test"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('app.current_organization', %s, false)", [str(org_a.pk)])
        with pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
            count_rows(table, org_a)


def test_the_app_role_cannot_become_the_platform_role(db):
    # The suite's login role may SET ROLE (conftest); the app role's own login could not: it is no member.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_has_role(%s, %s, 'MEMBER')", [settings.DATABASE_APP_ROLE, settings.DATABASE_PLATFORM_ROLE]
        )
        assert cursor.fetchone()[0] is False


def test_binding_an_organization_inside_platform_access_is_organization_work_again(org_a, org_b):
    save_row("sync_logs", org_b)
    with platform_access("test"):
        assert in_platform_access() and write_alias() == "platform"
        with bind_organization(org_a):
            assert not in_platform_access() and write_alias() == "default"
            assert current_user() == settings.DATABASE_APP_ROLE
            assert SyncLog.objects.filter(organization=org_b).count() == 0
        assert SyncLog.objects.filter(organization=org_b).count() >= 1


def test_new_audit_log_partitions_carry_the_platform_policy(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.create_audit_log_partition('2031-07-01')")
        (partition,) = cursor.fetchone()
        cursor.execute(
            "SELECT policyname, roles FROM pg_policies WHERE schemaname = 'public' AND tablename = %s "
            "ORDER BY policyname",
            [partition],
        )
        policies = cursor.fetchall()
    assert [name for name, _ in policies] == ["organization_isolation", "platform_access"]
    assert list(policies[1][1]) == [settings.DATABASE_PLATFORM_ROLE]


PRODUCTION_SHAPED_SCRIPT = textwrap.dedent(
    """
    import django, os, sys
    django.setup()
    from django.db import connection, connections, transaction
    from tenants.models import Organization, SyncLog
    from tenants.rls.binding import platform_access, write_alias

    organizations = list(Organization.objects.filter(clerk_org_id__in=["org_test_harbour", "org_test_summit"]))
    assert len(organizations) == 2, organizations
    with platform_access("test: production-shaped"):
        with transaction.atomic(using=write_alias()):
            for organization in organizations:
                SyncLog.objects.create(organization=organization, provider="cliniko", resource="platform-probe")
        seen = SyncLog.objects.filter(resource="platform-probe").count()
        with connections["platform"].cursor() as cursor:
            cursor.execute("SELECT current_user")
            print("platform user", cursor.fetchone()[0])
            try:
                cursor.execute(f'SELECT count(*) FROM "{organizations[0].schema_name}".contacts')
            except Exception as exc:
                print("tenant table", type(exc).__name__)
        with transaction.atomic(using=write_alias()):
            SyncLog.objects.filter(resource="platform-probe").delete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        print("app user", cursor.fetchone()[0])
        cursor.execute("SELECT set_config('app.platform_access', 'on', false)")
        cursor.execute("SELECT count(*) FROM organization_members")
        print("app sees members", cursor.fetchone()[0])
    print("platform saw", seen)
    """
)


def with_database(url: str, database: str) -> str:
    """The same server and role, another database (the query may carry a socket folder: keep it)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def test_production_shaped_platform_connection(org_a, org_b):
    """Separate logins, as in production: the web app's own connection, and the platform connection."""
    platform_url = os.environ.get("ROUTIQ_TEST_PLATFORM_URL")
    app_url = os.environ.get("ROUTIQ_TEST_APP_URL")
    assert platform_url and app_url, "scripts/dev.py test sets ROUTIQ_TEST_PLATFORM_URL and ROUTIQ_TEST_APP_URL"
    test_database = connection.settings_dict["NAME"]
    env = {
        **os.environ,
        "DATABASE_URL": with_database(app_url, test_database),
        "DATABASE_PLATFORM_URL": with_database(platform_url, test_database),
        "DJANGO_SETTINGS_MODULE": "routiq.settings",
    }
    env.pop("TEST_DATABASE_NAME", None)
    result = subprocess.run(
        [sys.executable, "-c", PRODUCTION_SHAPED_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert f"platform user {settings.DATABASE_PLATFORM_ROLE}" in lines
    assert "tenant table ProgrammingError" in lines
    assert f"app user {settings.DATABASE_APP_ROLE}" in lines
    assert "app sees members 0" in lines
    assert "platform saw 2" in lines
