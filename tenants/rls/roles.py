"""The two database roles and the grants that make Row Level Security bite.

* the owner role owns the database, every schema and every table; migrations and schema provisioning run
  as it. FORCE ROW LEVEL SECURITY binds it too.
* the app role is what the web app and the sync workers connect as: LOGIN only — not superuser, not
  BYPASSRLS, not an owner — so it can neither skip nor switch off the policies.
* the platform role is what platform_access() connects as (the admin, the scheduler's fan-out). The public
  tables' policies admit it by name to every organization's rows; it has no grant on any tenant schema, so
  patient data stays out of its reach whatever it sets. The app role is not a member of it.

Grants come from the owner's *default privileges*, so schemas and tables created later (a new
organization) are usable by the app role with nothing granted per organization. Default privileges are
stored per database: run grant_app_privileges in every database, the test database included.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class RoleSpec:
    name: str
    password: str | None


def role_from_url(url: str) -> RoleSpec:
    parts = urlsplit(url)
    if not parts.username:
        raise ValueError(f"No user in database URL {parts.scheme}://…{parts.path}")
    return RoleSpec(unquote(parts.username), unquote(parts.password) if parts.password else None)


def database_name_from_url(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def ensure_role(cursor: psycopg.Cursor, role: RoleSpec, attributes: str) -> None:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role.name])
    verb = "ALTER" if cursor.fetchone() else "CREATE"
    statement = sql.SQL("{} ROLE {} WITH " + attributes).format(sql.SQL(verb), sql.Identifier(role.name))
    if role.password:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(role.password))
    cursor.execute(statement)


LOGIN_ONLY = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"


def ensure_roles_and_database(
    admin_url: str,
    owner: RoleSpec,
    app: RoleSpec,
    database: str,
    *,
    platform: RoleSpec,
    allow_test_databases: bool,
) -> None:
    """Create or update the three roles and the database (needs a superuser or CREATEROLE connection)."""
    owner_attributes = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE " + (
        "CREATEDB" if allow_test_databases else "NOCREATEDB"
    )
    with psycopg.connect(admin_url, autocommit=True) as connection, connection.cursor() as cursor:
        ensure_role(cursor, owner, owner_attributes)
        ensure_role(cursor, app, LOGIN_ONLY)
        ensure_role(cursor, platform, LOGIN_ONLY)
        if allow_test_databases:
            # The test suite connects as the owner (to create the test database) and then runs as the
            # app role, or the platform role inside platform_access(), with SET ROLE, which needs membership.
            for role in (app, platform):
                cursor.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(role.name), sql.Identifier(owner.name))
                )
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
        if not cursor.fetchone():
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(owner.name))
            )
        for role in (app, platform):
            cursor.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(database), sql.Identifier(role.name)
                )
            )


def grant_app_privileges(cursor, owner_name: str, app_name: str) -> None:
    """Run as the owner inside the target database. Idempotent."""
    owner, app = sql.Identifier(owner_name), sql.Identifier(app_name)
    statements = [
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT USAGE ON SCHEMAS TO {app}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT USAGE, SELECT ON SEQUENCES TO {app}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT EXECUTE ON FUNCTIONS TO {app}",
    ]
    for statement in statements:
        cursor.execute(sql.SQL(statement).format(owner=owner, app=app))
    # Objects that already exist (public tables migrated before the default privileges, older schemas).
    cursor.execute(
        "SELECT nspname FROM pg_namespace WHERE pg_get_userbyid(nspowner) = %s OR nspname = 'public'",
        [owner_name],
    )
    for (schema_name,) in cursor.fetchall():
        schema = sql.Identifier(schema_name)
        for statement in (
            "GRANT USAGE ON SCHEMA {schema} TO {app}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {app}",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {app}",
        ):
            cursor.execute(sql.SQL(statement).format(schema=schema, app=app))
    # "ALL TABLES" includes materialized views, which have no Row Level Security: the app role reads them
    # only through their security-barrier views (tenants/rls/matviews.py), so take the grant back.
    cursor.execute(
        "SELECT schemaname, matviewname FROM pg_matviews WHERE matviewowner = %s", [owner_name]
    )
    for schema_name, matview in cursor.fetchall():
        cursor.execute(
            sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(schema_name, matview), app)
        )


def grant_platform_privileges(cursor, owner_name: str, platform_name: str) -> None:
    """Run as the owner inside the target database. Idempotent.

    The public schema only: tables there now and those migrations add later. No tenant schema, no function.
    """
    owner, platform = sql.Identifier(owner_name), sql.Identifier(platform_name)
    for statement in (
        "GRANT USAGE ON SCHEMA public TO {platform}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {platform}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {platform}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {platform}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {platform}",
    ):
        cursor.execute(sql.SQL(statement).format(owner=owner, platform=platform))
