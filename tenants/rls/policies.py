"""SQL for the Row Level Security policies that migrations install.

Migrations import these builders, so changing one changes history: add a new builder instead.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import migrations

BOUND_ORGANIZATION = "NULLIF(current_setting('app.current_organization', true), '')::uuid"
# NULLIF matters: once touched, the setting reads back as '' and a bare ::uuid cast fails.
TENANT_CONDITION = f"organization_id = {BOUND_ORGANIZATION}"
# History only (tenants 0002, 0005, 0006): a door the app role could open with set_config. Migration 0008
# replaced it with a policy that admits the platform role by name (platform_policy_sql).
PLATFORM_CONDITION = f"({TENANT_CONDITION} OR current_setting('app.platform_access', true) = 'on')"


def enable_rls(table: str, *, platform_readable: bool = False) -> migrations.RunSQL:
    """ENABLE + FORCE RLS on ``table`` with the organization policy (FORCE binds the owner role too).

    ``platform_readable`` adds the platform-access door (binding.platform_access) and is meant for public
    tables only; tenant tables never get it. Table names stay unqualified so a tenant migration applies
    to the schema it runs in.
    """
    condition = PLATFORM_CONDITION if platform_readable else TENANT_CONDITION
    return migrations.RunSQL(
        sql=[*forced_policy_sql(table, condition)],
        reverse_sql=[
            f"DROP POLICY IF EXISTS organization_isolation ON {table}",
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ],
    )


def forced_policy_sql(table: str, condition: str) -> list[str]:
    """ENABLE + FORCE RLS on ``table`` and the ``organization_isolation`` policy with ``condition``: the
    statements of enable_rls, for migrations that write their own SQL (a table rebuilt as partitioned)."""
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY organization_isolation ON {table} USING {wrap(condition)} WITH CHECK {wrap(condition)}",
    ]


def continue_sequence_sql(new_sequence: str, old_sequence: str, table: str) -> str:
    """Set ``new_sequence`` so its next value follows both ``old_sequence`` and the ids already in ``table``
    (a table rebuilt as partitioned keeps its ids increasing)."""
    return f"""
    DO $$
    DECLARE
        last bigint;
        called boolean;
        top bigint;
    BEGIN
        SELECT last_value, is_called INTO last, called FROM {old_sequence};
        SELECT max(id) INTO top FROM {table};
        IF top IS NOT NULL AND (top > last OR (top = last AND NOT called)) THEN
            last := top;
            called := true;
        END IF;
        PERFORM setval('{new_sequence}', last, called);
    END
    $$
    """


def wrap(condition: str) -> str:
    return condition if condition.startswith("(") else f"({condition})"


PLATFORM_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def platform_role() -> str:
    """The platform role's name, checked so it can be written into policy SQL."""
    role = settings.DATABASE_PLATFORM_ROLE
    if not PLATFORM_ROLE_NAME.match(role):
        raise ImproperlyConfigured(f"DATABASE_PLATFORM_ROLE {role!r} must be a plain lower-case identifier.")
    return role


def platform_policy_sql(table: str) -> list[str]:
    """The organization policy without any door, plus a policy that admits the platform role by name.

    Replaces PLATFORM_CONDITION's door (a setting the app role could change itself). Policies are permissive
    and OR-ed: the platform role sees every row, any other role only its bound organization's.
    """
    condition = wrap(TENANT_CONDITION)
    return [
        f"DROP POLICY IF EXISTS organization_isolation ON {table}",
        f"DROP POLICY IF EXISTS platform_access ON {table}",
        f"CREATE POLICY organization_isolation ON {table} USING {condition} WITH CHECK {condition}",
        f'CREATE POLICY platform_access ON {table} TO "{platform_role()}" USING (true) WITH CHECK (true)',
    ]


def forced_public_table_sql(table: str) -> list[str]:
    """ENABLE + FORCE RLS on a new public table with the two policies of platform_policy_sql."""
    return [f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY", f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            *platform_policy_sql(table)]


def for_role_sql(role: str, statement: str) -> str:
    """A DO block that runs ``statement`` — a GRANT or REVOKE naming the role as ``%I`` — only where the role
    exists: a database migrated before the roles were set up (the test database's first migration) has none."""
    name = role.replace("'", "''")
    return f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
                EXECUTE format('{statement.replace("'", "''")}', '{name}');
            END IF;
        END
        $$
        """
