"""Writes for organizations, users and memberships."""

from __future__ import annotations

import logging
import time

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from tenants.audit import audit_record
from tenants.models import MembershipStatus, Organization, OrganizationMember, User
from tenants.rls.binding import bind_organization, platform_access

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



def organization_deactivate(*, organization: Organization, actor: User | None = None, actor_label: str = "") -> None:
    """Deactivate: nobody can sign in to or bind it any more. Its schema and data stay (never dropped)."""
    if not organization.is_active:
        return
    with transaction.atomic():
        # Audited first: binding (which the audit row's RLS check needs) refuses inactive organizations.
        audit_record(action="organization.deactivated", organization=organization, actor=actor,
                     actor_label=actor_label, object_type="organization", object_id=organization.pk)
        organization.is_active = False
        organization.save(update_fields=["is_active", "updated_at"])


def user_upsert_from_clerk(
    *, clerk_user_id: str, email: str = "", first_name: str = "", last_name: str = "", only_if_missing: bool = False
) -> User:
    """Create or refresh a Clerk user. ``only_if_missing`` keeps richer data from user.* events."""
    user = User.objects.filter(clerk_user_id=clerk_user_id).first()
    if user is None:
        return User.objects.create(
            username=clerk_user_id, clerk_user_id=clerk_user_id, email=email, first_name=first_name,
            last_name=last_name,
        )
    if not only_if_missing and (user.email, user.first_name, user.last_name) != (email, first_name, last_name):
        user.email, user.first_name, user.last_name = email, first_name, last_name
        user.save(update_fields=["email", "first_name", "last_name", "updated_at"])
    return user


def user_delete(*, user: User, actor_label: str = "") -> None:
    """Clerk deleted the user: refuse them from now on and end every membership (rows are kept)."""
    now = timezone.now()
    with transaction.atomic():
        user.deleted_at, user.is_active = now, False
        user.save(update_fields=["deleted_at", "is_active", "updated_at"])
        # Which clinics the user belongs to is a cross-organization question: the platform door answers it.
        with platform_access("user deleted: end memberships"):
            organizations = list(Organization.objects.filter(members__user=user, is_active=True).distinct())
        for organization in organizations:
            with bind_organization(organization):
                for membership in OrganizationMember.objects.filter(user=user, status=MembershipStatus.ACTIVE):
                    membership_remove(membership=membership, actor_label=actor_label, when=now)


def membership_upsert(
    *, organization: Organization, user: User, role: str, clerk_role: str = "", clerk_membership_id: str | None = None,
    actor: User | None = None, actor_label: str = "",
) -> OrganizationMember:
    with transaction.atomic(), bind_organization(organization):
        membership = OrganizationMember.objects.filter(organization=organization, user=user).first()
        before = None if membership is None else {"role": membership.role, "status": membership.status}
        if membership is None:
            membership = OrganizationMember(organization=organization, user=user)
        membership.role, membership.clerk_role, membership.status = role, clerk_role, MembershipStatus.ACTIVE
        membership.removed_at = None
        membership.clerk_membership_id = clerk_membership_id or membership.clerk_membership_id
        after = {"role": membership.role, "status": membership.status}
        if before != after:
            membership.save()
            audit_record(
                action="membership.created" if before is None else "membership.updated", organization=organization,
                actor=actor, actor_label=actor_label, object_type="membership", object_id=membership.pk,
                changes={"user": user.clerk_user_id or str(user.pk), "before": before, "after": after},
            )
    return membership


def membership_remove(
    *, membership: OrganizationMember, when, actor: User | None = None, actor_label: str = ""
) -> None:
    """Removed memberships are kept with their time, so a token issued before it is refused (authentication)."""
    with transaction.atomic():
        membership.status, membership.removed_at = MembershipStatus.REMOVED, when
        membership.save(update_fields=["status", "removed_at", "updated_at"])
        audit_record(
            action="membership.removed", organization=membership.organization, actor=actor, actor_label=actor_label,
            object_type="membership", object_id=membership.pk,
            changes={"user": membership.user.clerk_user_id or str(membership.user_id)},
        )
