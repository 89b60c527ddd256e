"""python manage.py restore_archive <manifest.json>: put an archived month back (messaging/retention.py)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from messaging.retention import ArchiveError, restore_messages_archive


class Command(BaseCommand):
    help = "Restore a month of messages archived by the retention job, from its manifest (the .json beside it)."

    def add_arguments(self, parser):
        parser.add_argument("manifest", type=Path, help="…/<schema>/messages_yYYYYmMM.json under MESSAGE_ARCHIVE_DIR")

    def handle(self, *args, manifest: Path, **options):
        if not manifest.is_file():
            raise CommandError(f"{manifest}: no such file")
        try:
            organization, rows = restore_messages_archive(manifest)
        except ArchiveError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"restored {rows} messages of {organization.name} from {manifest}")
