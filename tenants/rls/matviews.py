"""Materialized views behind the second wall: SQL builders that tenant migrations import.

PostgreSQL has no Row Level Security on a materialized view, and only its owner may refresh it. So each
materialized view ``mv_<name>`` in an organization's schema comes with:

* no grant to anyone: EXECUTE/SELECT are revoked from PUBLIC and the app role, and
  tenants.rls.roles.grant_app_privileges revokes them again after its schema-wide grants;
* ``<name>``, a ``security_barrier`` view owned by the owner role that returns only the rows of the bound
  organization (``app.current_organization``). The app role reads the figures through it and only through it;
* a query that reads its own schema's organization from ``public.organizations`` *and* requires it to be the
  bound one, under the base tables' forced RLS: refreshed with nothing bound, or with another organization
  bound, it would be empty, never another clinic's;
* one refresh function per schema and app, ``refresh_<what>()``: SECURITY DEFINER (it runs as the owner,
  which owns the materialized views), fixed to its schema, which refuses unless the bound organization is
  this schema's active one (no argument names an organization, as in messaging's ``message_search``), then
  runs ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` on each (readers are not blocked: each view has a unique
  index) and returns the time the figures are as of.

Migrations import these builders, so changing one changes history: add a new builder instead.
"""

from __future__ import annotations

from django.conf import settings

from tenants.rls.policies import BOUND_ORGANIZATION


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def own_organization_sql(schema: str) -> str:
    """A one-row relation (id, time_zone) of this schema's organization when it is the bound one; else empty."""
    return (
        f"SELECT o.id, o.time_zone FROM public.organizations o "
        f"WHERE o.schema_name = {quote_literal(schema)} AND o.id = {BOUND_ORGANIZATION}"
    )


def _app_role_sql(statement: str) -> str:
    """Run ``statement`` (with %I for the app role) when the app role exists (the test database's first
    migration runs before setup_database has made it)."""
    role = settings.DATABASE_APP_ROLE.replace("'", "''")
    return f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                EXECUTE format({quote_literal(statement)}, '{role}');
            END IF;
        END
        $$
    """


def materialized_view_sql(schema: str, name: str, query: str, unique_columns: list[str]) -> list[str]:
    """``mv_<name>`` (the figures, no grant) + its unique index + ``<name>`` (the security-barrier view)."""
    s = quote_ident(schema)
    matview, view = f"{s}.{quote_ident('mv_' + name)}", f"{s}.{quote_ident(name)}"
    return [
        f"CREATE MATERIALIZED VIEW {matview} AS {query} WITH DATA",
        f"CREATE UNIQUE INDEX {quote_ident('mv_' + name + '_key')} ON {matview} ({', '.join(unique_columns)})",
        f"REVOKE ALL ON {matview} FROM PUBLIC",
        _app_role_sql(f"REVOKE ALL ON {matview} FROM %I"),
        f"CREATE VIEW {view} WITH (security_barrier) AS "
        f"SELECT * FROM {matview} WHERE organization_id = {BOUND_ORGANIZATION}",
        f"REVOKE ALL ON {view} FROM PUBLIC",
        _app_role_sql(f"REVOKE ALL ON {view} FROM %I"),
        _app_role_sql(f"GRANT SELECT ON {view} TO %I"),
    ]


def drop_materialized_view_sql(schema: str, name: str) -> list[str]:
    s = quote_ident(schema)
    return [f"DROP VIEW IF EXISTS {s}.{quote_ident(name)}",
            f"DROP MATERIALIZED VIEW IF EXISTS {s}.{quote_ident('mv_' + name)}"]


def refresh_function_sql(schema: str, function: str, names: list[str]) -> list[str]:
    """``<schema>.<function>()``: refresh ``mv_<name>`` for each name, as the owner, for the bound organization."""
    s = quote_ident(schema)
    refreshes = "\n".join(
        f"    REFRESH MATERIALIZED VIEW CONCURRENTLY {s}.{quote_ident('mv_' + name)};" for name in names
    )
    qualified = f"{s}.{quote_ident(function)}()"
    return [
        f"""
CREATE FUNCTION {qualified} RETURNS timestamp with time zone
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = {s}, pg_temp
AS $function$
DECLARE
    bound_text text := current_setting('app.current_organization', true);
    own_id uuid;
BEGIN
    SELECT o.id INTO own_id FROM public.organizations o
    WHERE o.schema_name = {quote_literal(schema)} AND o.is_active;
    -- Refreshed for another organization, or for none, the figures would come out empty (the base tables'
    -- policies hide every row): refuse rather than wipe them.
    IF own_id IS NULL OR coalesce(bound_text, '') = '' OR bound_text <> own_id::text THEN
        RAISE EXCEPTION '{function}: bind this schema''s organization first' USING ERRCODE = 'insufficient_privilege';
    END IF;
{refreshes}
    RETURN now();
END
$function$
""",
        f"REVOKE ALL ON FUNCTION {qualified} FROM PUBLIC",
        _app_role_sql(f"GRANT EXECUTE ON FUNCTION {qualified} TO %I"),
    ]


def drop_refresh_function_sql(schema: str, function: str) -> list[str]:
    return [f"DROP FUNCTION IF EXISTS {quote_ident(schema)}.{quote_ident(function)}()"]


def run_in_schema(builder):
    """A RunPython function that executes ``builder(schema)``'s statements in the schema being migrated."""
    def apply(apps, schema_editor):
        for statement in builder(schema_editor.connection.schema_name):
            schema_editor.execute(statement, params=None)

    return apply
