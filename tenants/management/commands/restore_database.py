"""python manage.py restore_database FILE --into NEW_DATABASE — restore a backup_database dump."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from routiq.backup import BackupError, restore_database


class Command(BaseCommand):
    help = ("Restore FILE (from backup_database) into a new database on DATABASE_ADMIN_URL's server, whose roles "
            "exist (setup_database). Then point DATABASE_URL and friends at it.")

    def add_arguments(self, parser):
        parser.add_argument("dump", type=Path)
        parser.add_argument("--into", required=True, help="name of the new database to create")

    def handle(self, *args, dump, into, **options):
        admin_url = os.environ.get("DATABASE_ADMIN_URL")
        if not admin_url:
            raise CommandError("Set DATABASE_ADMIN_URL (a superuser of the target server).")
        if not dump.exists():
            raise CommandError(f"{dump} does not exist.")
        try:
            restore_database(admin_url=admin_url, database=into, dump=dump)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Restored {dump} into database {into}"))
        # The cache holds the old database's answers (memberships, figures) for up to their TTLs.
        self.stdout.write("When pointing the processes at it, bump CACHE_KEY_VERSION so no cached answer outlives "
                          "the switch.")
