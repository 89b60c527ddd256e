"""python manage.py create_demo_organizations --count 1000 [--patients 3] [--workers N] (as the owner role)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tenants.provisioning import demo_organizations_create


class Command(BaseCommand):
    help = ("Create N demo organizations with a few patients each: the first schema by migrations, the others "
            "cloned from it in parallel (tenants/provisioning.py). Run with DATABASE_URL set to the owner role.")

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--patients", type=int, default=3, help="Contacts per organization.")
        parser.add_argument("--workers", type=int, default=settings.MIGRATION_WORKERS,
                            help="Processes cloning schemas (default: the MIGRATION_WORKERS setting).")

    def handle(self, *args, count, patients, workers, verbosity, **options):
        if count < 1 or workers < 1 or patients < 0:
            raise CommandError("--count and --workers must be at least 1, --patients at least 0.")
        started = time.perf_counter()
        step = max(1, count // 20)

        def progress(done: int, total: int) -> None:
            if verbosity >= 1 and (done == total or done // step != (done - 1) // step or done == 1):
                self.stdout.write(f"[{done}/{total}] {time.perf_counter() - started:.1f}s")

        created = demo_organizations_create(count=count, patients=patients, workers=workers, progress=progress)
        seconds = time.perf_counter() - started
        self.stdout.write(self.style.SUCCESS(
            f"Created {len(created)} demo organizations in {seconds:.1f}s ({seconds / len(created):.3f}s each, "
            f"{workers} workers)"))
