"""Cross-organization access by database role, not by a setting the app role can change.

Until now the public tables' policies also admitted rows when ``app.platform_access = 'on'``, a setting any
session may set: one SQL injection in the web app would have read every clinic's members, credentials and
logs. From here the organization policy has no door, and a second policy admits the platform role
(DATABASE_PLATFORM_ROLE, created by ``manage.py setup_database``) by name. The same change is made on every
audit_logs partition and in ``create_audit_log_partition``, so months created later carry it too.
"""

import importlib

from django.db import migrations

from tenants.rls.policies import PLATFORM_CONDITION, TENANT_CONDITION, platform_policy_sql, platform_role, wrap

PUBLIC_TABLES = ["organization_members", "api_credentials", "sync_logs", "audit_logs", "sync_checkpoints"]
PARTITION_FUNCTION_SQL = importlib.import_module(
    "tenants.migrations.0006_audit_logs_append_only_partitioned"
).FUNCTION_SQL
PLATFORM_POLICY_BLOCK = f"""
    IF NOT EXISTS (
        SELECT 1 FROM pg_policy WHERE polrelid = partition_oid AND polname = 'platform_access'
    ) THEN
        EXECUTE format(
            'CREATE POLICY platform_access ON public.%I TO "{platform_role()}" USING (true) WITH CHECK (true)',
            partition_name
        );
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger WHERE tgrelid = partition_oid AND tgname = 'audit_logs_no_truncate'"""
TRIGGER_BLOCK_START = """
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger WHERE tgrelid = partition_oid AND tgname = 'audit_logs_no_truncate'"""


def partition_function_sql(*, condition: str, with_platform_policy: bool) -> str:
    assert TRIGGER_BLOCK_START in PARTITION_FUNCTION_SQL and wrap(PLATFORM_CONDITION) in PARTITION_FUNCTION_SQL
    text = PARTITION_FUNCTION_SQL.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    text = text.replace(wrap(PLATFORM_CONDITION), condition)
    return text.replace(TRIGGER_BLOCK_START, PLATFORM_POLICY_BLOCK, 1) if with_platform_policy else text


def existing_partitions_sql(policies: str) -> str:
    return f"""
    DO $$
    DECLARE partition_name text;
    BEGIN
        FOR partition_name IN
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'public.audit_logs'::regclass
        LOOP
            {policies}
        END LOOP;
    END
    $$
    """


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def policy_statements_for(table_expression: str, statements: list[str]) -> str:
    return " ".join(f"EXECUTE format({sql_literal(statement)}, {table_expression});" for statement in statements)


def on_each_partition(statements: list[str]) -> str:
    return existing_partitions_sql(
        policy_statements_for("partition_name", [s.replace("ON __t__", "ON public.%I") for s in statements])
    )


FORWARD_PARTITIONS = on_each_partition(platform_policy_sql("__t__"))
OLD_CONDITION = wrap(PLATFORM_CONDITION)
REVERSE_STATEMENTS = [
    "DROP POLICY IF EXISTS platform_access ON __t__",
    "DROP POLICY IF EXISTS organization_isolation ON __t__",
    f"CREATE POLICY organization_isolation ON __t__ USING {OLD_CONDITION} WITH CHECK {OLD_CONDITION}",
]
REVERSE_PARTITIONS = on_each_partition(REVERSE_STATEMENTS)


def require_platform_role(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [platform_role()])
        if cursor.fetchone() is None:
            raise RuntimeError(
                f"The platform role {platform_role()!r} does not exist: run `manage.py setup_database` "
                "(README, Database roles) before migrating."
            )


class Migration(migrations.Migration):
    dependencies = [("tenants", "0007_clerk_sessions_and_role_changes")]

    operations = [
        migrations.RunPython(require_platform_role, migrations.RunPython.noop),
        migrations.RunSQL(
            sql=[statement for table in PUBLIC_TABLES for statement in platform_policy_sql(table)]
            + [FORWARD_PARTITIONS, partition_function_sql(condition=wrap(TENANT_CONDITION), with_platform_policy=True)],
            reverse_sql=[
                statement.replace("__t__", table) for table in PUBLIC_TABLES for statement in REVERSE_STATEMENTS
            ]
            + [REVERSE_PARTITIONS, partition_function_sql(condition=OLD_CONDITION, with_platform_policy=False)],
        ),
    ]
