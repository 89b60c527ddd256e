"""SQL for the Row Level Security policies that migrations install.

Migrations import these builders, so changing one changes history: add a new builder instead.
"""

from __future__ import annotations

from django.db import migrations

BOUND_ORGANIZATION = "NULLIF(current_setting('app.current_organization', true), '')::uuid"
# NULLIF matters: once touched, the setting reads back as '' and a bare ::uuid cast fails (stack-notes P3).
TENANT_CONDITION = f"organization_id = {BOUND_ORGANIZATION}"
PLATFORM_CONDITION = f"({TENANT_CONDITION} OR current_setting('app.platform_access', true) = 'on')"


def enable_rls(table: str, *, platform_readable: bool = False) -> migrations.RunSQL:
    """ENABLE + FORCE RLS on ``table`` with the organization policy (FORCE binds the owner role too).

    ``platform_readable`` adds the platform-access door (binding.platform_access) and is meant for public
    tables only; tenant tables never get it. Table names stay unqualified so a tenant migration applies
    to the schema it runs in.
    """
    condition = PLATFORM_CONDITION if platform_readable else TENANT_CONDITION
    return migrations.RunSQL(
        sql=[
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY organization_isolation ON {table} USING {wrap(condition)} WITH CHECK {wrap(condition)}",
        ],
        reverse_sql=[
            f"DROP POLICY IF EXISTS organization_isolation ON {table}",
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ],
    )


def wrap(condition: str) -> str:
    return condition if condition.startswith("(") else f"({condition})"
