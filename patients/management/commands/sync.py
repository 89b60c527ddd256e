"""python manage.py sync <clerk_org_id> cliniko [--resource patients|appointments] [--full] [--now]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from patients.jobs import cliniko_client_for, enqueue_cliniko_sync, enqueue_organization_sync
from patients.sync import RESOURCES, sync_cliniko
from routiq.foreground_sync import run_with_progress
from tenants.credentials import credential_get
from tenants.models import Organization
from tenants.rls.binding import bind_organization


class Command(BaseCommand):
    help = "Enqueue (or, with --now, run in the foreground) a Cliniko sync for one organization."

    def add_arguments(self, parser):
        parser.add_argument("clerk_org_id")
        parser.add_argument("provider", choices=["cliniko"])
        parser.add_argument("--resource", choices=[*RESOURCES, "all"], default="all")
        parser.add_argument("--full", action="store_true", help="Ignore the checkpoints and fetch everything.")
        parser.add_argument("--now", action="store_true", help="Run here with a progress bar instead of enqueuing.")

    def handle(self, *args, clerk_org_id, provider, resource, full, now, **options):
        organization = Organization.objects.filter(clerk_org_id=clerk_org_id, is_active=True).first()
        if organization is None:
            raise CommandError(f"No active organization with Clerk id {clerk_org_id}.")
        resources = list(RESOURCES) if resource == "all" else [resource]
        if not now:
            if resource == "all":
                enqueue_organization_sync(organization, full=full)
            else:
                enqueue_cliniko_sync(organization, resource, full=full)
            self.stdout.write(f"Enqueued {', '.join(resources)} sync for {organization.name} on queue 'sync'.")
            return
        with bind_organization(organization):
            credential = credential_get(organization=organization, provider="cliniko")
            if credential is None:
                raise CommandError("This organization has no Cliniko credential (manage.py set_credential).")
            client = cliniko_client_for(credential)
            for name in resources:
                self.run_one(organization, name, client, full)

    def run_one(self, organization, resource, client, full):
        log = run_with_progress(self, resource=resource, run=lambda on_page: sync_cliniko(
            organization=organization, resource=resource, client=client, full=full, on_page=on_page))
        self.stdout.write(self.style.SUCCESS(
            f"{resource}: fetched {log.fetched_count}, created {log.created_count}, updated {log.updated_count}, "
            f"archived/cancelled/deleted {log.archived_count}, skipped {log.failed_count} unreadable"
        ))
