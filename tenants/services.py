"""Writes for organizations, users and memberships."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from importlib import import_module

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from django.utils.text import slugify

from tenants import cache as tenant_cache
from tenants.audit import audit_record
from tenants.models import (
    EndedClerkSession,
    MembershipStatus,
    Organization,
    OrganizationMember,
    PortalSession,
    User,
)
from tenants.provisioning import SchemaTemplate, clone_schema, current_template
from tenants.rls.binding import bind_organization, platform_access, write_alias

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
    actor_label: str = "system", template: SchemaTemplate | None = None, migrate: bool = False,
) -> Organization:
    """Create an organization and its schema (RLS forced). Needs the owner database role.

    The schema is a clone of ``template``, by default the database's template schema
    (tenants.provisioning.current_template: migrated to the code's migrations this month), with the catalog a
    migrated schema has, in a fraction of the time. ``migrate``, or no usable template, migrates it instead.
    One transaction: if the schema cannot be made, neither the row nor the schema remains.
    """
    started = time.perf_counter()
    if template is None and not migrate:
        template = current_template(alias=write_alias())
    with transaction.atomic(using=write_alias()):
        organization = Organization(
            name=name, clerk_org_id=clerk_org_id, slug=slug or unique_slug(name), country=country
        )
        organization.schema_name = schema_name_for(organization)
        if template is not None:
            # The schema first: its foreign keys lock public.organizations, which must not hold our new row yet.
            clone_schema(template, organization.schema_name, alias=write_alias())
            organization.auto_create_schema = False
        organization.save(verbosity=0)  # type: ignore[call-arg]  # TenantMixin.save takes it (no stubs)
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
        "organization created organization_id=%s schema=%s seconds=%.3f by=%s",
        organization.pk, organization.schema_name, time.perf_counter() - started,
        "migrations" if template is None else "clone",
    )
    return organization



def organization_rename(*, organization: Organization, name: str, actor: User | None = None,
                        actor_label: str = "") -> None:
    if organization.name == name:
        return
    with transaction.atomic(using=write_alias()):
        before = organization.name
        organization.name = name
        organization.save(update_fields=["name", "updated_at"])
        tenant_cache.organization_forget(organization)
        audit_record(action="organization.updated", organization=organization, actor=actor, actor_label=actor_label,
                     object_type="organization", object_id=organization.pk, changes={"name": [before, name]})


def organization_deactivate(*, organization: Organization, actor: User | None = None, actor_label: str = "") -> None:
    """Deactivate: nobody can sign in to or bind it any more. Its schema and data stay (never dropped)."""
    if not organization.is_active:
        return
    with transaction.atomic(using=write_alias()):
        # Audited first: binding (which the audit row's RLS check needs) refuses inactive organizations.
        audit_record(action="organization.deactivated", organization=organization, actor=actor,
                     actor_label=actor_label, object_type="organization", object_id=organization.pk)
        organization.is_active = False
        organization.save(update_fields=["is_active", "updated_at"])
        tenant_cache.organization_forget(organization)


def user_upsert_from_clerk(
    *, clerk_user_id: str, email: str = "", first_name: str = "", last_name: str = "", only_if_missing: bool = False
) -> User:
    """Create or refresh a Clerk user. ``only_if_missing`` keeps richer data from user.* events."""
    # get_or_create: a sign-in and a webhook (or two sign-ins) may create the same user at once.
    user, created = User.objects.get_or_create(clerk_user_id=clerk_user_id, defaults={
        "username": clerk_user_id, "email": email, "first_name": first_name, "last_name": last_name})
    if created:
        return user
    if not only_if_missing and (user.email, user.first_name, user.last_name) != (email, first_name, last_name):
        user.email, user.first_name, user.last_name = email, first_name, last_name
        user.save(update_fields=["email", "first_name", "last_name", "updated_at"])
        tenant_cache.user_forget(user)
    return user


def user_delete(*, user: User, actor_label: str = "") -> None:
    """Clerk deleted the user: refuse them from now on and end every membership (rows are kept)."""
    now = timezone.now()
    with transaction.atomic(using=write_alias()):
        user.deleted_at, user.is_active = now, False
        user.save(update_fields=["deleted_at", "is_active", "updated_at"])
        tenant_cache.user_forget(user)
        # Which clinics the user belongs to is a cross-organization question: the platform door answers it.
        with platform_access("user deleted: end memberships"):
            organizations = list(Organization.objects.filter(members__user=user, is_active=True).distinct())
        for organization in organizations:
            with bind_organization(organization):
                for membership in OrganizationMember.objects.filter(user=user, status=MembershipStatus.ACTIVE):
                    membership_remove(membership=membership, actor_label=actor_label, when=now)


def membership_upsert(
    *, organization: Organization, user: User, role: str, clerk_role: str = "", clerk_membership_id: str | None = None,
    role_changed_at: datetime | None = None, actor: User | None = None, actor_label: str = "",
) -> OrganizationMember:
    """Create, re-activate or change a membership, audited. ``role_changed_at`` is when the authority for the
    role was issued (a webhook's arrival, a token's iat); it is recorded when the role changes so that an older
    token cannot change it back (authentication.membership_from_claims)."""
    with bind_organization(organization), transaction.atomic(using=write_alias()):
        # Two first requests of a new member arrive together (the browser loads a page and its htmx parts):
        # one upsert at a time per (organization, user), so the second finds the first's row.
        with connections[write_alias()].cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                           [f"membership:{organization.pk}:{user.pk}"])
        membership = OrganizationMember.objects.filter(organization=organization, user=user).first()
        before = None if membership is None else {"role": membership.role, "status": membership.status}
        if membership is None:
            membership = OrganizationMember(organization=organization, user=user)
        if before is None or before["role"] != role:
            membership.role_changed_at = role_changed_at or timezone.now()
        membership.role, membership.status = role, MembershipStatus.ACTIVE
        membership.removed_at = None
        membership.clerk_membership_id = clerk_membership_id or membership.clerk_membership_id
        after = {"role": membership.role, "status": membership.status}
        if before != after or membership.clerk_role != clerk_role:
            membership.clerk_role = clerk_role
            membership.save()
            tenant_cache.identity_forget(organization.pk, user)
        if before != after:
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
    with transaction.atomic(using=write_alias()):
        membership.status, membership.removed_at = MembershipStatus.REMOVED, when
        membership.save(update_fields=["status", "removed_at", "updated_at"])
        tenant_cache.identity_forget(membership.organization_id, membership.user)
        audit_record(
            action="membership.removed", organization=membership.organization, actor=actor, actor_label=actor_label,
            object_type="membership", object_id=membership.pk,
            changes={"user": membership.user.clerk_user_id or str(membership.user_id)},
        )


def _session_store():
    return import_module(settings.SESSION_ENGINE).SessionStore


def portal_session_record(*, session_key: str, clerk_session_id: str, user: User) -> None:
    """Remember which Django session a Clerk session opened, so Clerk ending it can end ours."""
    PortalSession.objects.get_or_create(session_key=session_key,
                                        defaults={"clerk_session_id": clerk_session_id, "user": user})


def clerk_session_end(*, clerk_session_id: str, reason: str, clerk_user_id: str = "", actor: User | None = None,
                      actor_label: str = "") -> int:
    """Clerk ended a session (or the user signed out): refuse its remaining tokens, delete the portal sessions
    it opened. Returns how many portal sessions ended."""
    with transaction.atomic(using=write_alias()):
        EndedClerkSession.objects.get_or_create(
            clerk_session_id=clerk_session_id, defaults={"clerk_user_id": clerk_user_id, "reason": reason}
        )
        tenant_cache.clerk_sessions_forget(clerk_session_id)
        return _end_portal_sessions(PortalSession.objects.filter(clerk_session_id=clerk_session_id), reason=reason,
                                    actor=actor, actor_label=actor_label)


def user_ban_set(*, user: User, banned: bool, actor_label: str = "") -> None:
    """Clerk banned (or unbanned) the user. A ban ends every portal session and refuses the user's tokens; an
    unban lets them in again unless Clerk deleted them."""
    active = not banned and user.deleted_at is None
    if user.is_active == active:
        if banned:  # a repeated ban still ends anything opened in between
            _end_user_sessions(user=user, reason="user-banned", actor_label=actor_label)
        return
    with transaction.atomic(using=write_alias()):
        user.is_active = active
        user.save(update_fields=["is_active", "updated_at"])
        tenant_cache.user_forget(user)
        with platform_access("user banned or unbanned: audit per organization"):
            organizations = list(Organization.objects.filter(members__user=user, is_active=True).distinct())
        for organization in organizations:
            audit_record(action="user.banned" if banned else "user.unbanned", organization=organization,
                         actor_label=actor_label, object_type="user", object_id=user.pk,
                         changes={"user": user.clerk_user_id or str(user.pk)})
        if banned:
            _end_user_sessions(user=user, reason="user-banned", actor_label=actor_label)


def _end_user_sessions(*, user: User, reason: str, actor_label: str) -> None:
    portal_sessions = PortalSession.objects.filter(user=user)
    clerk_session_ids = set(portal_sessions.values_list("clerk_session_id", flat=True))
    for clerk_session_id in clerk_session_ids:
        EndedClerkSession.objects.get_or_create(
            clerk_session_id=clerk_session_id, defaults={"clerk_user_id": user.clerk_user_id or "", "reason": reason}
        )
    tenant_cache.clerk_sessions_forget(*clerk_session_ids)
    _end_portal_sessions(portal_sessions, reason=reason, actor_label=actor_label)


def _end_portal_sessions(portal_sessions, *, reason: str, actor: User | None = None, actor_label: str = "") -> int:
    from tenants.clerk.middleware import SESSION_ORGANIZATION

    store, ended = _session_store(), 0
    for portal_session in list(portal_sessions.select_related("user")):
        session = store(session_key=portal_session.session_key)
        organization_pk = session.load().get(SESSION_ORGANIZATION)
        if session.exists(portal_session.session_key):
            session.delete(portal_session.session_key)
            ended += 1
            organization = Organization.objects.filter(pk=organization_pk, is_active=True).first()
            if organization is not None:
                audit_record(action="session.ended", organization=organization, actor=actor,
                             actor_label=actor_label, object_type="clerk_session",
                             object_id=portal_session.clerk_session_id,
                             changes={"reason": reason, "user": portal_session.user.clerk_user_id or ""})
        portal_session.delete()
    return ended
