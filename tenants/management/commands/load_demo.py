"""Create the demo organizations, their staff and patients (development only; run as the owner role)."""

from django.core.management.base import BaseCommand

from routiq.demo import load_demo


class Command(BaseCommand):
    help = "Load demo organizations, staff and patients. Idempotent."

    def handle(self, *args, **options):
        for organization in load_demo():
            self.stdout.write(f"Demo organization ready: {organization.name} ({organization.clerk_org_id})")
