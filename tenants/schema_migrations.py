"""Migrating every organization's schema at once (manage.py migrate_organizations).

``migrate_schemas`` runs Django's whole ``migrate`` in each schema, one after the other: about 50-90 ms per
schema even with nothing to do, hours at a few thousand schemas for a real change. Instead:

1. one query reads what every schema has recorded (a UNION ALL over each schema's ``django_migrations``) and
   compares it with the target, the migration graph's nodes (a schema records every app's migrations; the
   router makes the shared apps' ones no-ops there). Schemas at the target get no per-schema work at all;
2. the others are migrated by ``MIGRATION_WORKERS`` forked processes, each with its own connection, one schema
   at a time, doing what Django's ``migrate`` does (signals, content types and all) except building and
   rendering the model states again for every schema (apply_forwards);
3. a schema that fails is reported and the others go on. Each migration is its own transaction, so a failed
   schema stays at its last applied migration; running again migrates only the schemas still behind.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal, emit_pre_migrate_signal
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ProjectState
from django_tenants.utils import get_public_schema_name, get_tenant_base_migrate_command_class

from tenants.rls.matviews import quote_ident, quote_literal

# A worker reconnects after this many schemas: a backend keeps the catalog of every schema it touched
# (85 MB after 1,000; reference/performance-notes.md).
SCHEMAS_PER_CONNECTION = 100


@dataclass(frozen=True)
class Target:
    """The migrations every organization schema must have recorded (``app.name``), and what each squashed
    migration replaces: a squash counts as applied when everything it replaces is recorded, as in Django."""

    nodes: tuple[str, ...]
    replaces: dict[str, tuple[str, ...]]

    @property
    def keys(self) -> list[str]:
        """What to look up in a schema's django_migrations."""
        return sorted(set(self.nodes).union(*self.replaces.values()))

    def missing(self, unrecorded: Iterable[str]) -> list[str]:
        """The target migrations a schema lacks, given which of ``keys`` it has not recorded."""
        unrecorded = set(unrecorded)
        return [node for node in self.nodes if node in unrecorded
                and not (node in self.replaces and unrecorded.isdisjoint(self.replaces[node]))]


def migration_target() -> Target:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    nodes = sorted(loader.graph.nodes)
    return Target(
        nodes=tuple(f"{app}.{name}" for app, name in nodes),
        replaces={f"{app}.{name}": tuple(f"{a}.{n}" for a, n in loader.disk_migrations[(app, name)].replaces)
                  for app, name in nodes if loader.disk_migrations[(app, name)].replaces},
    )


@dataclass
class SchemaState:
    schema: str
    missing: list[str]  # target migrations not recorded; [] = at the target


def schema_states(target: Target, *, alias: str = DEFAULT_DB_ALIAS) -> list[SchemaState]:
    """Every organization schema and the target migrations it lacks: two queries whatever the count
    (the organizations, then one UNION ALL over their ``django_migrations``)."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT o.schema_name, to_regclass(quote_ident(o.schema_name) || '.django_migrations') IS NOT NULL "
            "FROM organizations o WHERE o.schema_name <> %s ORDER BY o.schema_name", [get_public_schema_name()])
        schemas = cursor.fetchall()
        recorded = [schema for schema, has_table in schemas if has_table]
        unrecorded: dict[str, list[str]] = {}
        if recorded:
            union = "\nUNION ALL\n".join(
                f"SELECT {quote_literal(schema)}, ARRAY(SELECT key FROM target EXCEPT "
                f"SELECT app || '.' || name FROM {quote_ident(schema)}.django_migrations)"
                for schema in recorded
            )
            cursor.execute(f"WITH target(key) AS (SELECT unnest(%s::text[]))\n{union}", [target.keys])
            unrecorded = dict(cursor.fetchall())
    return [
        SchemaState(schema, target.missing(unrecorded[schema]) if schema in unrecorded else list(target.nodes))
        for schema, _has_table in schemas
    ]


@dataclass(frozen=True)
class SchemaResult:
    schema: str
    seconds: float
    error: str = ""
    output: str = ""


@dataclass
class MigrationRun:
    at_target: list[str] = field(default_factory=list)
    migrated: list[SchemaResult] = field(default_factory=list)
    failed: list[SchemaResult] = field(default_factory=list)
    seconds: float = 0.0


_migrated_on_this_connection = 0
# Per process, keyed by the migrations applied before the plan: the model state then (rendered) and the apps
# after it. Django's migrate builds and renders both for every schema, 0.3-0.6 s of Python each time, though
# they are the same for every schema at the same migrations. Cloned or reused, they cost milliseconds.
_states_before: dict[frozenset, ProjectState] = {}
_apps_after: dict[frozenset, object] = {}


def apply_forwards(connection, *, verbosity: int = 0) -> bool:
    """What ``migrate`` does in the connection's schema, with the state before the plan reused across schemas:
    the consistency check, pre_migrate, each migration in its transaction, post_migrate (content types).
    False (nothing done) if the plan is not all forwards: then run ``migrate`` itself."""
    executor = MigrationExecutor(connection)
    executor.loader.check_consistent_history(connection)
    targets = executor.loader.graph.leaf_nodes()
    plan = executor.migration_plan(targets)
    if not plan:
        return True
    if any(backwards for _migration, backwards in plan):
        return False
    applied = frozenset(executor.loader.applied_migrations)
    if applied not in _states_before:
        state = executor._create_project_state(with_applied_migrations=True)  # type: ignore[attr-defined]  # noqa: SLF001 - private, as migrate uses it
        state.apps  # noqa: B018 - render once, here
        _states_before.clear()
        _apps_after.clear()
        _states_before[applied] = state
    before = _states_before[applied]
    emit_pre_migrate_signal(verbosity, False, connection.alias, apps=before.apps, plan=plan)
    after = executor.migrate(targets, plan=plan, state=before.clone())
    if applied not in _apps_after:
        after.clear_delayed_apps_cache()
        _apps_after[applied] = after.apps
    emit_post_migrate_signal(verbosity, False, connection.alias, apps=_apps_after[applied], plan=plan)
    return True


def _has_table_in_schema(recorder: MigrationRecorder) -> bool:
    """MigrationRecorder.has_table, by name. Django lists the visible tables for it (django-tenants: with the
    search_path set to the schema), a scan of pg_class that grows with every schema in the database: at 1,000
    organizations 0.1 s, four times per schema migrated."""
    cached: dict = recorder.__dict__  # has_table's cache, '_has_table' (private, no stubs)
    if not cached.get("_has_table"):
        schema = recorder.connection.schema_name  # type: ignore[attr-defined]  # django-tenants' connection
        table = f"{quote_ident(schema)}.{recorder.Migration._meta.db_table}"
        with recorder.connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
            cached["_has_table"] = cursor.fetchone()[0]
    return cached["_has_table"]


@contextlib.contextmanager
def _recorder_looks_up_by_name():
    original = MigrationRecorder.has_table
    MigrationRecorder.has_table = _has_table_in_schema  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        MigrationRecorder.has_table = original  # type: ignore[method-assign]


def migrate_schema(schema: str, *, verbosity: int = 0, alias: str = DEFAULT_DB_ALIAS) -> SchemaResult:
    """Django's ``migrate`` in ``schema`` (what django-tenants' run_migrations does, output kept, errors caught:
    one schema's failure is reported by the caller and must not stop the others)."""
    global _migrated_on_this_connection
    connection: Any = connections[alias]  # django-tenants' wrapper (set_schema…), which has no stubs
    started, output = time.perf_counter(), io.StringIO()
    with _recorder_looks_up_by_name():
        try:
            # django_migrations must exist in the schema before migrate looks, or it would find public's.
            connection.set_schema(schema, include_public=False)
            MigrationRecorder(connection).ensure_schema()
            connection.set_schema(schema)
            if not apply_forwards(connection, verbosity=verbosity):
                call_command(get_tenant_base_migrate_command_class()(), database=alias, interactive=False,
                             verbosity=verbosity, stdout=output, stderr=output)
            error = ""
        except Exception as exc:  # noqa: BLE001 - the boundary: a schema's failure is its result
            error = f"{type(exc).__name__}: {exc}".strip()
            connection.close()  # whatever state the failure left it in
        finally:
            connection.set_schema_to_public()
    _migrated_on_this_connection += 1
    if _migrated_on_this_connection >= SCHEMAS_PER_CONNECTION:
        connection.close()
        _migrated_on_this_connection = 0
    return SchemaResult(schema, time.perf_counter() - started, error, output.getvalue())


def _pool(workers: int):
    # fork: the workers inherit the loaded apps and settings (the test database's name, in the tests).
    return multiprocessing.get_context("fork").Pool(workers)


def _migrate_in_worker(arguments: tuple[str, int]) -> SchemaResult:
    schema, verbosity = arguments
    return migrate_schema(schema, verbosity=verbosity)


def organizations_migrate(*, workers: int, verbosity: int = 0,
                          report: Callable[[SchemaResult, int, int], None] | None = None) -> MigrationRun:
    """Bring every organization schema to the target; ``report(result, done, behind)`` after each schema."""
    started = time.perf_counter()
    states = schema_states(migration_target())
    run = MigrationRun(at_target=[state.schema for state in states if not state.missing])
    behind = [state.schema for state in states if state.missing]
    results: Iterable[SchemaResult]
    if not behind:
        run.seconds = time.perf_counter() - started
        return run
    if workers <= 1 or len(behind) == 1:
        results = (migrate_schema(schema, verbosity=verbosity) for schema in behind)
        pool = None
    else:
        connections.close_all()  # forked workers must not share this process's connection
        pool = _pool(min(workers, len(behind)))
        results = pool.imap_unordered(_migrate_in_worker, [(schema, verbosity) for schema in behind])
    try:
        for result in results:
            (run.failed if result.error else run.migrated).append(result)
            if report:
                report(result, len(run.migrated) + len(run.failed), len(behind))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    run.seconds = time.perf_counter() - started
    return run
