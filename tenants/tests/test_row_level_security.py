"""Wall 2: Row Level Security, exercised as the app role on every table that carries organization_id."""

from __future__ import annotations

import pytest
from django.db import ProgrammingError, connection, transaction
from psycopg import sql

from routiq.testing.rows import PUBLIC_TABLES, SECURITY_BARRIER_VIEWS, TENANT_TABLES, TRIGGER_MAINTAINED_TABLES
from tenants.rls.binding import bind_organization

ALL_TABLES = {**TENANT_TABLES, **PUBLIC_TABLES}

pytestmark = pytest.mark.django_db


def qualified(table: str, organization) -> sql.Composable:
    schema = "public" if table in PUBLIC_TABLES else organization.schema_name
    return sql.Identifier(schema, table)


def count_rows(table: str, organization) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE organization_id = %s").format(qualified(table, organization)),
            [organization.pk],
        )
        return cursor.fetchone()[0]


def save_row(table: str, organization) -> None:
    with bind_organization(organization):
        ALL_TABLES[table](organization).save()


def test_tests_run_as_the_app_role_that_cannot_bypass_rls(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == ("routiq_app", False, False)


def test_every_table_with_organization_id_has_forced_rls(org_a):
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', %s)
            """,
            [org_a.schema_name],
        )
        tables = {name: (enabled, forced) for name, enabled, forced in cursor.fetchall()}
        # audit_logs (tenants/migrations/0006) and each organization's messages (messaging/migrations/0007) are
        # partitioned by month. A query naming a partition is checked against the partition's own policies,
        # not the parent's, so every partition must carry forced RLS and the parent's policies.
        partitions, policies = {}, {}
        for schema, parent in (("public", "audit_logs"), (org_a.schema_name, "messages")):
            cursor.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass",
                [f'"{schema}".{parent}'],
            )
            partitions[parent] = [name for (name,) in cursor.fetchall()]
            for table in [parent, *partitions[parent]]:
                cursor.execute(
                    "SELECT policyname, permissive, roles, cmd, qual, with_check FROM pg_policies "
                    "WHERE schemaname = %s AND tablename = %s ORDER BY policyname",
                    [schema, table],
                )
                policies[table] = cursor.fetchall()
    assert "audit_logs_default" in partitions["audit_logs"]
    assert "messages_default" in partitions["messages"]
    assert len(partitions["messages"]) >= 5  # the default, this month and the next three
    assert tables == {
        table: (True, True)
        for table in [*ALL_TABLES, *TRIGGER_MAINTAINED_TABLES, *partitions["audit_logs"], *partitions["messages"]]
    }
    for parent, children in partitions.items():
        assert policies[parent]
        for partition in children:
            assert policies[partition] == policies[parent], partition
    # Tenant tables never get the platform door, partitions included.
    assert [policy[0] for policy in policies["messages"]] == ["organization_isolation"]


@pytest.mark.parametrize("table", ALL_TABLES)
def test_bound_organization_reads_only_its_own_rows(table, org_a, org_b):
    with bind_organization(org_b):
        existing_b = count_rows(table, org_b)
    save_row(table, org_b)

    with bind_organization(org_b):
        assert count_rows(table, org_b) == existing_b + 1
    with bind_organization(org_a):
        assert count_rows(table, org_b) == 0


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_search_path_pointed_at_another_schema_still_returns_nothing(table, org_a, org_b):
    save_row(table, org_b)

    with bind_organization(org_a):
        connection.set_tenant(org_b)  # the bug RLS exists for: the wrong schema with A's identity
        with connection.cursor() as cursor:
            cursor.execute("SHOW search_path")
            assert org_b.schema_name in cursor.fetchone()[0]
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            assert cursor.fetchone()[0] == 0


@pytest.mark.parametrize("table", ALL_TABLES)
def test_insert_with_another_organizations_id_fails(table, org_a, org_b):
    with bind_organization(org_b):
        row = ALL_TABLES[table](org_b)
    with bind_organization(org_a):
        if table in TENANT_TABLES:
            connection.set_tenant(org_b)
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            row.save()


@pytest.mark.parametrize("table", ALL_TABLES)
def test_update_and_delete_of_another_organizations_rows_touch_nothing(table, org_a, org_b):
    save_row(table, org_b)
    with bind_organization(org_b):
        existing_b = count_rows(table, org_b)
    assert existing_b >= 1

    with bind_organization(org_a), connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("UPDATE {} SET updated_at = updated_at WHERE organization_id = %s").format(
                qualified(table, org_b)
            )
            if table not in ("audit_logs", "sync_logs")
            else sql.SQL("UPDATE {} SET organization_id = organization_id WHERE organization_id = %s").format(
                qualified(table, org_b)
            ),
            [org_b.pk],
        )
        assert cursor.rowcount == 0
        cursor.execute(
            sql.SQL("DELETE FROM {} WHERE organization_id = %s").format(qualified(table, org_b)), [org_b.pk]
        )
        assert cursor.rowcount == 0
    with bind_organization(org_b):
        assert count_rows(table, org_b) == existing_b


@pytest.mark.parametrize("table", ALL_TABLES)
def test_with_no_organization_bound_tables_look_empty(table, org_a):
    save_row(table, org_a)

    assert count_rows(table, org_a) == 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.current_organization', true)")
        assert cursor.fetchone()[0] in ("", None)


def test_binding_does_not_outlive_its_block_on_a_reused_connection(org_a):
    save_row("contacts", org_a)  # contacts: no rows exist outside this test
    with bind_organization(org_a):
        assert count_rows("contacts", org_a) == 1

    # Same connection, nothing bound now: the backend re-sent an empty organization with the next cursor.
    assert count_rows("contacts", org_a) == 0
    assert connection.schema_name == "public"


def test_failed_savepoint_inside_a_binding_keeps_the_connection_usable(org_a):
    with bind_organization(org_a), transaction.atomic():
        with pytest.raises(ProgrammingError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table")
        save_row("contacts", org_a)
        assert count_rows("contacts", org_a) == 1


def test_app_role_cannot_switch_rls_off(org_a):
    with pytest.raises(ProgrammingError, match="must be owner"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(qualified("contacts", org_a))
            )


def test_inactive_organization_cannot_be_bound(org_a):
    from tenants.rls.binding import NoOrganizationBound

    org_a.is_active = False
    with pytest.raises(NoOrganizationBound):
        with bind_organization(org_a):
            pass


def test_search_terms_follow_contacts_and_stay_isolated(org_a, org_b):
    with bind_organization(org_b):
        ALL_TABLES["contacts"](org_b).save()
        assert count_rows("contact_search_terms", org_b) >= 2
    with bind_organization(org_a):
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(org_b.schema_name, "contact_search_terms"))
            )
            assert cursor.fetchone()[0] == 0


def test_deleting_a_contact_outright_removes_its_search_terms(org_a):
    from patients.models import Contact

    with bind_organization(org_a):
        contact = ALL_TABLES["contacts"](org_a)
        contact.save()
        assert count_rows("contact_search_terms", org_a) >= 2
        Contact.objects.filter(pk=contact.pk).delete()
        assert count_rows("contact_search_terms", org_a) == 0


# --- materialized views: no RLS in PostgreSQL, so no grant; read through security-barrier views ----------------

def test_every_materialized_view_is_behind_a_registered_security_barrier_view(org_a):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT schemaname, matviewname FROM pg_matviews WHERE schemaname IN ('public', %s)", [org_a.schema_name]
        )
        matviews = cursor.fetchall()
        # Every view that reads a materialized view, found through the rewrite rules' dependencies.
        cursor.execute(
            """
            SELECT DISTINCT v.relname, m.relname, v.reloptions
            FROM pg_rewrite r
            JOIN pg_class v ON v.oid = r.ev_class AND v.relkind = 'v'
            JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass
            JOIN pg_class m ON m.oid = d.refobjid AND m.relkind = 'm'
            WHERE v.relnamespace = %s::regnamespace
            """,
            [org_a.schema_name],
        )
        views = {view: (matview, options) for view, matview, options in cursor.fetchall()}
        definitions = {}
        for view in views:
            cursor.execute("SELECT pg_get_viewdef(%s::regclass)", [f'"{org_a.schema_name}".{view}'])
            definitions[view] = " ".join(cursor.fetchone()[0].split()).replace(f"{org_a.schema_name}.", "")
    assert sorted(matviews) == sorted((org_a.schema_name, mv) for mv, _ in SECURITY_BARRIER_VIEWS.values())
    assert {view: matview for view, (matview, _) in views.items()} == {
        view: matview for view, (matview, _) in SECURITY_BARRIER_VIEWS.items()
    }
    for view, (matview, options) in views.items():
        assert "security_barrier=true" in (options or []), view
        assert definitions[view].endswith(
            f"FROM {matview} WHERE ({matview}.organization_id = "
            "(NULLIF(current_setting('app.current_organization'::text, true), ''::text))::uuid);"
        ), view


@pytest.mark.parametrize("view", SECURITY_BARRIER_VIEWS)
def test_app_role_cannot_read_a_materialized_view_directly(view, org_a):
    matview = SECURITY_BARRIER_VIEWS[view][0]
    with bind_organization(org_a), connection.cursor() as cursor:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
            cursor.execute("SELECT has_table_privilege(%s::regclass, %s)", [f'"{org_a.schema_name}".{matview}',
                                                                            privilege])
            assert cursor.fetchone() == (False,), privilege
        cursor.execute("SELECT has_table_privilege(%s::regclass, 'SELECT')", [f'"{org_a.schema_name}".{view}'])
        assert cursor.fetchone() == (True,)
        with pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
            cursor.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(org_a.schema_name, matview)))
        with pytest.raises(ProgrammingError, match="must be owner"), transaction.atomic():
            cursor.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(org_a.schema_name, matview)))


def refresh_figures(organization) -> None:
    from patients.dashboard import dashboard_refresh

    save_row("appointments", organization)
    save_row("messages", organization)
    with bind_organization(organization):
        dashboard_refresh(organization=organization)


def view_count(view: str, schema: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, view)))
        return cursor.fetchone()[0]


@pytest.mark.parametrize("view", SECURITY_BARRIER_VIEWS)
def test_another_organizations_figures_are_invisible_through_every_view(view, org_a, org_b):
    refresh_figures(org_b)

    with bind_organization(org_b):
        assert view_count(view, org_b.schema_name) >= 1
    with bind_organization(org_a):
        assert view_count(view, org_b.schema_name) == 0  # B's schema, A's identity
        connection.set_tenant(org_b)  # the wrong search_path with A's identity
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(view)))
            assert cursor.fetchone()[0] == 0
    assert view_count(view, org_b.schema_name) == 0  # nothing bound


@pytest.mark.parametrize("function", sorted({function for _, function in SECURITY_BARRIER_VIEWS.values()}))
def test_a_refresh_function_refuses_any_organization_but_its_own(function, org_a, org_b):
    refresh_figures(org_b)
    with bind_organization(org_b):
        before = {view: view_count(view, org_b.schema_name) for view in SECURITY_BARRIER_VIEWS}
    call = sql.SQL("SELECT {}()").format(sql.Identifier(org_b.schema_name, function))

    with bind_organization(org_a), connection.cursor() as cursor:
        with pytest.raises(ProgrammingError, match="bind this schema's organization first"), transaction.atomic():
            cursor.execute(call)
    with connection.cursor() as cursor:  # nothing bound: refreshing would empty the figures
        with pytest.raises(ProgrammingError, match="bind this schema's organization first"), transaction.atomic():
            cursor.execute(call)
    with bind_organization(org_b):
        assert {view: view_count(view, org_b.schema_name) for view in SECURITY_BARRIER_VIEWS} == before
