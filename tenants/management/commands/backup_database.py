"""python manage.py backup_database FILE — a pg_dump of the whole database (needs DATABASE_ADMIN_URL)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from routiq.backup import BackupError, backup_database, backup_url


class Command(BaseCommand):
    help = ("Dump the whole database (custom format) to FILE. Connects as DATABASE_ADMIN_URL: FORCE RLS hides "
            "every row from the owner and app roles, so a dump needs a role that bypasses RLS.")

    def add_arguments(self, parser):
        parser.add_argument("output", type=Path)

    def handle(self, *args, output, **options):
        try:
            backup_database(url=backup_url(), output=output)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Backed up to {output} ({output.stat().st_size:,} bytes)"))
