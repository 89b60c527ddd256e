"""python manage.py restore_audit_archive <manifest.json>: put an archived month of audit logs back."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from routiq.archives import ArchiveError
from tenants.audit_archive import restore_audit_archive


class Command(BaseCommand):
    help = "Restore a month of audit logs archived by the audit-archival job, from its manifest (the .json beside it)."

    def add_arguments(self, parser):
        parser.add_argument("manifest", type=Path, help="…/audit_logs_yYYYYmMM.json under AUDIT_ARCHIVE_DIR")

    def handle(self, *args, manifest: Path, **options):
        if not manifest.is_file():
            raise CommandError(f"{manifest}: no such file")
        try:
            rows = restore_audit_archive(manifest)
        except ArchiveError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"restored {rows} audit log rows from {manifest}")
