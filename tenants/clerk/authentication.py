"""From a Clerk session token, or the Django session it opened, to a user, an organization and a role.

The signed token is the authority on membership: users and memberships it names are created just in time
if Clerk's webhook has not arrived yet. Deletions seen by webhook win over a token that has not expired:
a deleted user is refused at once, and a removed membership is refused unless the token was issued after
the removal (the user was added back and the webhook is late).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from tenants import cache as tenant_cache
from tenants import services
from tenants.clerk.tokens import ClerkTokenVerifier, SessionClaims
from tenants.models import MembershipStatus, Organization, OrganizationMember, OrganizationRole, User
from tenants.rls.binding import bind_organization

logger = logging.getLogger(__name__)


class AccessDenied(Exception):
    """Authenticated, but not allowed in (no organization, inactive, removed): a 403."""


@dataclass(frozen=True)
class PortalIdentity:
    user: User
    organization: Organization
    membership: OrganizationMember

    @property
    def is_admin(self) -> bool:
        return self.membership.role == OrganizationRole.ADMIN


def portal_role(clerk_role: str | None) -> str:
    """Clerk's admin maps to admin; member and every custom role fall back to member."""
    return OrganizationRole.ADMIN if clerk_role == "admin" else OrganizationRole.MEMBER


@functools.cache
def verifier() -> ClerkTokenVerifier:
    if settings.CLERK_JWT_KEY or settings.CLERK_JWKS_URL:
        return ClerkTokenVerifier(
            jwt_key_pem=settings.CLERK_JWT_KEY or None,
            jwks_url=settings.CLERK_JWKS_URL or None,
            authorized_parties=settings.CLERK_AUTHORIZED_PARTIES,
            leeway_seconds=settings.CLERK_LEEWAY_SECONDS,
            jwks_refetch_interval_seconds=settings.CLERK_JWKS_REFETCH_SECONDS,
            jwks_store=tenant_cache.SharedJwks(settings.CLERK_JWKS_URL) if settings.CLERK_JWKS_URL else None,
        )
    if settings.DEV_SIGN_IN_ENABLED:
        from tenants.clerk.dev_sign_in import dev_signing_key

        return ClerkTokenVerifier(
            jwt_key_pem=dev_signing_key().public_pem(), authorized_parties=settings.CLERK_AUTHORIZED_PARTIES
        )
    raise AccessDenied("Clerk is not configured: set CLERK_JWT_KEY or CLERK_JWKS_URL.")


def active_organization(*, clerk_org_id: str | None = None, pk: str | None = None) -> Organization:
    if not clerk_org_id and not pk:
        raise AccessDenied("No active organization: choose one in Clerk.")
    return require_active(tenant_cache.organization_get(clerk_org_id=clerk_org_id, pk=pk))


def require_active(organization: Organization | None) -> Organization:
    # Cached (tenants/cache.py); deactivation forgets it, so an inactive organization is refused at once.
    if organization is None or not organization.is_active:
        raise AccessDenied("This organization does not exist or is not active.")
    return organization


def organization_and_cached_identity(lookups: tenant_cache.SignInLookups, clerk_user_id: str | None, *,
                                     clerk_org_id: str | None = None, pk: str | None = None,
                                     ) -> tuple[Organization, tenant_cache.CachedIdentity | None]:
    """The active organization and the cached "let in" answer: what the sign-in lookups found, else each read on
    its own (the database answers a miss)."""
    if lookups.organization is not None:
        return require_active(lookups.organization), lookups.identity
    organization = active_organization(clerk_org_id=clerk_org_id, pk=pk)
    return organization, tenant_cache.identity_get(organization, clerk_user_id)


def identity_from_claims(claims: SessionClaims, lookups: tenant_cache.SignInLookups) -> PortalIdentity:
    """The identity a verified token speaks for; ``lookups`` is what the cache already answered for it."""
    organization, cached = organization_and_cached_identity(lookups, claims.user_id,
                                                            clerk_org_id=claims.organization_id)
    if cached is not None and token_agrees(cached.membership, claims):
        return PortalIdentity(user=cached.user, organization=organization, membership=cached.membership)
    # get_or_create: a new user's first requests often arrive together.
    user, created = User.objects.get_or_create(clerk_user_id=claims.user_id, defaults={"username": claims.user_id})
    if created:
        logger.info("user created just in time clerk_user_id=%s", claims.user_id)
    if user.deleted_at or not user.is_active:
        raise AccessDenied("This user has been removed.")
    with bind_organization(organization):
        membership = membership_from_claims(organization, user, claims)
    tenant_cache.identity_store(organization, user, membership)
    return PortalIdentity(user=user, organization=organization, membership=membership)


def token_agrees(membership: OrganizationMember, claims: SessionClaims) -> bool:
    """The active membership stands as it is for this token: a role change recorded after the token was issued
    wins, else the token's role is the one held. Otherwise membership_from_claims writes (through the database,
    never from a cached membership)."""
    if membership.status != MembershipStatus.ACTIVE:
        return False
    if membership.role_changed_at is not None and claims.issued_at <= membership.role_changed_at:
        return True
    return (membership.role, membership.clerk_role) == (portal_role(claims.organization_role),
                                                        claims.organization_role or "")


def membership_from_claims(organization: Organization, user: User, claims: SessionClaims) -> OrganizationMember:
    """The membership the token vouches for, created or changed (audited) when it is news.

    A token is authority only for what happened before it was issued: a removal or a role change recorded
    after its ``iat`` (by webhook) wins, so a token minted before a demotion cannot restore the old role.
    """
    role, clerk_role = portal_role(claims.organization_role), claims.organization_role or ""
    membership = OrganizationMember.objects.filter(organization=organization, user=user).first()
    if membership is not None and membership.status == MembershipStatus.REMOVED:
        if membership.removed_at is None or claims.issued_at <= membership.removed_at:
            raise AccessDenied("This membership has been removed.")
    elif membership is not None and token_agrees(membership, claims):
        return membership
    if membership is None:
        logger.info("membership created just in time organization_id=%s user=%s", organization.pk, user.pk)
    return services.membership_upsert(
        organization=organization, user=user, role=role, clerk_role=clerk_role, role_changed_at=claims.issued_at,
        actor=user, actor_label="clerk-token",
    )


def identity_from_session(user: User, organization_pk: str, lookups: tenant_cache.SignInLookups) -> PortalIdentity:
    """Re-check, on every request, what the session was opened with: webhooks may have removed it since.
    ``lookups`` is what the cache already answered for the session (tenant_cache.session_lookups)."""
    if not user.is_authenticated or user.deleted_at or not user.is_active:
        raise AccessDenied("This user has been removed.")
    organization, cached = organization_and_cached_identity(lookups, user.clerk_user_id, pk=organization_pk)
    if cached is not None and cached.membership.user_id == user.pk:
        cached.membership.user = user
        return PortalIdentity(user=user, organization=organization, membership=cached.membership)
    with bind_organization(organization):
        membership = OrganizationMember.objects.filter(
            organization=organization, user=user, status=MembershipStatus.ACTIVE
        ).first()
    if membership is None:
        raise AccessDenied("This membership has been removed.")
    tenant_cache.identity_store(organization, user, membership)
    return PortalIdentity(user=user, organization=organization, membership=membership)


def session_is_idle(last_seen_iso: str | None) -> bool:
    if not last_seen_iso:
        return True
    last_seen = datetime.fromisoformat(last_seen_iso)
    return timezone.now() - last_seen > timedelta(seconds=settings.SESSION_IDLE_TIMEOUT_SECONDS)
