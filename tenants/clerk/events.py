"""Clerk webhook events -> services. Each handler is idempotent and writes its audit rows."""

from __future__ import annotations

import logging
from collections.abc import Callable

import django_rq
from django.db import transaction
from django.utils import timezone

from tenants import services
from tenants.audit import audit_record
from tenants.clerk.authentication import portal_role
from tenants.models import MembershipStatus, Organization, OrganizationMember, User
from tenants.rls.binding import bind_organization

logger = logging.getLogger(__name__)
ACTOR = "clerk-webhook"


def dispatch(event_type: str, data: dict) -> bool:
    handler = HANDLERS.get(event_type)
    if handler is None:
        logger.info("clerk event ignored type=%s", event_type)
        return False
    handler(data)
    return True


def organization_upserted(data: dict) -> None:
    organization = Organization.objects.filter(clerk_org_id=data["id"]).first()
    if organization is None:
        # CREATE SCHEMA needs the owner role, which the web app does not have: the provisioning worker does it.
        from tenants.jobs import provision_organization

        transaction.on_commit(
            lambda: django_rq.get_queue("provisioning").enqueue(
                provision_organization, data["id"], str(data["name"]), data.get("slug") or None,
                job_id=f"provision-{data['id']}",
            )
        )
        return
    if organization.name != data["name"]:
        before = organization.name
        organization.name = str(data["name"])
        organization.save(update_fields=["name", "updated_at"])
        audit_record(action="organization.updated", organization=organization, actor_label=ACTOR,
                     object_type="organization", object_id=organization.pk,
                     changes={"name": [before, organization.name]})


def organization_deleted(data: dict) -> None:
    organization = Organization.objects.filter(clerk_org_id=data["id"]).first()
    if organization is not None:
        services.organization_deactivate(organization=organization, actor_label=ACTOR)


def user_upserted(data: dict) -> None:
    services.user_upsert_from_clerk(
        clerk_user_id=data["id"], email=primary_email(data), first_name=data.get("first_name") or "",
        last_name=data.get("last_name") or "",
    )


def user_deleted(data: dict) -> None:
    user = User.objects.filter(clerk_user_id=data["id"]).first()
    if user is not None:
        services.user_delete(user=user, actor_label=ACTOR)


def membership_upserted(data: dict) -> None:
    organization = Organization.objects.filter(clerk_org_id=data["organization"]["id"]).first()
    if organization is None:
        logger.warning("membership for unknown organization clerk_org_id=%s", data["organization"]["id"])
        return
    user_data = data["public_user_data"]
    user = services.user_upsert_from_clerk(
        clerk_user_id=user_data["user_id"], first_name=user_data.get("first_name") or "",
        last_name=user_data.get("last_name") or "", email=user_data.get("identifier") or "", only_if_missing=True,
    )
    clerk_role = str(data.get("role") or "").removeprefix("org:")
    services.membership_upsert(
        organization=organization, user=user, role=portal_role(clerk_role), clerk_role=clerk_role,
        clerk_membership_id=data["id"], actor_label=ACTOR,
    )


def membership_deleted(data: dict) -> None:
    organization = Organization.objects.filter(clerk_org_id=data["organization"]["id"]).first()
    user = User.objects.filter(clerk_user_id=data["public_user_data"]["user_id"]).first()
    if organization is None or user is None:
        return
    with bind_organization(organization):
        membership = OrganizationMember.objects.filter(organization=organization, user=user).first()
        if membership is not None and membership.status != MembershipStatus.REMOVED:
            services.membership_remove(membership=membership, actor_label=ACTOR, when=timezone.now())


def primary_email(data: dict) -> str:
    addresses = data.get("email_addresses") or []
    primary = next((a for a in addresses if a.get("id") == data.get("primary_email_address_id")), None)
    return (primary or (addresses[0] if addresses else {})).get("email_address", "")


HANDLERS: dict[str, Callable[[dict], None]] = {
    "organization.created": organization_upserted,
    "organization.updated": organization_upserted,
    "organization.deleted": organization_deleted,
    "user.created": user_upserted,
    "user.updated": user_upserted,
    "user.deleted": user_deleted,
    "organizationMembership.created": membership_upserted,
    "organizationMembership.updated": membership_upserted,
    "organizationMembership.deleted": membership_deleted,
}
