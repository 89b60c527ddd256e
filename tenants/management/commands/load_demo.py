"""Create the demo organizations and staff, point them at Cliniko and Chatwoot stand-ins and queue their syncs."""

from django.core.management.base import BaseCommand, CommandError

from routiq.demo import load_demo


class Command(BaseCommand):
    help = "Load demo organizations (development only). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument(
            "--cliniko", action="append", default=[], metavar="CLERK_ORG_ID=URL",
            help="Base URL of a Cliniko (stand-in) API for a demo organization; repeatable.",
        )
        parser.add_argument(
            "--chatwoot", action="append", default=[], metavar="CLERK_ORG_ID=URL",
            help="Base URL of a Chatwoot (stand-in) server for a demo organization; repeatable.",
        )

    def handle(self, *args, cliniko, chatwoot, **options):
        try:
            urls = dict(item.split("=", 1) for item in cliniko)
            chatwoot_urls = dict(item.split("=", 1) for item in chatwoot)
        except ValueError as exc:
            raise CommandError("--cliniko and --chatwoot take CLERK_ORG_ID=URL") from exc
        for organization in load_demo(cliniko_urls=urls, chatwoot_urls=chatwoot_urls):
            self.stdout.write(f"Demo organization ready: {organization.name} ({organization.clerk_org_id})")
