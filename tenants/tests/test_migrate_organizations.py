"""migrate_organizations over a few organizations: schemas at the target are skipped without per-schema work,
the rest are migrated in parallel, a failing schema is reported while the others succeed, and a rerun
resumes with only the schemas still behind.

Transactional: the workers are other processes on connections of their own.
"""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test.utils import CaptureQueriesContext

from tenants import schema_migrations
from tenants.models import Organization
from tenants.schema_migrations import migration_target, organizations_migrate, schema_states

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.owner_role]


def behind() -> dict[str, list[str]]:
    return {state.schema: state.missing for state in schema_states(migration_target()) if state.missing}


def roll_back_last_messaging_migration(schema: str) -> str:
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    (leaf,) = graph.leaf_nodes("messaging")
    (previous,) = [parent for parent in graph.node_map[leaf].parents if parent.key[0] == "messaging"]
    call_command("migrate_schemas", "messaging", previous.key[1], schema_name=schema, interactive=False, verbosity=0)
    return f"messaging.{leaf[1]}"


def sabotage(schema: str) -> None:
    """Recording any migration in ``schema`` fails (and so rolls that migration back)."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'sabotaged by the test'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".django_migrations
            FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();
        """)


def repair(schema: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TRIGGER refuse ON "{schema}".django_migrations; DROP FUNCTION "{schema}".refuse()')


def test_migrate_organizations_skips_migrates_in_parallel_reports_and_resumes(capsys, monkeypatch):
    call_command("create_demo_organizations", count=5, patients=1, workers=2)
    schemas = list(Organization.objects.filter(clerk_org_id__startswith="org_demo_")
                   .order_by("clerk_org_id").values_list("schema_name", flat=True))
    everyone = set(Organization.objects.exclude(schema_name="public").values_list("schema_name", flat=True))
    assert behind() == {}
    rolled_back = [schemas[0], schemas[2], schemas[4]]
    for schema in rolled_back:
        migration = roll_back_last_messaging_migration(schema)
    sabotage(schemas[2])

    # One query reads the recorded state of every schema (after the one listing them).
    with CaptureQueriesContext(connection) as queries:
        assert behind() == {schema: [migration] for schema in rolled_back}
    assert len(queries) == 2

    with pytest.raises(CommandError, match=f"1 schemas failed .*: {schemas[2]}$"):
        call_command("migrate_organizations", workers=2)
    output = capsys.readouterr()
    assert f"FAILED {schemas[2]}: " in output.err and "sabotaged by the test" in output.err
    assert f"{len(everyone)} organization schemas: {len(everyone) - 3} already at the target, 2 migrated, 1 failed" \
        in output.err
    assert behind() == {schemas[2]: [migration]}

    # Rerun: only the one still behind is migrated; the others are not touched.
    repair(schemas[2])
    run = organizations_migrate(workers=2)
    assert [result.schema for result in run.migrated] == [schemas[2]] and run.failed == []
    assert set(run.at_target) == everyone - {schemas[2]}
    assert behind() == {}

    # Nothing to do: no worker is started and no schema is migrated.
    def no_pool(workers):
        raise AssertionError("a worker pool was started with every schema at the target")

    monkeypatch.setattr(schema_migrations, "_pool", no_pool)
    monkeypatch.setattr(schema_migrations, "migrate_schema", no_pool)
    run = organizations_migrate(workers=2)
    assert (set(run.at_target), run.migrated, run.failed) == (everyone, [], [])
    call_command("migrate_organizations", "--check")
