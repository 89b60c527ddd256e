"""``flush`` for a database with a schema per organization and an append-only audit log.

Django's flush empties the tables it knows in the public schema. Here that would leave every organization's
schema (patients, messages) behind, and it cannot empty ``audit_logs`` at all: the TRUNCATE guard refuses
every role. Flushing is a development and test operation (pytest-django's transactional tests flush after
each test), so it does what the audit log's migration documents as break-glass, and only the owner role can
do: inside flush's one transaction, switch the guard off, truncate, switch it on again. No other session
ever sees the guard off (ALTER TABLE holds an ACCESS EXCLUSIVE lock until commit), and the app role, which
owns nothing, still cannot flush.
"""

from __future__ import annotations

from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations

from tenants.provisioning import TEMPLATE_SCHEMA

GUARDED_TABLES_SQL = """
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.tgname = 'audit_logs_no_truncate'
"""


class DatabaseOperations(PostgresOperations):
    def execute_sql_flush(self, sql_list):
        if not sql_list:
            return super().execute_sql_flush(sql_list)
        with self.connection.cursor() as cursor:
            cursor.execute(GUARDED_TABLES_SQL)
            guarded = [name for (name,) in cursor.fetchall()]
            cursor.execute("SELECT schema_name FROM organizations")
            schemas = [name for (name,) in cursor.fetchall() if name != "public"]
        # The template schema's foreign keys to organizations would refuse the TRUNCATE; the next organization
        # created rebuilds it.
        schemas.append(TEMPLATE_SCHEMA)
        break_glass = [f"ALTER TABLE {table} DISABLE TRIGGER audit_logs_no_truncate" for table in guarded]
        drop_schemas = [f'DROP SCHEMA IF EXISTS "{schema}" CASCADE' for schema in schemas]
        guard_again = [f"ALTER TABLE {table} ENABLE TRIGGER audit_logs_no_truncate" for table in guarded]
        # One transaction (execute_sql_flush's atomic block): all of it, or none of it.
        super().execute_sql_flush([*drop_schemas, *break_glass, *sql_list, *guard_again])
