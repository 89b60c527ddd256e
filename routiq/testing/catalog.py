"""A schema's catalog as comparable sets, its own name replaced by ``<schema>``: two schemas built the same way
(migrated, or cloned by tenants/provisioning.py) give equal catalogs. Columns are compared by name, not
position (a clone has no dropped-column gaps)."""

from __future__ import annotations

from django.db import connection

from tenants.provisioning import ACL_SQL, MIGRATION_WRITTEN_TABLES

CATALOG_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity, c.relispartition,
               pg_get_expr(c.relpartbound, c.oid), c.reloptions::text, pg_get_userbyid(c.relowner),
               obj_description(c.oid, 'pg_class')
        FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
               a.attgenerated, pg_get_expr(d.adbin, d.adrelid), a.attcollation::regcollation::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = %(schema)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": """
        SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = %(schema)s::regnamespace""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, condeferrable, condeferred, convalidated,
               pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = %(schema)s::regnamespace""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = %(schema)s""",
    "grants": ACL_SQL,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prosecdef, p.proconfig::text,
               pg_get_functiondef(p.oid), pg_get_userbyid(p.proowner)
        FROM pg_proc p WHERE p.pronamespace = %(schema)s::regnamespace""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
        WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('v', 'm')""",
    "matviews": "SELECT matviewname, ispopulated FROM pg_matviews WHERE schemaname = %(schema)s",
    # Which column owns each sequence, and in which schema that column's table is.
    "sequence_owners": """
        SELECT s.relname, t.relnamespace::regnamespace::text, t.relname, a.attname, d.deptype
        FROM pg_class s JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
             AND d.refclassid = 'pg_class'::regclass
        JOIN pg_class t ON t.oid = d.refobjid
        LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE s.relnamespace = %(schema)s::regnamespace AND s.relkind = 'S'""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by, max_value, cycle, last_value
        FROM pg_sequences WHERE schemaname = %(schema)s""",
    "partitioned": """
        SELECT partrelid::regclass::text, pg_get_partkeydef(partrelid) FROM pg_partitioned_table p
        JOIN pg_class c ON c.oid = p.partrelid WHERE c.relnamespace = %(schema)s::regnamespace""",
}


def schema_catalog(schema: str) -> dict[str, set[tuple]]:
    """Everything above for ``schema`` plus the rows migrations write, with the schema's name normalized."""

    def normalized(row: tuple) -> tuple:
        return tuple(value.replace(schema, "<schema>") if isinstance(value, str) else value for value in row)

    catalog = {}
    with connection.cursor() as cursor:
        for name, query in CATALOG_QUERIES.items():
            cursor.execute(query, {"schema": schema})
            catalog[name] = {normalized(row) for row in cursor.fetchall()}
        for table in MIGRATION_WRITTEN_TABLES:
            cursor.execute(f'SELECT * FROM "{schema}"."{table}"')
            catalog[table] = {normalized(row[1:] if table == "django_migrations" else row)
                              for row in cursor.fetchall()}
    # When django_migrations rows were applied differs from schema to schema; which ones does not.
    catalog["django_migrations"] = {row[:2] for row in catalog["django_migrations"]}
    return catalog
