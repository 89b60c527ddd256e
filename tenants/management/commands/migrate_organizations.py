"""python manage.py migrate_organizations [--workers N] [--check] (the owner role, after migrate_schemas --shared)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tenants.provisioning import template_ensure
from tenants.schema_migrations import SchemaResult, migration_target, organizations_migrate, schema_states


class Command(BaseCommand):
    help = ("Migrate every organization's schema: skip those already at the target (one query reads them all), "
            "migrate the rest in parallel, report failures and go on. Rerun to retry the failed ones. "
            "Run with DATABASE_URL set to the owner role, after `migrate_schemas --shared`.")

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=settings.MIGRATION_WORKERS,
                            help="Processes migrating schemas (default: the MIGRATION_WORKERS setting).")
        parser.add_argument("--check", action="store_true",
                            help="Migrate nothing; exit non-zero if any schema is behind, listing them.")

    def handle(self, *args, workers, check, verbosity, **options):
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if check:
            started = time.perf_counter()
            behind = [state for state in schema_states(migration_target()) if state.missing]
            for state in behind:
                self.stdout.write(f"{state.schema}: {len(state.missing)} to apply, from {state.missing[0]}")
            if behind:
                raise CommandError(f"{len(behind)} organization schemas are behind.")
            self.stdout.write(f"Every organization schema is at the target ({time.perf_counter() - started:.2f}s).")
            return

        def report(result: SchemaResult, done: int, behind: int) -> None:
            if result.error:
                self.stderr.write(f"[{done}/{behind}] FAILED {result.schema}: {result.error}")
            elif verbosity >= 2 or (verbosity >= 1 and (done == behind or done % max(1, behind // 20) == 0)):
                self.stdout.write(f"[{done}/{behind}] {result.schema} migrated in {result.seconds:.2f}s")
            if verbosity >= 3 and result.output:
                self.stdout.write(result.output)

        run = organizations_migrate(workers=workers, verbosity=max(0, verbosity - 2), report=report)
        summary = (f"{len(run.at_target) + len(run.migrated) + len(run.failed)} organization schemas: "
                   f"{len(run.at_target)} already at the target, {len(run.migrated)} migrated, "
                   f"{len(run.failed)} failed, in {run.seconds:.1f}s ({workers} workers).")
        if run.failed:
            self.stderr.write(summary)
            failed = ", ".join(sorted(result.schema for result in run.failed))
            raise CommandError(f"{len(run.failed)} schemas failed (run again to retry them): {failed}")
        self.stdout.write(self.style.SUCCESS(summary))
        # New organizations are cloned from the template schema: bring it to these migrations now rather than
        # in the first creation after the deploy.
        self.stdout.write(f"Template schema: {template_ensure()}.")
