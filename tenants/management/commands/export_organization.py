"""python manage.py export_organization CLERK_ORG_ID FILE.tar.gz — one clinic's data, as a file it can be given."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from routiq.backup import BackupError, backup_url, organization_export
from tenants.models import Organization


class Command(BaseCommand):
    help = ("Write one organization's schema (its patients, appointments, conversations, messages) and its rows "
            "in the public tables (members, credentials without secrets, sync and audit logs, invoices) to a "
            ".tar.gz. Connects as DATABASE_BACKUP_URL or DATABASE_ADMIN_URL.")

    def add_arguments(self, parser):
        parser.add_argument("clerk_org_id")
        parser.add_argument("output", type=Path)

    def handle(self, *args, clerk_org_id, output, **options):
        organization = Organization.objects.filter(clerk_org_id=clerk_org_id).first()
        if organization is None:
            raise CommandError(f"No organization with Clerk id {clerk_org_id}.")
        try:
            organization_export(organization=organization, url=backup_url(), output=output)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Exported {organization.name} to {output}"))
