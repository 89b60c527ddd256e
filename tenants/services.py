"""Writes for organizations, users and memberships."""

from __future__ import annotations

import logging
import time

from django.db import transaction
from django.utils.text import slugify

from tenants.audit import audit_record
from tenants.models import Organization, User

logger = logging.getLogger(__name__)


def schema_name_for(organization: Organization) -> str:
    # Derived from the immutable id, not the name: renaming a clinic never renames its schema.
    return f"org_{organization.pk.hex}"


def unique_slug(name: str) -> str:
    base = slugify(name)[:80] or "clinic"
    slug, suffix = base, 2
    while Organization.objects.filter(slug=slug).exists():
        slug, suffix = f"{base}-{suffix}", suffix + 1
    return slug


def organization_create(
    *, name: str, clerk_org_id: str, slug: str | None = None, country: str = "AU", actor: User | None = None,
    actor_label: str = "system",
) -> Organization:
    """Create an organization and its schema (migrated, RLS forced). Needs the owner database role.

    One transaction: if a migration of the new schema fails, neither the row nor the schema remains.
    """
    started = time.perf_counter()
    with transaction.atomic():
        organization = Organization(
            name=name, clerk_org_id=clerk_org_id, slug=slug or unique_slug(name), country=country
        )
        organization.schema_name = schema_name_for(organization)
        organization.save(verbosity=0)
        audit_record(
            action="organization.created",
            organization=organization,
            actor=actor,
            actor_label=actor_label,
            object_type="organization",
            object_id=organization.pk,
            changes={"name": name, "clerk_org_id": clerk_org_id, "schema_name": organization.schema_name},
        )
    logger.info(
        "organization created organization_id=%s schema=%s seconds=%.3f",
        organization.pk, organization.schema_name, time.perf_counter() - started,
    )
    return organization
