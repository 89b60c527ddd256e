#!/usr/bin/env python
"""Benchmark schema-per-organization tenancy: creating organizations and migrating all their schemas.

    .venv/bin/python scripts/bench_tenancy.py [--organizations 100] [--keep] [--with-new-migration]

Works in its own scratch database `routiq_bench_tenancy` on the server of DATABASE_ADMIN_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), with the dev roles routiq_owner / routiq_app (created or
refreshed by `manage.py setup_database`). The database is dropped and recreated at the start and dropped
at the end unless --keep. Prints seconds; it is a measurement, not a test.

--with-new-migration also times applying a real schema change (a nullable column on patients.Contact) to
every schema. The migration lives in a temporary directory, never in the repo: a temporary settings module
points MIGRATION_MODULES["patients"] at a copy of patients/migrations plus the new file.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from dev import DEV_ROLES, MANAGE, ROOT, role_url  # scripts/ is sys.path[0] when run as a script
from psycopg import sql

DATABASE = "routiq_bench_tenancy"
NEW_MIGRATION = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("patients", "{leaf}")]

    operations = [migrations.AddField("contact", "bench_note", models.TextField(null=True, blank=True))]
"""


def admin_execute(admin_url: str, statement: sql.SQL | sql.Composed, params: list | None = None) -> tuple | None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchone() if cursor.description else None


def manage(env: dict[str, str], *args: str) -> float:
    """Run manage.py; return wall seconds. Output is shown only if the command fails."""
    started = time.perf_counter()
    result = subprocess.run([*MANAGE, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode:
        output = (result.stdout + result.stderr)[-6000:]
        sys.exit(f"manage.py {' '.join(args)} failed (exit {result.returncode}):\n{output}")
    return elapsed


def create_organizations(count: int) -> list[float]:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connections

    from tenants.services import organization_create

    durations = []
    for number in range(1, count + 1):
        started = time.perf_counter()
        organization_create(name=f"Bench Clinic {number:04d}", clerk_org_id=f"org_bench_{uuid.uuid4().hex}")
        durations.append(time.perf_counter() - started)
    connections.close_all()
    return durations


def new_migration_env(env: dict[str, str], workdir: Path) -> tuple[dict[str, str], str]:
    """A settings module + migrations package in workdir that add one migration to patients."""
    from django.db.migrations.loader import MigrationLoader

    (leaf,) = [name for app, name in MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes("patients")]
    package = workdir / "bench_patients_migrations"
    shutil.copytree(ROOT / "patients" / "migrations", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "9999_bench_note.py").write_text(NEW_MIGRATION.format(leaf=leaf))
    (workdir / "bench_settings.py").write_text(
        "from routiq.settings import *  # noqa: F403\nMIGRATION_MODULES = {'patients': 'bench_patients_migrations'}\n"
    )
    pythonpath = os.pathsep.join(filter(None, [str(workdir), str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "DJANGO_SETTINGS_MODULE": "bench_settings", "PYTHONPATH": pythonpath}, leaf


def scratch_environment(admin_url: str, database: str) -> dict[str, str]:
    """The environment for manage.py as the owner of ``database``, after setup_database has made the dev roles,
    the database and its grants on the server of ``admin_url``."""
    owner_url = role_url(admin_url, *DEV_ROLES["owner"], database)
    # setup_database without --allow-test-databases would revoke CREATEDB from a shared dev owner role.
    row = admin_execute(admin_url, sql.SQL("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s"),
                        [DEV_ROLES["owner"][0]])
    env = {
        **os.environ,
        "DJANGO_SECRET_KEY": "bench-only-secret-key-5e1a9c3f7b2d4086-not-for-production",
        "ROUTIQ_ENCRYPTION_KEYS": "YmVuY2gtb25seS1lbmNyeXB0aW9uLWtleS0zMmJ5dGU=",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "routiq.settings",
        "DATABASE_URL": owner_url,
    }
    manage(env, "setup_database", "--admin-url", admin_url, "--owner-url", owner_url,
           "--app-url", role_url(admin_url, *DEV_ROLES["app"], database),
           "--platform-url", role_url(admin_url, *DEV_ROLES["platform"], database),
           *(["--allow-test-databases"] if row and row[0] else []))
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organizations", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="Drop the scratch database neither at start nor end.")
    parser.add_argument("--with-new-migration", action="store_true", help="Also time a new migration.")
    args = parser.parse_args()

    admin_url = os.environ.get("DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
    if not args.keep:
        admin_execute(admin_url, drop)
    env = scratch_environment(admin_url, DATABASE)
    results = [("migrate_schemas --shared (empty database)", manage(env, "migrate_schemas", "--shared"))]

    os.environ.update(env)
    durations = create_organizations(args.organizations)
    p95 = sorted(durations)[max(0, math.ceil(0.95 * len(durations)) - 1)]
    print(
        f"organization_create: count {len(durations)}  total {sum(durations):.2f}s  "
        f"mean {statistics.mean(durations):.3f}s  median {statistics.median(durations):.3f}s  "
        f"p95 {p95:.3f}s  max {max(durations):.3f}s"
    )
    results.append((f"organization_create x{len(durations)} (total)", sum(durations)))

    from django.conf import settings

    processes = getattr(settings, "TENANT_MULTIPROCESSING_MAX_PROCESSES", 2)
    multiprocessing = f"multiprocessing, {processes} processes"
    for label, executor in (("standard", []), (multiprocessing, ["--executor", "multiprocessing"])):
        results.append((f"migrate_schemas no-op, {label}", manage(env, "migrate_schemas", *executor)))

    if args.with_new_migration:
        with tempfile.TemporaryDirectory(prefix="bench_tenancy_") as workdir:
            new_env, leaf = new_migration_env(env, Path(workdir))
            results.append(("new migration, standard", manage(new_env, "migrate_schemas", "patients")))
            manage(new_env, "migrate_schemas", "patients", leaf)  # unapply, untimed
            seconds = manage(new_env, "migrate_schemas", "--executor", "multiprocessing", "patients")
            results.append((f"new migration, {multiprocessing}", seconds))
    else:
        print("new-migration timing skipped (pass --with-new-migration)")

    if not args.keep:
        admin_execute(admin_url, drop)

    print(f"\nSummary ({args.organizations} organizations, database {DATABASE}):")
    width = max(len(label) for label, _ in results)
    for label, seconds in results:
        print(f"  {label:<{width}}  {seconds:8.2f} s")
    print(f"\nCommand: {shlex.join(sys.orig_argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
