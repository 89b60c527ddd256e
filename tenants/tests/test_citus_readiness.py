"""What keeps the move to Citus schema-based sharding a configuration change (docs/scaling.md), checked on the
real schemas: every foreign key of a tenant table stays in its own schema or points at a public table (which
becomes a reference table), no public table points into a tenant schema, tenant sequences are bigint (smaller
ones can collide across Citus nodes), and a request touches no schema but its own organization's and public."""

from __future__ import annotations

import re

import pytest
from django.db import connection

from routiq.testing.clerk_fixtures import bearer

pytestmark = pytest.mark.django_db
ORGANIZATION_SCHEMA = re.compile(r"org_[0-9a-f]{32}")


def foreign_keys() -> list[tuple[str, str, str, str, str]]:
    """(schema, table, constraint, referenced schema, referenced table) of every foreign key in the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n.nspname, c.relname, con.conname, rn.nspname, r.relname
            FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_class r ON r.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
            WHERE con.contype = 'f'
            """
        )
        return cursor.fetchall()


def test_tenant_foreign_keys_stay_in_their_schema_or_point_at_public(org_a, org_b):
    keys = foreign_keys()
    tenant_keys = [key for key in keys if ORGANIZATION_SCHEMA.fullmatch(key[0])]
    assert {key[0] for key in tenant_keys} >= {org_a.schema_name, org_b.schema_name}  # the check saw both
    assert [key for key in tenant_keys if key[3] not in (key[0], "public")] == []
    assert [key for key in keys if key[0] == "public" and ORGANIZATION_SCHEMA.fullmatch(key[3])] == []


def test_tenant_sequences_are_bigint(org_a):
    with connection.cursor() as cursor:
        cursor.execute("SELECT sequencename, data_type FROM pg_sequences WHERE schemaname = %s", [org_a.schema_name])
        sequences = cursor.fetchall()
    assert sequences, "the tenant schema has sequences to check"
    # django_content_type (contenttypes is a tenant app of django-tenants) holds the same few rows in every
    # schema and is never compared across them.
    assert [name for name, data_type in sequences
            if data_type != "bigint" and name != "django_content_type_id_seq"] == []


def test_a_request_touches_only_its_own_organizations_schema(client, mint, org_a, org_b):
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        # With its parameters: the binding sends the search_path as one (tenants/rls/pgbackend).
        statements.append(f"{sql if isinstance(sql, str) else str(sql)} {params!r}")
        return execute(sql, params, many, context)

    token = bearer(mint(org_a, role="admin"))
    with connection.execute_wrapper(record):
        for path in ("/", "/patients/", "/patients/?q=ava", "/patients/export.csv", "/conversations/",
                     "/conversations/matches/", "/settings/integrations/", "/billing/"):
            response = client.get(path, **token)
            assert response.status_code in (200, 302), path
            if response.streaming:
                b"".join(response.streaming_content)
    assert statements, "the wrapper saw the requests' queries"
    named = {schema for sql in statements for schema in ORGANIZATION_SCHEMA.findall(sql)}
    assert named == {org_a.schema_name}  # its search_path is set through the same cursors
    assert org_b.schema_name not in "".join(statements)
