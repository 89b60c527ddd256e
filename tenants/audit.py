"""Write audit rows. Call inside the transaction of the change being recorded; never pass a secret."""

from __future__ import annotations

from typing import Any

from tenants.models import AuditLog, Organization, User
from tenants.rls.binding import bind_organization, bound_organization_id


def audit_record(
    *,
    action: str,
    organization: Organization | None,
    actor: User | None = None,
    actor_label: str = "",
    object_type: str = "",
    object_id: Any = "",
    changes: dict | None = None,
    request=None,
) -> AuditLog:
    """Record one event for ``organization`` (binding it if the caller has not, so RLS admits the row)."""
    fields = dict(
        organization=organization,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=actor_label,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        changes=changes or {},
        **request_metadata(request),
    )
    if organization is None or bound_organization_id() == str(organization.pk):
        return AuditLog.objects.create(**fields)
    with bind_organization(organization):
        return AuditLog.objects.create(**fields)


def request_metadata(request) -> dict:
    if request is None:
        return {}
    return {
        "ip_address": request.META.get("REMOTE_ADDR") or None,
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:500],
    }
