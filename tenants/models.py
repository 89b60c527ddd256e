"""Public-schema models: organizations (the tenant), users, memberships, credentials, sync and audit logs."""

from __future__ import annotations

import secrets
import uuid
import zoneinfo

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class OrganizationOwned(models.Model):
    """Every tenant row names its organization: RLS checks it, and a move to Citus needs it."""

    # The FK points at the public organizations table; DO_NOTHING keeps Django's collector from querying
    # tenant tables while in the public schema, where they do not exist. Organizations are deactivated, not deleted.
    # No index of its own: in an organization's schema every row has the same organization_id, so such an
    # index only costs writes; the composite indexes below lead with it where a query needs it.
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class SubscriptionStatus(models.TextChoices):
    NONE = "none", "No subscription"
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    UNPAID = "unpaid", "Unpaid"
    CANCELED = "canceled", "Canceled"
    INCOMPLETE = "incomplete", "Incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired", "Incomplete (expired)"
    PAUSED = "paused", "Paused"


def validate_time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{value!r} is not a known time zone.") from exc


def new_webhook_token() -> str:
    """The secret path segment of the organization's vendor webhook URLs (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


# django-tenants has no type information, so the plugin cannot see that its DomainMixin declares Domain.tenant.
class Organization(TenantMixin, TimestampedModel):  # type: ignore[django-manager-missing]
    """A clinic. Its id is the ``organization_id`` on every row it owns; its schema holds its patients."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    clerk_org_id = models.CharField(max_length=64, unique=True)
    country = models.CharField(max_length=2, default="AU", help_text="ISO country; default region for phones.")
    # The clinic's days and months (dashboard figures, dates on its pages). An IANA name PostgreSQL knows too:
    # the dashboard's materialized views bucket by it (patients/migrations/0009).
    time_zone = models.CharField(max_length=64, default="Australia/Sydney", validators=[validate_time_zone],
                                 help_text="IANA time zone, e.g. Australia/Sydney.")
    # Messages older than this many months are detached and archived (patients/retention.py); None: the
    # MESSAGE_RETENTION_MONTHS setting.
    message_retention_months = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Archive messages older than this (months). Empty: the platform default.")
    stripe_customer_id = models.CharField(max_length=64, blank=True, default="")
    stripe_subscription_id = models.CharField(max_length=64, blank=True, default="")
    subscription_status = models.CharField(
        max_length=20, choices=SubscriptionStatus.choices, default=SubscriptionStatus.NONE
    )
    subscription_current_period_end = models.DateTimeField(null=True, blank=True)
    # The rest of the billing state (billing/subscriptions.py writes it from Stripe's events).
    stripe_price_id = models.CharField(max_length=100, blank=True, default="")
    subscription_trial_end = models.DateTimeField(null=True, blank=True)
    subscription_cancel_at_period_end = models.BooleanField(default=False)
    # The time of the Stripe event that last decided the status: an older event arriving later changes nothing.
    subscription_state_at = models.DateTimeField(null=True, blank=True)
    # When the status left active/trialing: the grace period before syncs pause counts from here.
    billing_lapsed_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    # Names the organization in /webhooks/<vendor>/<token>/: Chatwoot's and ManyChat's deliveries carry no
    # trustworthy clinic id of their own. Rotatable (organization_webhook_token_rotate), never logged.
    webhook_token = models.CharField(max_length=64, unique=True, default=new_webhook_token, editable=False)

    # Schemas are created by organization_create() (as the owner role); deactivation never drops one.
    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        db_table = "organizations"
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_customer_id"],
                condition=~models.Q(stripe_customer_id=""),
                name="organizations_stripe_customer_unique",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Domain(DomainMixin):
    """Required by django-tenants; RoutIQ resolves the organization from the Clerk token, not the host."""

    class Meta:
        db_table = "organization_domains"


class User(AbstractUser):
    """A person. Clinic staff come from Clerk (``clerk_user_id``); platform admins sign in with a password."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clerk_user_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted in Clerk; refused from then on.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "users"


class OrganizationRole(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class MembershipStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REMOVED = "removed", "Removed"


class OrganizationMember(TimestampedModel):
    """A user's membership of one organization, mirrored from Clerk."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="members")
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=20, choices=OrganizationRole.choices, default=OrganizationRole.MEMBER)
    clerk_role = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=20, choices=MembershipStatus.choices, default=MembershipStatus.ACTIVE)
    clerk_membership_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    # When the role last changed, and on whose authority (a webhook: its arrival; a token: its iat). A token
    # issued at or before it says nothing about the role: it would otherwise undo a demotion for 60 s.
    role_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "organization_members"
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="organization_members_org_user_unique")
        ]


class Provider(models.TextChoices):
    CLINIKO = "cliniko", "Cliniko"
    CHATWOOT = "chatwoot", "Chatwoot"
    MANYCHAT = "manychat", "ManyChat"


# The providers that carry conversations (messaging tables), from the one provider list.
MESSAGING_PROVIDER_CHOICES = [(provider.value, provider.label) for provider in (Provider.CHATWOOT, Provider.MANYCHAT)]


class ApiCredential(TimestampedModel):
    """One vendor credential per organization and provider; the secret is encrypted at rest."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="credentials")
    provider = models.CharField(max_length=20, choices=Provider.choices)
    secret_ciphertext = models.TextField()
    secret_last4 = models.CharField(max_length=4, blank=True, default="")
    # The vendor's webhook signing secret (Chatwoot: the account webhook's HMAC secret; ManyChat: a shared
    # header value the clinic puts in its External Request), encrypted like the secret; '' = not configured.
    webhook_secret_ciphertext = models.TextField(blank=True, default="")
    base_url = models.URLField(blank=True, default="")
    account_id = models.CharField(max_length=64, blank=True, default="")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        db_table = "api_credentials"
        constraints = [
            models.UniqueConstraint(fields=["organization", "provider"], name="api_credentials_org_provider_unique")
        ]


class SyncStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class SyncLog(models.Model):
    """One row per sync run of one resource for one organization."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="sync_logs")
    provider = models.CharField(max_length=20, choices=Provider.choices)
    resource = models.CharField(max_length=50)
    status = models.CharField(max_length=20, choices=SyncStatus.choices, default=SyncStatus.RUNNING)
    is_full = models.BooleanField(default=False)
    fetched_count = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    archived_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    job_id = models.CharField(max_length=100, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "sync_logs"
        indexes = [
            models.Index(
                fields=["organization", "provider", "resource", "-started_at"], name="sync_logs_resource_idx"
            )
        ]


class AuditLog(models.Model):
    """An append-only record of who did what; never holds a secret."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_logs"
    )
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    actor_label = models.CharField(max_length=100, blank=True, default="", help_text="'system', a job, a webhook…")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True, default="")
    object_id = models.CharField(max_length=100, blank=True, default="")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "audit_logs"
        indexes = [models.Index(fields=["organization", "-created_at"], name="audit_logs_created_idx")]


class WebhookDelivery(models.Model):
    """A vendor's delivery id, stored once: a replayed or retried delivery is recognised and skipped."""

    id = models.BigAutoField(primary_key=True)
    provider = models.CharField(max_length=20)
    delivery_id = models.CharField(max_length=200)
    event_type = models.CharField(max_length=100, blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True)
    # "processed", or "failed" with the error: a signed event whose data cannot be stored is acknowledged once
    # (the vendor would otherwise retry it for days) and kept here for an operator to look at.
    status = models.CharField(max_length=20, default="processed")
    error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "webhook_deliveries"
        constraints = [
            models.UniqueConstraint(fields=["provider", "delivery_id"], name="webhook_deliveries_unique")
        ]


class SyncCheckpoint(models.Model):
    """How far one stream of one provider has been synced for an organization (a vendor high-water mark).

    Written in the same transaction as the page it covers, so a killed worker resumes from the last
    committed page, never before it (duplicates are upserts) and never after it (no loss).
    """

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="sync_checkpoints")
    provider = models.CharField(max_length=20, choices=Provider.choices)
    stream = models.CharField(max_length=100, help_text="e.g. patients, patients/archived")
    high_water_mark = models.DateTimeField(null=True, blank=True)
    # For vendors that page by something other than time (Chatwoot's message ids, page numbers).
    cursor = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "sync_checkpoints"
        constraints = [
            models.UniqueConstraint(fields=["organization", "provider", "stream"], name="sync_checkpoints_unique")
        ]


class PortalSession(models.Model):
    """A Django session opened from a Clerk session: which Django sessions to delete when Clerk ends one.

    Django's session table stores its data encoded, so "the sessions of Clerk session X (or of user Y)" would
    mean decoding every row; this small index answers it by key. Rows of sessions that ended on their own
    are harmless (deleting an absent session is a no-op).
    """

    id = models.BigAutoField(primary_key=True)
    session_key = models.CharField(max_length=40, unique=True)
    clerk_session_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "portal_sessions"


class EndedClerkSession(models.Model):
    """A Clerk session that ended (revoked, ended, removed, signed out, user banned).

    Its tokens stay valid for up to 60 s after Clerk ends it; a token naming an ended session is refused.
    """

    id = models.BigAutoField(primary_key=True)
    clerk_session_id = models.CharField(max_length=64, unique=True)
    clerk_user_id = models.CharField(max_length=64, blank=True, default="")
    reason = models.CharField(max_length=40)
    ended_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "ended_clerk_sessions"
