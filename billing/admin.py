"""Platform admin: the plan table (editable, audited), Stripe's events (read-only, "reprocess"), invoices,
and the billing overview (organizations by status, monthly recurring revenue, trials ending this week)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.forms.models import model_to_dict
from django.template.response import TemplateResponse
from django.urls import path

from billing.models import Invoice, Plan, StripeEvent
from billing.selectors import billing_overview
from billing.webhooks import FAILED, event_reprocess
from tenants.admin import ReadOnlyAdmin
from tenants.audit import audit_record
from tenants.rls.binding import write_alias

PLAN_FIELDS = ("stripe_price_id", "name", "amount", "currency", "interval", "features", "is_active", "sort_order")


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "stripe_price_id", "display_amount", "interval", "is_active", "sort_order"]
    list_filter = ["is_active", "interval"]
    fields = PLAN_FIELDS

    def has_delete_permission(self, request, obj=None):
        return False  # organizations on a retired price still need its amount: deactivate it instead

    def save_model(self, request, obj, form, change):
        before = model_to_dict(Plan.objects.get(pk=obj.pk), fields=PLAN_FIELDS) if change else {}
        with transaction.atomic(using=write_alias()):
            super().save_model(request, obj, form, change)
            after = model_to_dict(obj, fields=PLAN_FIELDS)
            audit_record(action="billing.plan_changed" if change else "billing.plan_created", organization=None,
                         actor=request.user, object_type="plan", object_id=obj.pk, request=request,
                         changes={k: [before.get(k), v] for k, v in after.items() if before.get(k) != v})

    def get_urls(self):
        return [path("overview/", self.admin_site.admin_view(self.overview_view), name="billing-overview"),
                *super().get_urls()]

    def overview_view(self, request):
        context = {**self.admin_site.each_context(request), "title": "Billing overview",
                   "overview": billing_overview()}
        return TemplateResponse(request, "admin/billing_overview.html", context)


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "organization", "created", "received_at", "processed_at", "outcome"]
    list_filter = ["outcome", "type", "livemode"]
    search_fields = ["id", "type"]
    list_select_related = ["organization"]
    date_hierarchy = "created"
    actions = ["reprocess"]
    readonly_fields = ["id", "type", "organization", "created", "livemode", "received_at", "processed_at",
                       "outcome", "error", "payload"]

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Reprocess the selected events", permissions=["view"])
    def reprocess(self, request, queryset):
        outcomes = [event_reprocess(event) for event in queryset.select_related("organization")]
        failed = outcomes.count(FAILED)
        level = messages.ERROR if failed else messages.SUCCESS
        self.message_user(request, f"Reprocessed {len(outcomes)} event(s); {failed} failed.", level)


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["stripe_invoice_id", "number", "organization", "status", "display_amount", "invoice_created"]
    list_filter = ["status"]
    search_fields = ["stripe_invoice_id", "number", "organization__name"]
    list_select_related = ["organization"]
