"""python manage.py create_organization --name "Clinic" --clerk-org-id org_… (run as the owner role)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from tenants.models import Organization
from tenants.services import organization_create


class Command(BaseCommand):
    help = "Create an organization and provision its schema. Run with DATABASE_URL set to the owner role."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--clerk-org-id", required=True)
        parser.add_argument("--slug")
        parser.add_argument("--country", default="AU", help="ISO 3166 code, the default region for phones.")

    def handle(self, *args, name, clerk_org_id, slug, country, **options):
        if Organization.objects.filter(clerk_org_id=clerk_org_id).exists():
            raise CommandError(f"An organization with Clerk id {clerk_org_id} already exists.")
        started = time.perf_counter()
        try:
            organization = organization_create(name=name, clerk_org_id=clerk_org_id, slug=slug, country=country)
        except DatabaseError as exc:
            raise CommandError(f"Could not create the organization (is DATABASE_URL the owner role?): {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Created {organization.name} id={organization.pk} schema={organization.schema_name} "
                f"in {time.perf_counter() - started:.2f}s"
            )
        )
