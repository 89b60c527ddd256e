"""Django admin for platform staff: organizations, users, memberships, credentials, sync and audit logs.

Admin requests run inside binding.platform_access() (see PlatformAdminMiddleware), so the public tables'
rows of every organization are visible here. Patient data (tenant tables) is not registered: it is only
read with one organization bound, through the portal.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.utils import timezone

from billing.gating import billing_standing
from tenants import cache as tenant_cache
from tenants import services
from tenants.credentials import REENTER_SECRET, credential_set, validate_credential_fields
from tenants.models import (
    ApiCredential,
    AuditLog,
    Domain,
    MembershipStatus,
    Organization,
    OrganizationMember,
    Provider,
    SyncCheckpoint,
    SyncLog,
    User,
)
from tenants.selectors import last_sync


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records, not settings: nobody edits or deletes them here."""

    show_full_result_count = False  # no COUNT(*) over a large log table on every page

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ["domain", "is_primary"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "clerk_org_id", "subscription_status", "is_active", "member_count",
                    "last_cliniko_sync", "created_at"]
    list_filter = ["is_active", "subscription_status", "country"]
    search_fields = ["name", "slug", "clerk_org_id", "stripe_customer_id"]
    # Billing state is Stripe's to change (billing/services.py applies its events): shown, never edited here.
    billing_fields = ("billing_standing", "stripe_customer_id", "stripe_subscription_id", "stripe_price_id",
                      "subscription_status", "subscription_current_period_end", "subscription_trial_end",
                      "subscription_cancel_at_period_end", "subscription_state_at", "billing_lapsed_at")
    readonly_fields = ["id", "schema_name", "clerk_org_id", "created_at", "updated_at", *billing_fields]
    fieldsets = [
        (None, {"fields": ["id", "name", "slug", "country", "time_zone", "message_retention_months", "clerk_org_id",
                           "schema_name", "is_active", "created_at", "updated_at"]}),
        ("Billing", {"fields": billing_fields}),
    ]
    inlines = [DomainInline]
    actions = ["sync_cliniko_now", "deactivate"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            active_members=Count("members", filter=Q(members__status=MembershipStatus.ACTIVE))
        )

    def has_add_permission(self, request):
        # A schema needs the owner database role, which the web app does not have: use Clerk or the command.
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # organizations are deactivated, never deleted

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Name, time zone, retention or is_active edited here: the sign-in middleware's copy must go.
        tenant_cache.organization_forget(obj)

    @admin.display(description="billing standing")
    def billing_standing(self, organization):
        standing = billing_standing(organization)
        if standing.in_good_standing:
            trial = f", trial ends {standing.trial_ends_at:%d %b %Y}" if standing.trial_ends_at else ""
            return f"in good standing{trial}"
        paused = "syncs paused" if standing.syncs_paused else f"syncs pause {standing.syncs_pause_at:%d %b %Y}"
        return f"{standing.problem} Lapsed {standing.lapsed_since:%d %b %Y}; {paused}."

    @admin.display(description="members", ordering="active_members")
    def member_count(self, organization):
        return organization.active_members

    @admin.display(description="last Cliniko sync")
    def last_cliniko_sync(self, organization):
        log = last_sync(organization=organization, provider=Provider.CLINIKO)
        return f"{log.resource} {log.status} {timezone.localtime(log.started_at):%d %b %H:%M}" if log else "—"

    @admin.action(description="Sync Cliniko now")
    def sync_cliniko_now(self, request, queryset):
        from patients.jobs import enqueue_organization_sync

        for organization in queryset.filter(is_active=True):
            enqueue_organization_sync(organization)
        self.message_user(request, "Cliniko syncs queued for the selected active organizations.")

    @admin.action(description="Deactivate organization (keeps all data)")
    def deactivate(self, request, queryset):
        for organization in queryset.filter(is_active=True):
            services.organization_deactivate(organization=organization, actor=request.user)
        self.message_user(request, "Deactivated.", messages.WARNING)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "first_name", "last_name", "clerk_user_id", "is_staff", "is_active",
                    "deleted_at"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["username", "email", "first_name", "last_name", "clerk_user_id"]
    readonly_fields = ["clerk_user_id", "deleted_at", "last_login", "date_joined"]
    fieldsets = [*(DjangoUserAdmin.fieldsets or ()), ("Clerk", {"fields": ["clerk_user_id", "deleted_at"]})]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # is_active (or a name) edited here: every organization's cached identity of this user must go.
        tenant_cache.user_forget(obj)


@admin.register(OrganizationMember)
class OrganizationMemberAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "clerk_role", "status", "removed_at", "updated_at"]
    list_filter = ["role", "status"]
    search_fields = ["user__email", "user__username", "user__clerk_user_id", "organization__name"]
    list_select_related = ["user", "organization"]
    readonly_fields = ["organization", "user", "clerk_role", "clerk_membership_id", "removed_at", "created_at",
                       "updated_at"]
    fields = ["organization", "user", "role", "status", "clerk_role", "clerk_membership_id", "removed_at"]

    def has_add_permission(self, request):
        return False  # memberships come from Clerk (webhooks or the first signed-in request)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # Through the services, so every change is audited; Clerk stays the source of truth for new members.
        if obj.status == MembershipStatus.REMOVED:
            services.membership_remove(membership=obj, when=timezone.now(), actor=request.user)
        else:
            services.membership_upsert(organization=obj.organization, user=obj.user, role=obj.role,
                                       clerk_role=obj.clerk_role, actor=request.user)


class ApiCredentialForm(forms.ModelForm):
    secret = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only. Leave blank to keep the stored secret.",
    )
    base_url = forms.URLField(required=False, assume_scheme="https")

    class Meta:
        model = ApiCredential
        fields = ["organization", "provider", "base_url", "account_id"]

    def clean(self):
        """The service's rules, as form errors: a platform admin gets the same answers as a clinic admin
        (a bad Chatwoot URL or account id, a new destination without the secret), never a 500."""
        data = cast("dict[str, Any]", super().clean())  # ModelForm.clean returns cleaned_data (stubs: or None)
        provider = data.get("provider") or self.instance.provider
        secret = data.get("secret") or None
        base_url, account_id = data.get("base_url") or "", data.get("account_id") or ""
        try:
            validate_credential_fields(provider=provider, secret=secret, base_url=base_url, account_id=account_id)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        destination_changed = self.instance.pk and (base_url, account_id) != (
            self.instance.base_url, self.instance.account_id
        )
        if destination_changed and secret is None:
            self.add_error("secret", REENTER_SECRET)
        return data


@admin.register(ApiCredential)
class ApiCredentialAdmin(admin.ModelAdmin):
    form = ApiCredentialForm
    list_display = ["organization", "provider", "masked_secret", "base_url", "account_id", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["organization__name", "organization__clerk_org_id"]
    list_select_related = ["organization"]
    actions = ["test_connection"]

    @admin.action(description="Test connection")
    def test_connection(self, request, queryset):
        from tenants.connections import connection_report

        for credential in queryset.select_related("organization"):
            ok, message = connection_report(credential)
            level = {True: messages.SUCCESS, False: messages.ERROR, None: messages.INFO}[ok]
            self.message_user(request, f"{credential.organization}: {message}", level)

    @admin.display(description="secret")
    def masked_secret(self, credential):
        return f"…{credential.secret_last4}" if credential.secret_last4 else "••••"

    def get_readonly_fields(self, request, obj=None):
        return ["organization", "provider"] if obj else []

    def save_model(self, request, obj, form, change):
        saved = credential_set(
            organization=obj.organization, provider=obj.provider, secret=form.cleaned_data.get("secret") or None,
            base_url=obj.base_url, account_id=obj.account_id, actor=request.user, request=request,
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        from tenants.credentials import credential_delete

        credential_delete(organization=obj.organization, provider=obj.provider, actor=request.user, request=request)

    def has_delete_permission(self, request, obj=None):
        return obj is not None


@admin.register(SyncLog)
class SyncLogAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "organization", "provider", "resource", "status", "is_full", "fetched_count",
                    "created_count", "updated_count", "archived_count", "finished_at", "short_error"]
    list_filter = ["provider", "resource", "status"]
    search_fields = ["organization__name", "error", "job_id"]
    list_select_related = ["organization"]
    ordering = ["-started_at"]

    @admin.display(description="error")
    def short_error(self, log):
        return log.error[:80]


@admin.register(SyncCheckpoint)
class SyncCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["organization", "provider", "stream", "high_water_mark", "updated_at"]
    list_filter = ["provider", "stream"]
    search_fields = ["organization__name"]
    list_select_related = ["organization"]


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "actor", "actor_label", "action", "object_type", "object_id",
                    "ip_address"]
    list_filter = ["action", "object_type"]
    search_fields = ["action", "object_id", "actor__email", "actor__clerk_user_id", "organization__name"]
    list_select_related = ["organization", "actor"]
    ordering = ["-created_at"]
