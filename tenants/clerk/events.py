"""Clerk webhook events -> services. Each handler is idempotent and writes its audit rows.

Signed events are trusted as to *who* sent them, not as to their shape: text is cleaned before it is stored
(NULs stripped, cut to the column), and what cannot be stored at all (a missing or over-long id) raises
MalformedEvent, which the view records as a failed delivery.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import django_rq
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify
from rq import Retry

from routiq.fields import max_length
from tenants import services
from tenants.clerk.authentication import portal_role
from tenants.models import MembershipStatus, Organization, OrganizationMember, User
from tenants.rls.binding import bind_organization

logger = logging.getLogger(__name__)
ACTOR = "clerk-webhook"
ID_MAX_LENGTH = 64  # clerk_org_id, clerk_user_id, clerk_membership_id, Clerk session ids
# A failed provisioning (a slug taken by a concurrent one, the database restarting) is retried by RQ.
PROVISIONING_RETRY = Retry(max=3, interval=[10, 60, 300])
PENDING_JOB_STATUSES = {"queued", "started", "deferred", "scheduled"}


class MalformedEvent(ValueError):
    """The signed payload is not shaped like the Clerk event it claims to be (or cannot be stored)."""


class RetryLater(Exception):
    """The event depends on something not there yet (an organization being provisioned): let Svix redeliver."""


def dispatch(event_type: str, data: dict) -> bool:
    handler = HANDLERS.get(event_type)
    if handler is None:
        logger.info("clerk event ignored type=%s", event_type)
        return False
    handler(data)
    return True


# --- cleaning ----------------------------------------------------------------------------------------

def clean_text(value: Any, max_length: int) -> str:
    """A storable string: PostgreSQL refuses NUL in text, and a longer value than the column is an error."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return ""
    return str(value).replace("\x00", "")[:max_length]


def clean_id(value: Any, what: str) -> str:
    # Ids are never cut or cleaned: a changed id would name another user or organization.
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > ID_MAX_LENGTH:
        raise MalformedEvent(f"{what} is missing or not a storable id: {str(value)[:80]!r}")
    return value


def clean_email(value: Any) -> str:
    # An over-long address is dropped, not cut: a cut address could be somebody else's.
    email = clean_text(value, 10_000).strip()
    return email if len(email) <= max_length(User, "email") else ""


def child(data: dict, key: str) -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        raise MalformedEvent(f"{key} is not an object")
    return value


def primary_email(data: dict) -> str:
    """The primary address, else the first usable one; "" when the list is missing or odd."""
    addresses = data.get("email_addresses")
    if not isinstance(addresses, list):
        return ""
    usable = [a for a in addresses if isinstance(a, dict) and isinstance(a.get("email_address"), str)
              and a["email_address"]]
    primary_id = data.get("primary_email_address_id")
    primary = next((a for a in usable if primary_id is not None and a.get("id") == primary_id), None)
    chosen = primary or (usable[0] if usable else None)
    return clean_email(chosen["email_address"]) if chosen else ""


def user_names(data: dict) -> dict:
    return {field: clean_text(data.get(field), max_length(User, field))
            for field in ("first_name", "last_name")}


# --- organizations -----------------------------------------------------------------------------------

def organization_upserted(data: dict, *, created: bool) -> None:
    clerk_org_id = clean_id(data.get("id"), "organization id")
    name = clean_text(data.get("name"), max_length(Organization, "name")).strip() or clerk_org_id
    organization = Organization.objects.filter(clerk_org_id=clerk_org_id).first()
    if organization is not None:
        services.organization_rename(organization=organization, name=name, actor_label=ACTOR)
        return
    slug = slugify(clean_text(data.get("slug"), 200))[:max_length(Organization, "slug")] or None
    if created:
        # Enqueued once the delivery is recorded: a rolled-back delivery must not leave a job behind.
        transaction.on_commit(lambda: enqueue_provisioning(clerk_org_id, name, slug))
        return
    # An update for an organization still being provisioned (or whose created event was lost): make sure it
    # is being provisioned, and have Svix redeliver the update to rename it once it exists.
    enqueue_provisioning(clerk_org_id, name, slug)
    raise RetryLater(f"organization {clerk_org_id} is not provisioned yet")


def enqueue_provisioning(clerk_org_id: str, name: str, slug: str | None) -> None:
    """One provisioning job per organization: enqueuing the same job id while it waits would queue it twice."""
    # CREATE SCHEMA needs the owner role, which the web app does not have: the provisioning worker does it.
    from tenants.jobs import provision_organization

    queue = django_rq.get_queue("provisioning")
    job_id = f"provision-{clerk_org_id}"
    job = queue.fetch_job(job_id)
    if job is not None and job.get_status(refresh=True) in PENDING_JOB_STATUSES:
        logger.info("provisioning already pending clerk_org_id=%s", clerk_org_id)
        return
    queue.enqueue(provision_organization, clerk_org_id, name, slug, job_id=job_id, retry=PROVISIONING_RETRY)


def organization_deleted(data: dict) -> None:
    organization = Organization.objects.filter(clerk_org_id=clean_id(data.get("id"), "organization id")).first()
    if organization is not None:
        services.organization_deactivate(organization=organization, actor_label=ACTOR)


def organization_for_membership(data: dict) -> Organization:
    clerk_org_id = clean_id(child(data, "organization").get("id"), "organization id")
    organization = Organization.objects.filter(clerk_org_id=clerk_org_id).first()
    if organization is None:
        # Clerk sends organization.created and the creator's membership within a second; the schema takes
        # longer. Svix redelivers (seconds, then minutes) and the membership lands once the organization exists.
        raise RetryLater(f"membership for organization {clerk_org_id}, not provisioned yet")
    return organization


# --- users -------------------------------------------------------------------------------------------

def user_upserted(data: dict) -> None:
    user = services.user_upsert_from_clerk(
        clerk_user_id=clean_id(data.get("id"), "user id"), email=primary_email(data), **user_names(data)
    )
    if isinstance(data.get("banned"), bool):
        services.user_ban_set(user=user, banned=data["banned"], actor_label=ACTOR)


def user_deleted(data: dict) -> None:
    user = User.objects.filter(clerk_user_id=clean_id(data.get("id"), "user id")).first()
    if user is not None:
        services.user_delete(user=user, actor_label=ACTOR)


# --- memberships -------------------------------------------------------------------------------------

def membership_upserted(data: dict) -> None:
    clerk_membership_id = clean_id(data.get("id"), "membership id")
    user_data = child(data, "public_user_data")
    clerk_user_id = clean_id(user_data.get("user_id"), "user id")
    organization = organization_for_membership(data)
    user = services.user_upsert_from_clerk(
        clerk_user_id=clerk_user_id, email=clean_email(user_data.get("identifier")), only_if_missing=True,
        **user_names(user_data),
    )
    clerk_role = clean_text(data.get("role"), 100).removeprefix("org:")[:64]
    services.membership_upsert(
        organization=organization, user=user, role=portal_role(clerk_role), clerk_role=clerk_role,
        clerk_membership_id=clerk_membership_id, actor_label=ACTOR,
    )


def membership_deleted(data: dict) -> None:
    clerk_org_id = clean_id(child(data, "organization").get("id"), "organization id")
    clerk_user_id = clean_id(child(data, "public_user_data").get("user_id"), "user id")
    organization = Organization.objects.filter(clerk_org_id=clerk_org_id).first()
    user = User.objects.filter(clerk_user_id=clerk_user_id).first()
    if organization is None or user is None:
        return
    with bind_organization(organization):
        membership = OrganizationMember.objects.filter(organization=organization, user=user).first()
        if membership is not None and membership.status != MembershipStatus.REMOVED:
            services.membership_remove(membership=membership, actor_label=ACTOR, when=timezone.now())


# --- sessions ----------------------------------------------------------------------------------------

def session_ended(data: dict, *, reason: str) -> None:
    services.clerk_session_end(
        clerk_session_id=clean_id(data.get("id"), "session id"), reason=reason,
        clerk_user_id=clean_text(data.get("user_id"), ID_MAX_LENGTH), actor_label=ACTOR,
    )


HANDLERS: dict[str, Callable[[dict], None]] = {
    "organization.created": functools.partial(organization_upserted, created=True),
    "organization.updated": functools.partial(organization_upserted, created=False),
    "organization.deleted": organization_deleted,
    "user.created": user_upserted,
    "user.updated": user_upserted,
    "user.deleted": user_deleted,
    "organizationMembership.created": membership_upserted,
    "organizationMembership.updated": membership_upserted,
    "organizationMembership.deleted": membership_deleted,
    "session.revoked": functools.partial(session_ended, reason="session-revoked"),
    "session.ended": functools.partial(session_ended, reason="session-ended"),
    "session.removed": functools.partial(session_ended, reason="session-removed"),
}
