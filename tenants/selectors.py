"""Reads of public-schema records that several pages share."""

from __future__ import annotations

from tenants.models import Organization, SyncLog


def last_sync(*, organization: Organization, provider: str, resource: str | None = None) -> SyncLog | None:
    """The newest sync run of the organization for a provider (and one resource, if given)."""
    runs = SyncLog.objects.filter(organization=organization, provider=provider)
    if resource is not None:
        runs = runs.filter(resource=resource)
    return runs.order_by("-started_at").first()
