"""Creating an organization provisions a schema that is usable at once, as the app role."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from patients.models import Contact
from routiq.testing.rows import TENANT_TABLES, TRIGGER_MAINTAINED_TABLES
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization

pytestmark = [pytest.mark.django_db, pytest.mark.owner_role]


def test_create_organization_command_provisions_a_usable_schema(capsys):
    call_command("create_organization", name="Coastal Podiatry", clerk_org_id="org_test_coastal")

    organization = Organization.objects.get(clerk_org_id="org_test_coastal")
    assert organization.schema_name == f"org_{organization.pk.hex}"
    assert "Created Coastal Podiatry" in capsys.readouterr().out

    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')
    with bind_organization(organization):
        Contact.objects.create(organization=organization, first_name="Ada", last_name="Lovelace")
        assert list(Contact.objects.values_list("first_name", flat=True)) == ["Ada"]
        assert AuditLog.objects.filter(action="organization.created", organization=organization).count() == 1


def test_new_schema_has_forced_rls_on_every_tenant_table():
    call_command("create_organization", name="Bayside Dental", clerk_org_id="org_test_bayside")
    organization = Organization.objects.get(clerk_org_id="org_test_bayside")

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
            """,
            [organization.schema_name],
        )
        tables = dict(cursor.fetchall())
    # Every table with an organization_id in the new schema (partitions included) is forced, and every tenant
    # table the isolation tests know is among them.
    assert {name for name, forced in tables.items() if not forced} == set()
    assert set(TENANT_TABLES) | set(TRIGGER_MAINTAINED_TABLES) <= set(tables)
    assert any(name.startswith("messages_y") for name in tables)


def test_duplicate_clerk_id_is_refused_without_side_effects(org_a):
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_organization", name="Again", clerk_org_id=org_a.clerk_org_id)
    assert Organization.objects.filter(clerk_org_id=org_a.clerk_org_id).count() == 1


def test_provisioning_waits_for_another_worker_provisioning_the_same_organization():
    """A second worker on the same organization's job waits on the per-organization lock (here: times out)."""
    import psycopg
    from django.db import OperationalError, transaction

    from tenants.jobs import provision_organization

    params = connection.get_connection_params()
    other_worker = psycopg.connect(**{k: v for k, v in params.items() if k not in ("cursor_factory", "context")},
                                   autocommit=True)
    try:
        other_worker.execute("SELECT pg_advisory_lock(hashtext('tenants.provision'), hashtext('org_test_locked'))")
        with pytest.raises(OperationalError, match="lock timeout"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
            provision_organization("org_test_locked", "Locked Clinic")
        # Another organization is not held up by it.
        assert provision_organization("org_test_unlocked", "Free Clinic")
    finally:
        other_worker.close()
    assert not Organization.objects.filter(clerk_org_id="org_test_locked").exists()


@pytest.mark.parametrize(("url", "host", "port"), [
    ("postgresql://owner@/routiq?host=/srv/devdata/pg", "/srv/devdata/pg", ""),  # make run's embedded server
    ("postgresql://owner@db.internal:6432/routiq", "db.internal", "6432"),
])
def test_pg_dump_is_pointed_at_the_connections_own_server(url, host, port):
    import dj_database_url

    from tenants.provisioning import libpq_conninfo

    conninfo = libpq_conninfo(dict(dj_database_url.parse(url)))

    assert (conninfo["host"], conninfo["port"], conninfo["dbname"]) == (host, port, "routiq")
