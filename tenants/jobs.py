"""RQ entry points for organizations. Provisioning runs on the `provisioning` queue, whose worker is the owner role."""

from __future__ import annotations

import logging

from django.db import connection, transaction

from tenants.models import Organization
from tenants.provisioning import current_template, template_ensure
from tenants.services import organization_create

logger = logging.getLogger(__name__)


def provision_organization(clerk_org_id: str, name: str, slug: str | None = None) -> str:
    """Create the organization and its schema for a Clerk organization. Idempotent: a retry finds it done.

    Two workers may hold the same organization's job (a redelivered event, an RQ retry while a slow run is
    still going): a transaction-scoped advisory lock on the Clerk id makes the second wait for the first and
    then find the organization there, instead of both inserting it (seen as a deadlock on the slug index).
    """
    # Before the transaction: a stale template (a new month, a deploy) can only be rebuilt outside one, and
    # inside it organization_create would migrate the schema instead, several times slower.
    template = current_template()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('tenants.provision'), hashtext(%s))",
                           [clerk_org_id])
        existing = Organization.objects.filter(clerk_org_id=clerk_org_id).first()
        if existing is not None:
            logger.info("provisioning skipped: exists clerk_org_id=%s", clerk_org_id)
            return str(existing.pk)
        if slug and Organization.objects.filter(slug=slug).exists():
            slug = None
        organization = organization_create(name=name, clerk_org_id=clerk_org_id, slug=slug,
                                           actor_label="clerk-webhook", template=template)
    return str(organization.pk)


def refresh_schema_template() -> str:
    """Hourly, on the provisioning queue (owner role): rebuild the template schema when a new month or a deploy
    made it stale, so that no clinic's sign-up waits for the rebuild. 'current', 'rebuilt' or 'failed'."""
    outcome = template_ensure()
    logger.info("schema template %s", outcome)
    return outcome
