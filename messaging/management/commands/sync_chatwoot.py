"""python manage.py sync_chatwoot <clerk_org_id> [--resource contacts|conversations|messages] [--full] [--now]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from messaging.jobs import enqueue_chatwoot_sync
from messaging.sync import RESOURCES, chatwoot_client, sync_chatwoot
from routiq.foreground_sync import run_with_progress
from tenants.models import Organization
from tenants.rls.binding import bind_organization


class Command(BaseCommand):
    help = "Enqueue (or, with --now, run in the foreground) a Chatwoot sync for one organization."

    def add_arguments(self, parser):
        parser.add_argument("clerk_org_id")
        parser.add_argument("--resource", choices=[*RESOURCES, "all"], default="all")
        parser.add_argument("--full", action="store_true", help="Ignore the checkpoints and fetch everything.")
        parser.add_argument("--now", action="store_true", help="Run here with a progress bar instead of enqueuing.")

    def handle(self, *args, clerk_org_id, resource, full, now, **options):
        organization = Organization.objects.filter(clerk_org_id=clerk_org_id, is_active=True).first()
        if organization is None:
            raise CommandError(f"No active organization with Clerk id {clerk_org_id}.")
        if not now:
            if resource != "all":
                raise CommandError("--resource needs --now: queued runs go in order (contacts, conversations, "
                                   "messages).")
            enqueue_chatwoot_sync(organization, full=full)
            self.stdout.write(f"Enqueued the Chatwoot sync for {organization.name} on queue 'sync'.")
            return
        with bind_organization(organization):
            client = chatwoot_client(organization)
            if client is None:
                raise CommandError("This organization has no complete Chatwoot credential (token, base URL, "
                                   "account id).")
            for name in RESOURCES if resource == "all" else [resource]:
                self.run_one(organization, name, client, full)

    def run_one(self, organization, resource, client, full):
        log = run_with_progress(self, resource=resource, run=lambda on_page: sync_chatwoot(
            organization=organization, resource=resource, client=client, full=full, on_page=on_page))
        self.stdout.write(self.style.SUCCESS(
            f"{resource}: fetched {log.fetched_count}, created {log.created_count}, updated {log.updated_count}, "
            f"skipped {log.failed_count} unreadable"))
