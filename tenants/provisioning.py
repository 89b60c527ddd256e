"""Making organization schemas fast: one schema built by migrations (the template), the others cloned from it.

Migrating a new schema costs about 2 s of Python (Django re-renders model states for 55 migrations); the
database work in it is a tenth of that. A clone replays the migrated schema's DDL instead (``pg_dump
--schema-only`` of it, the schema name replaced), so the database does the same work without the Python.
organization_create clones TEMPLATE_SCHEMA (current_template: rebuilt by migrations when it is behind the
code or from an earlier month), and create_demo_organizations does so in parallel processes.

What a clone must get that a plain schema copy would miss (django-tenants' ``clone_schema`` drops FORCE RLS,
reference/stack-notes.md P7):

* FORCE ROW LEVEL SECURITY and the policies: pg_dump writes both. The policies name no organization (they
  compare ``organization_id`` with the bound one), so they are copied as they are.
* functions, views and materialized views that name their own schema (tenants/rls/matviews.py,
  messaging 0007/0008/0010: ``SET search_path``, ``WHERE o.schema_name = '<schema>'``): the template's name is
  ``org_<32 hex digits>``, which occurs nowhere but in references to it, so replacing it renames every one.
* sequences of its own (``CREATE SEQUENCE <new>.…`` owned by the new tables), at the template's values.
* the rows migrations write: ``django_migrations`` and ``django_content_type`` (no other table is copied:
  none could be told apart from a clinic's own data).
* materialized views populated (pg_dump creates them WITH NO DATA; a REFRESH with nothing bound fills them
  with nothing, as migrating does, so ``REFRESH … CONCURRENTLY`` works on them later).
* the same grants. pg_dump writes an object's ACL as a change from the built-in default, but the owner's
  *default privileges* (tenants/rls/roles.py) apply when the replay creates the object: the app role would
  get SELECT on the materialized views, which must have no grant. So after the replay each object's ACL is
  set to the template's, entry by entry.

tenants/tests/test_bulk_provisioning.py compares a clone's catalog with a migrated schema's.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connections

from tenants.rls.matviews import quote_ident, quote_literal

logger = logging.getLogger(__name__)
TEMPLATE_SCHEMA_NAME = re.compile(r"^org_[0-9a-f]{32}$")
# The tables migrations write rows into; every other table of a new schema starts empty. Only schema names of
# this form are cloned from or into: nothing else in a dump can contain one.
MIGRATION_WRITTEN_TABLES = ("django_migrations", "django_content_type")

# One row per privilege: (kind, object, grantee, privilege, grantable); the object without its schema.
ACL_SQL = """
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, quote_ident(c.relname),
       a.grantee, a.privilege_type, a.is_grantable
FROM pg_class c,
     aclexplode(coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       a.grantee, a.privilege_type, a.is_grantable
FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f'::"char", p.proowner))) a
WHERE p.pronamespace = %(schema)s::regnamespace
UNION ALL
SELECT 'SCHEMA', '', a.grantee, a.privilege_type, a.is_grantable
FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))) a
WHERE n.oid = %(schema)s::regnamespace
"""


@dataclass(frozen=True)
class SchemaTemplate:
    """What cloning ``schema`` needs, read once: its DDL, sequence values, materialized views and grants.

    ``foreign_keys`` is the DDL's foreign keys, run last: adding one to ``public.organizations`` takes a SHARE ROW
    EXCLUSIVE lock on that table until commit, so concurrent clones wait for each other from there on (and
    would deadlock if either had inserted its organization row first: organization_create inserts it after).
    """

    schema: str
    ddl: str
    foreign_keys: str
    session_settings: tuple[str, ...]
    rows: dict[str, tuple[tuple, ...]]
    sequences: tuple[tuple[str, int, bool], ...]
    matviews: tuple[str, ...]
    acl: frozenset[tuple]
    role_names: dict[int, str]


def libpq_conninfo(settings_dict: dict) -> dict[str, str]:
    """Where a libpq tool (pg_dump) finds this connection's database. A Unix-socket URL (``…@/db?host=/dir``, as
    `make run`'s embedded PostgreSQL has) leaves HOST empty and puts the directory in OPTIONS: without it,
    pg_dump would ask the machine's default server instead."""
    options = settings_dict.get("OPTIONS") or {}
    return {"dbname": settings_dict["NAME"], "user": settings_dict["USER"],
            "host": settings_dict["HOST"] or options.get("host", ""),
            "port": str(settings_dict["PORT"] or options.get("port", ""))}


def _pg_dump_schema(schema: str, alias: str) -> str:
    from routiq.backup import tool

    settings_dict = connections[alias].settings_dict
    conninfo = libpq_conninfo(settings_dict)
    env = {**os.environ, "PGPASSWORD": settings_dict["PASSWORD"] or ""}
    dsn = " ".join(f"{key}={value}" for key, value in conninfo.items() if value)
    url_with_password = f"{dsn} password={settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else dsn
    command = [tool("pg_dump", url_with_password), "--schema-only", "--no-owner", "--schema", schema, "--dbname", dsn]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - our argv
    if done.returncode:
        raise RuntimeError(f"pg_dump of {schema} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def transaction_local(ddl: str) -> tuple[str, tuple[str, ...]]:
    """pg_dump's session settings (search_path '', check_function_bodies off, …) made transaction-local, and
    their names (clone_schema puts them back: the caller's transaction goes on after the clone). Without psql's
    meta-commands (``\\restrict``, PostgreSQL 15.14 and later), and without ``row_security = off``: that makes
    a FORCE RLS table an error for its owner instead of filtered, so adding a foreign key to one would fail.
    Migrations run with it on; so does the clone."""
    lines, names = [], []
    for line in ddl.splitlines():
        if line.startswith(("\\restrict ", "\\unrestrict ", "SET row_security = off;")):
            continue
        if line.startswith("SET "):
            names.append(line[len("SET "):].split()[0])
            line = "SET LOCAL " + line[len("SET "):]
        elif line.startswith("SELECT pg_catalog.set_config('") and line.endswith(", false);"):
            names.append(line.split("'")[1])
            line = line[: -len(", false);")] + ", true);"
        lines.append(line)
    return "\n".join(lines), tuple(dict.fromkeys(names))


# pg_dump starts each object's statements with "--\n-- Name: …; Type: <type>; Schema: …; Owner: …\n--\n".
DUMP_ENTRY = re.compile(r"^--\n-- (?:Data for )?Name: [^\n]*?; Type: (?P<type>[^;\n]+);[^\n]*\n--\n", re.MULTILINE)


def split_foreign_keys(ddl: str) -> tuple[str, str]:
    """(the dump without its FK CONSTRAINT entries and the schema's comment, those entries in their order)."""
    starts = [match.start() for match in DUMP_ENTRY.finditer(ddl)] + [len(ddl)]
    rest: list[str] = [ddl[: starts[0]]]
    foreign_keys: list[str] = []
    for start, end in zip(starts, starts[1:], strict=False):
        entry = ddl[start:end]
        kind = DUMP_ENTRY.match(entry)["type"]  # type: ignore[index]  # each entry starts at a DUMP_ENTRY match
        if kind == "COMMENT" and entry.startswith("--\n-- Name: SCHEMA "):
            continue  # the template's stamp (current_template), not the clone's
        (foreign_keys if kind == "FK CONSTRAINT" else rest).append(entry)
    return "".join(rest), "".join(foreign_keys)


def schema_template(schema: str, *, alias: str = "default") -> SchemaTemplate:
    """Read a freshly migrated schema for cloning (before anything is written into it)."""
    if not TEMPLATE_SCHEMA_NAME.match(schema):
        raise ValueError(f"{schema!r} is not an organization schema name (org_<32 hex digits>)")
    ddl, session_settings = transaction_local(_pg_dump_schema(schema, alias))
    ddl, foreign_keys = split_foreign_keys(ddl)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'S' "
            "ORDER BY c.relname", [schema])
        sequences = []
        for (name,) in cursor.fetchall():
            cursor.execute(f"SELECT last_value, is_called FROM {quote_ident(schema)}.{quote_ident(name)}")
            sequences.append((name, *cursor.fetchone()))
        cursor.execute(
            "SELECT matviewname FROM pg_matviews WHERE schemaname = %s AND ispopulated ORDER BY 1", [schema])
        matviews = tuple(name for (name,) in cursor.fetchall())
        cursor.execute(ACL_SQL, {"schema": schema})
        acl = frozenset(cursor.fetchall())
        cursor.execute("SELECT oid, rolname FROM pg_roles")
        role_names = dict(cursor.fetchall())
        rows = {}
        for table in MIGRATION_WRITTEN_TABLES:
            cursor.execute(f"SELECT * FROM {quote_ident(schema)}.{quote_ident(table)} ORDER BY 1")
            rows[table] = tuple(cursor.fetchall())
    return SchemaTemplate(schema=schema, ddl=ddl, foreign_keys=foreign_keys, session_settings=session_settings,
                          rows=rows, sequences=tuple(sequences), matviews=matviews, acl=acl, role_names=role_names)


def _grantee(template: SchemaTemplate, oid: int) -> str:
    return "PUBLIC" if oid == 0 else quote_ident(template.role_names[oid])


def _acl_statements(template: SchemaTemplate, schema: str, current: set[tuple]) -> list[str]:
    def target(kind: str, name: str) -> str:
        return f"SCHEMA {quote_ident(schema)}" if kind == "SCHEMA" else f"{kind} {quote_ident(schema)}.{name}"

    statements = [
        f"REVOKE {privilege} ON {target(kind, name)} FROM {_grantee(template, grantee)}"
        for kind, name, grantee, privilege, _grantable in sorted(current - template.acl)
    ]
    statements += [
        f"GRANT {privilege} ON {target(kind, name)} TO {_grantee(template, grantee)}"
        + (" WITH GRANT OPTION" if grantable else "")
        for kind, name, grantee, privilege, grantable in sorted(template.acl - current)
    ]
    return statements


def clone_schema(template: SchemaTemplate, schema: str, *, alias: str = "default") -> None:
    """Create ``schema`` as a copy of the template's structure. Call inside a transaction (the owner role),
    before anything else in it writes to public.organizations (SchemaTemplate.foreign_keys says why)."""
    if not TEMPLATE_SCHEMA_NAME.match(schema):
        raise ValueError(f"{schema!r} is not an organization schema name (org_<32 hex digits>)")
    new = quote_ident(schema)
    with connections[alias].cursor() as cursor:
        names = template.session_settings
        cursor.execute("SELECT " + ", ".join(["current_setting(%s)"] * len(names)), names)
        before = cursor.fetchone()
        cursor.execute(template.ddl.replace(template.schema, schema))
        for table, rows in template.rows.items():
            if rows:
                placeholders = "(" + ", ".join(["%s"] * len(rows[0])) + ")"
                cursor.execute(f"INSERT INTO {new}.{quote_ident(table)} OVERRIDING SYSTEM VALUE VALUES "
                               + ", ".join([placeholders] * len(rows)), [value for row in rows for value in row])
        statements = [
            f"SELECT pg_catalog.setval({quote_literal(new + '.' + quote_ident(name))}, {last_value}, "
            f"{'true' if is_called else 'false'})"
            for name, last_value, is_called in template.sequences
        ]
        statements += [f"REFRESH MATERIALIZED VIEW {new}.{quote_ident(name)}" for name in template.matviews]
        cursor.execute(";\n".join(statements))
        cursor.execute(ACL_SQL, {"schema": schema})
        fixes = _acl_statements(template, schema, set(cursor.fetchall()))
        if fixes:
            cursor.execute(";\n".join(fixes))
        cursor.execute(template.foreign_keys.replace(template.schema, schema))
        cursor.execute("SELECT " + ", ".join(["pg_catalog.set_config(%s, %s, true)"] * len(names)),
                       [value for pair in zip(names, before, strict=True) for value in pair])


# --- The database's template schema -------------------------------------------------------------------------

# No organization's: their schemas are named after random (version 4) UUIDs.
TEMPLATE_SCHEMA = "org_" + "0" * 32
TEMPLATE_LOCK = "hashtext('tenants.schema_template')"
_dumped: dict[str, SchemaTemplate] = {}


def template_stamp() -> str:
    """What the template must have been built for: this month (messages partitions are created from the month a
    schema is migrated in) and the code's migration graph."""
    from django.utils import timezone

    from tenants.schema_migrations import migration_target

    graph = hashlib.sha256("\n".join(migration_target().nodes).encode()).hexdigest()[:16]
    return f"routiq template {timezone.now():%Y-%m} {graph}"


def _template_comment(cursor) -> str | None:
    cursor.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
                   [TEMPLATE_SCHEMA])
    row = cursor.fetchone()
    return row[0] if row else None


def _template_is_ahead(cursor) -> bool:
    from tenants.schema_migrations import migration_target

    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{TEMPLATE_SCHEMA}.django_migrations"])
    if not cursor.fetchone()[0]:
        return False
    cursor.execute(f"SELECT app || '.' || name FROM {quote_ident(TEMPLATE_SCHEMA)}.django_migrations")
    return bool({key for (key,) in cursor.fetchall()} - set(migration_target().keys))


def template_rebuild(*, alias: str = "default") -> bool:
    """Migrate a new TEMPLATE_SCHEMA (as migrate_organizations migrates a schema). Outside a transaction: the
    dump that reads it is another connection. False if migrating it failed (logged; creation then migrates)."""
    from tenants.schema_migrations import migrate_schema

    stamp = template_stamp()
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_advisory_lock({TEMPLATE_LOCK})")
    try:
        with connection.cursor() as cursor:
            if (_template_comment(cursor) or "").startswith(stamp):
                return True  # another process rebuilt it meanwhile
            if _template_is_ahead(cursor):
                # Built by newer code (a deploy under way): this process's migrations would take it back.
                logger.info("template schema left as it is: it has migrations this code does not know")
                return False
            cursor.execute(f"DROP SCHEMA IF EXISTS {quote_ident(TEMPLATE_SCHEMA)} CASCADE")
            cursor.execute(f"CREATE SCHEMA {quote_ident(TEMPLATE_SCHEMA)}")
        result = migrate_schema(TEMPLATE_SCHEMA, alias=alias)
        if result.error:
            logger.warning("template schema not rebuilt: %s", result.error)
            return False
        with connection.cursor() as cursor:
            cursor.execute(f"COMMENT ON SCHEMA {quote_ident(TEMPLATE_SCHEMA)} IS "
                           f"{quote_literal(stamp + ' ' + uuid.uuid4().hex)}")
        logger.info("template schema rebuilt seconds=%.3f", result.seconds)
        return True
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_unlock({TEMPLATE_LOCK})")


def template_ensure(*, alias: str = "default") -> str:
    """Rebuild the template schema if it is stale (migrate_organizations, after the organizations): 'current',
    'rebuilt' or 'failed'."""
    with connections[alias].cursor() as cursor:
        if (_template_comment(cursor) or "").startswith(template_stamp()):
            return "current"
    return "rebuilt" if template_rebuild(alias=alias) else "failed"


def current_template(*, alias: str = "default") -> SchemaTemplate | None:
    """The template new organization schemas are cloned from, or None (then they are migrated).

    TEMPLATE_SCHEMA is rebuilt here when it is missing or stale (template_stamp), unless this connection is in a
    transaction: the rebuild commits as it goes, and pg_dump could not see an uncommitted one. A dump is kept per
    process for each build of the template.
    """
    connection = connections[alias]
    stamp = template_stamp()
    with connection.cursor() as cursor:
        comment = _template_comment(cursor)
    if not (comment or "").startswith(stamp):
        if connection.in_atomic_block or not template_rebuild(alias=alias):
            return None
        with connection.cursor() as cursor:
            comment = _template_comment(cursor)
    if comment is None:  # rebuilt, yet unstamped: migrate rather than clone an unknown schema
        return None
    if comment not in _dumped:
        with connection.cursor() as cursor:
            # Shared: a rebuild (exclusive) waits until the dump is read.
            cursor.execute(f"SELECT pg_advisory_lock_shared({TEMPLATE_LOCK})")
            try:
                if _template_comment(cursor) != comment:
                    return None
                _dumped.clear()
                _dumped[comment] = schema_template(TEMPLATE_SCHEMA, alias=alias)
            finally:
                cursor.execute(f"SELECT pg_advisory_unlock_shared({TEMPLATE_LOCK})")
    return _dumped[comment]


# --- Demo organizations in bulk (manage.py create_demo_organizations) --------------------------------------

DEMO_PATIENTS = [("Ada", "Lovelace"), ("Alan", "Turing"), ("Grace", "Hopper"), ("Edsger", "Dijkstra"),
                 ("Barbara", "Liskov"), ("Donald", "Knuth"), ("Frances", "Allen"), ("Ken", "Thompson")]


@dataclass(frozen=True)
class Created:
    organization_id: str
    schema_name: str
    seconds: float


def demo_contacts_create(organization, patients: int) -> None:
    from patients.models import Contact
    from tenants.rls.binding import bind_organization

    with bind_organization(organization):
        Contact.objects.bulk_create([
            Contact(organization=organization, first_name=first, last_name=f"{last} {index // len(DEMO_PATIENTS)}",
                    email=f"patient{index}@example.com", phone_raw=f"+6140000{index:04d}")
            for index, (first, last) in ((i, DEMO_PATIENTS[i % len(DEMO_PATIENTS)]) for i in range(patients))
        ])


def demo_organization_create(*, number: int, run: str, patients: int,
                             template: SchemaTemplate | None) -> tuple[Created, object]:
    """One demo clinic (cloned from ``template``, or migrated without one) with ``patients`` contacts."""
    from tenants.services import organization_create

    started = time.perf_counter()
    organization = organization_create(
        name=f"Demo Clinic {number:04d}", clerk_org_id=f"org_demo_{run}_{number:05d}",
        slug=f"demo-{run}-{number:05d}", actor_label="demo", template=template,
    )
    if patients:
        demo_contacts_create(organization, patients)
    return Created(str(organization.pk), organization.schema_name, time.perf_counter() - started), organization


def _create_batch(arguments: tuple) -> list[Created]:
    numbers, run, patients, template = arguments
    try:
        return [demo_organization_create(number=number, run=run, patients=patients, template=template)[0]
                for number in numbers]
    finally:
        connections.close_all()


def demo_organizations_create(*, count: int, patients: int = 3, workers: int = 1, progress=None) -> list[Created]:
    """``count`` demo clinics cloned from the template schema by ``workers`` forked processes (without a
    usable template: the first is migrated and the others cloned from it).

    Each clinic is its own transaction (organization_create), so a failure leaves the ones before it whole.
    ``progress(done, count)`` is called as batches finish.
    """
    run = uuid.uuid4().hex[:8]
    created, numbers = [], list(range(1, count + 1))
    template = current_template()
    if template is None:
        first, organization = demo_organization_create(number=1, run=run, patients=0, template=None)
        template = schema_template(first.schema_name)
        if patients:  # only now: the template is read as migrations left the schema
            demo_contacts_create(organization, patients)
        created, numbers = [first], numbers[1:]
    batch_size = max(1, min(25, len(numbers) // (workers * 4)))
    batches = [(numbers[i:i + batch_size], run, patients, template) for i in range(0, len(numbers), batch_size)]
    if workers <= 1 or len(batches) <= 1:
        results: Iterator[list[Created]] = map(_create_batch, batches)
        pool = None
    else:
        connections.close_all()  # the workers are forked: none may share this process's connection
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap_unordered(_create_batch, batches)
    try:
        for done in results:
            created += done
            if progress:
                progress(len(created), count)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return created
