"""The sign-in middleware's lookups, cached (routiq/cache.py): the organization, and a member's identity in it.

What is kept, per key:

- ``org:<id>:…:organization`` — the organization's row without its webhook token (a secret);
- ``lookup:…:clerk-org:<clerk org id>`` — that organization's id only. The row is then read from its own key
  and must carry the Clerk id asked for, else the database answers (so a stale mapping is harmless);
- ``org:<id>:…:identity:<clerk user id>`` — that user's row (without the password hash) and their *active*
  membership of that organization. Only the "let in" answer is cached: removals, demotions, deleted and banned
  users always go to the database (tenants.clerk.authentication), and the services that change any of these
  forget the key (organization_forget, identity_forget, user_forget);
- ``public:…:clerk-session:<clerk session id>`` — "this Clerk session has not ended". Public: a Clerk session
  spans its user's organizations and the marker holds nothing of any. Only "not ended" is cached; the services
  that end sessions forget it (clerk_sessions_forget), so a session's next token is refused at once.

A verified token's lookups (token_lookups) take two round trips in a process that has not seen its Clerk org id
yet: the lookup with the session state, then the organization and the member's identity. That request leaves a
hint (the organization id and schema: the organization's row must still carry the Clerk id), and from then on
the process checks the token in the statement that binds the connection instead (tenants/clerk/bound_read.py),
with no round trip to Redis at all. With a hint but no answer from that statement, one round trip here.

Values are rebuilt as the model instances ``from_db`` would make (``model_instance``); fields left out (secrets)
load on first use.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.db.models.base import ModelState

from routiq import cache
from tenants.models import EndedClerkSession, MembershipStatus, Organization, OrganizationMember, User
from tenants.rls.binding import bound_organization_id, platform_access, write_alias

# Secrets stay out of the cache; they load from the database when something reads them.
NOT_CACHED = {Organization: {"webhook_token"}, User: {"password"}, OrganizationMember: set()}


@functools.cache
def row_fields(model) -> tuple[str, ...]:
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname not in NOT_CACHED[model])


def _values(model, instance) -> dict:
    # The model is named: request.user is a lazy wrapper whose type is not the model.
    return {name: getattr(instance, name) for name in row_fields(model)}


@functools.cache
def _field_set(model) -> frozenset[str]:
    return frozenset(row_fields(model))


def model_instance(model, values: dict):
    """The instance ``from_db`` would build from these values, built the way it ends: attributes set directly and
    the state of a row loaded from the database. Three of these a request, and ``__init__``'s per-field
    descriptors were a fifth of what signing in cost. A field left out (a secret) is absent from ``__dict__``,
    which is what makes Django load a deferred field on first use."""
    instance = model.__new__(model)
    if values.keys() == _field_set(model):  # as read and written now (an older entry may lack a newer field)
        instance.__dict__.update(values)
    else:
        instance.__dict__.update((name, values[name]) for name in row_fields(model) if name in values)
    instance._state = ModelState()
    instance._state.adding, instance._state.db = False, DEFAULT_DB_ALIAS
    return instance


def clerk_organization_key(clerk_org_id: str) -> str:
    return cache.lookup_key("clerk-org", clerk_org_id)


def organization_key(organization_id) -> str:
    return cache.org_key(organization_id, "organization")


def identity_key(organization_id, clerk_user_id: str) -> str:
    return cache.org_key(organization_id, "identity", clerk_user_id)


def clerk_session_key(clerk_session_id: str) -> str:
    return cache.public_key("clerk-session", clerk_session_id)


# --- organizations ---------------------------------------------------------------------------------------

def organization_get(*, clerk_org_id: str | None = None, pk=None) -> Organization | None:
    """The *active* organization by Clerk id or by id, from the cache or the database; None if none is."""
    organization_id = pk or (cache.get(clerk_organization_key(clerk_org_id)) if clerk_org_id else None)
    if organization_id:
        cached = checked_organization(cache.get(organization_key(organization_id)), clerk_org_id)
        if cached is not None:
            return cached
    return organization_load(clerk_org_id=clerk_org_id, pk=pk)


def checked_organization(values: dict | None, clerk_org_id: str | None) -> Organization | None:
    # A stale Clerk-id mapping is harmless: the row must carry the Clerk id asked for.
    if values is None or (clerk_org_id is not None and values["clerk_org_id"] != clerk_org_id):
        return None
    return model_instance(Organization, values)


def organization_load(*, clerk_org_id: str | None = None, pk=None) -> Organization | None:
    """The active organization from the database, then cached."""
    lookup = {"clerk_org_id": clerk_org_id} if clerk_org_id else {"pk": pk}
    organization = Organization.objects.filter(**lookup).first()
    if organization is None or not organization.is_active:
        return None
    _hint_organization(organization)
    ttl = settings.CACHE_IDENTITY_TTL_SECONDS
    cache.add(organization_key(organization.pk), _values(Organization, organization), ttl)
    cache.add(clerk_organization_key(organization.clerk_org_id), str(organization.pk), ttl)
    return organization


def organization_forget(organization: Organization) -> None:
    """After any change to the organization's row (rename, deactivation, billing state, admin edits)."""
    cache.forget(organization_key(organization.pk), clerk_organization_key(organization.clerk_org_id),
                 using=write_alias())


# --- identities -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CachedIdentity:
    user: User
    membership: OrganizationMember


def identity_get(organization: Organization, clerk_user_id: str | None) -> CachedIdentity | None:
    if not clerk_user_id:
        return None
    return checked_identity(cache.get(identity_key(organization.pk, clerk_user_id)), organization, clerk_user_id)


_MEMBERSHIP_ORGANIZATION = OrganizationMember._meta.get_field("organization")
_MEMBERSHIP_USER = OrganizationMember._meta.get_field("user")


def checked_identity(entry: dict | None, organization: Organization, clerk_user_id: str) -> CachedIdentity | None:
    if entry is None:
        return None
    user, membership = model_instance(User, entry["user"]), model_instance(OrganizationMember, entry["membership"])
    if (user.clerk_user_id != clerk_user_id or membership.organization_id != organization.pk
            or not user.is_active or user.deleted_at is not None or membership.status != MembershipStatus.ACTIVE):
        return None
    # As select_related fills them (the descriptors' __set__ would ask the database router, every request).
    _MEMBERSHIP_ORGANIZATION.set_cached_value(membership, organization)
    _MEMBERSHIP_USER.set_cached_value(membership, user)
    return CachedIdentity(user=user, membership=membership)


def identity_store(organization: Organization, user: User, membership: OrganizationMember) -> None:
    """Cache a "let in" answer: an active user with an active membership of this organization."""
    if (not user.clerk_user_id or not user.is_active or user.deleted_at is not None
            or membership.status != MembershipStatus.ACTIVE or membership.organization_id != organization.pk
            or membership.user_id != user.pk):
        return
    entry = {"user": _values(User, user), "membership": _values(OrganizationMember, membership)}
    cache.add(identity_key(organization.pk, user.clerk_user_id), entry, settings.CACHE_IDENTITY_TTL_SECONDS)


def identity_forget(organization_id, user: User) -> None:
    """After a change to the user's membership of that organization (role, status, removal)."""
    if user.clerk_user_id:
        cache.forget(identity_key(organization_id, user.clerk_user_id), using=write_alias())


def user_forget(user: User) -> None:
    """After a change to the user's own row (deleted, banned, renamed, edited by an admin): every organization
    it has a membership row in (any status) may hold a copy."""
    if not user.clerk_user_id:
        return
    if bound_organization_id() is not None:
        # Bound, the membership query below would see one organization's rows only (RLS).
        raise RuntimeError("user_forget must run with no organization bound")
    with platform_access("user changed: forget its cached identities"):
        organization_ids = list(OrganizationMember.objects.filter(user=user).values_list("organization_id",
                                                                                         flat=True))
    cache.forget(*(identity_key(organization_id, user.clerk_user_id) for organization_id in organization_ids),
                 using=write_alias())


# --- a verified token's lookups, together -----------------------------------------------------------------

# Clerk org id -> (organization id, schema), as this process last read them. Which organization a Clerk id
# names never changes, nor its schema, and a wrong hint costs a miss, never a wrong answer (the organization's
# row must carry the Clerk id asked for), so it may be kept without invalidation; it saves the lookup's round
# trip on nearly every request.
@dataclass(frozen=True)
class OrganizationHint:
    organization_id: str
    schema_name: str


_organization_hints: dict[str, OrganizationHint] = {}
_HINTS_KEPT = 10_000  # far more organizations than a deployment has; bounded all the same


def organization_hint(clerk_org_id: str) -> OrganizationHint | None:
    return _organization_hints.get(clerk_org_id)


def forget_hints() -> None:
    """Forget every hint, as a new process starts (tests)."""
    _organization_hints.clear()


def forget_hint(clerk_org_id: str) -> None:
    _organization_hints.pop(clerk_org_id, None)


def _hint_organization(organization: Organization) -> None:
    if len(_organization_hints) >= _HINTS_KEPT:
        _organization_hints.clear()
    _organization_hints[organization.clerk_org_id] = OrganizationHint(str(organization.pk), organization.schema_name)


def _get_many(*keys: str | None) -> list[Any]:
    """cache.get_many of the keys given; None in the place of each key that is None (nothing to look up)."""
    present = [key for key in keys if key is not None]
    found = dict(zip(present, cache.get_many(*present), strict=True))
    return [None if key is None else found[key] for key in keys]


@dataclass(frozen=True)
class SignInLookups:
    """What the cache knows for a request's sign-in (a verified token or a portal session); each miss (not live,
    None) is for the database to answer."""
    clerk_session_id: str | None
    session_live: bool
    organization: Organization | None
    identity: CachedIdentity | None

    def session_ended(self) -> bool:
        """Clerk ended the session (revoked, banned, signed out). Only "not ended" is cached, and ending a session
        forgets it: a miss asks the database."""
        if not self.clerk_session_id or self.session_live:
            return False
        return clerk_session_ended_in_database(self.clerk_session_id)


def token_lookups(*, clerk_session_id: str | None, clerk_org_id: str | None, clerk_user_id: str) -> SignInLookups:
    """One round trip when warm, two while this process has no hint for the Clerk org id (see above). Each value
    is checked exactly as organization_get and identity_get check it."""
    session_key = clerk_session_key(clerk_session_id) if clerk_session_id else None
    hint = _organization_hints.get(clerk_org_id) if clerk_org_id else None
    organization_id = hint.organization_id if hint is not None else None
    if organization_id is None:
        organization_id, live = _get_many(clerk_organization_key(clerk_org_id) if clerk_org_id else None,
                                          session_key)
        values, entry = _get_many(*_organization_keys(organization_id, clerk_user_id))
    else:
        live, values, entry = _get_many(session_key, *_organization_keys(organization_id, clerk_user_id))
    return _answered(clerk_session_id, live, checked_organization(values, clerk_org_id), entry, clerk_user_id)


def session_lookups(*, clerk_session_id: str | None, organization_id: str, clerk_user_id: str | None) -> SignInLookups:
    """A portal session's lookups in one round trip: the organization it was opened for (its id is in the session),
    the member's identity and the Clerk session's state; each checked as token_lookups checks it."""
    session_key = clerk_session_key(clerk_session_id) if clerk_session_id else None
    member_key = identity_key(organization_id, clerk_user_id) if clerk_user_id else None
    live, values, entry = _get_many(session_key, organization_key(organization_id), member_key)
    return _answered(clerk_session_id, live, checked_organization(values, None), entry, clerk_user_id)


def _answered(clerk_session_id: str | None, live, organization: Organization | None, entry,
              clerk_user_id: str | None) -> SignInLookups:
    identity = None
    if organization is not None:
        _hint_organization(organization)
        if clerk_user_id:
            identity = checked_identity(entry, organization, clerk_user_id)
    return SignInLookups(clerk_session_id=clerk_session_id, session_live=live is not None, organization=organization,
                         identity=identity)


def _organization_keys(organization_id: str | None, clerk_user_id: str) -> tuple[str | None, str | None]:
    if not organization_id:
        return None, None
    return organization_key(organization_id), identity_key(organization_id, clerk_user_id)


# --- Clerk sessions ---------------------------------------------------------------------------------------

def clerk_session_ended_in_database(clerk_session_id: str) -> bool:
    """The database's answer; "not ended" is then cached (an ended session is refused from the database)."""
    if EndedClerkSession.objects.filter(clerk_session_id=clerk_session_id).exists():
        return True
    cache.add(clerk_session_key(clerk_session_id), True, settings.CACHE_IDENTITY_TTL_SECONDS)
    return False


def clerk_sessions_forget(*clerk_session_ids: str) -> None:
    """With every write of ended_clerk_sessions: the sessions' next tokens are refused even on a warm cache."""
    cache.forget(*(clerk_session_key(session_id) for session_id in clerk_session_ids if session_id),
                 using=write_alias())


# --- public values ----------------------------------------------------------------------------------------

class SharedJwks:
    """Clerk's JWKS document (public keys: no organization's data), shared by every process through the cache,
    so a new worker or one meeting a rotated key asks Redis before it asks Clerk (tenants.clerk.tokens)."""

    def __init__(self, jwks_url: str) -> None:
        self.key = cache.public_key("clerk-jwks", hashlib.sha256(jwks_url.encode()).hexdigest()[:16])

    def get(self):
        return cache.get(self.key)

    def put(self, document) -> None:
        cache.replace(self.key, document, settings.CACHE_JWKS_TTL_SECONDS)
