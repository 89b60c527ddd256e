"""Billing records in the public schema: the plan table, Stripe's events as received, and invoices.

An organization's own billing state (customer, subscription, status, period, trial) lives on
``tenants.Organization``; these tables hold what Stripe told us about it.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from tenants.models import Organization


class PlanInterval(models.TextChoices):
    MONTH = "month", "Monthly"
    YEAR = "year", "Yearly"


class Plan(models.Model):
    """A price that clinics can subscribe to, edited by platform admins: the price id is Stripe's."""

    id = models.BigAutoField(primary_key=True)
    stripe_price_id = models.CharField(max_length=100, unique=True)
    name = models.CharField(max_length=100)
    amount = models.PositiveIntegerField(help_text="In the currency's smallest unit (cents).")
    currency = models.CharField(max_length=3, default="aud")
    interval = models.CharField(max_length=10, choices=PlanInterval.choices, default=PlanInterval.MONTH)
    features = models.JSONField(default=list, blank=True, help_text='A list of short lines, e.g. ["Inbox"].')
    is_active = models.BooleanField(default=True, help_text="Offered on the billing page.")
    sort_order = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "billing_plans"
        ordering = ["sort_order", "amount"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_amount}/{self.interval})"

    @property
    def display_amount(self) -> str:
        return f"{self.currency.upper()} {Decimal(self.amount) / 100:.2f}"

    @property
    def monthly_amount(self) -> Decimal:
        """What the plan contributes to monthly recurring revenue, in the smallest unit."""
        return Decimal(self.amount) / 12 if self.interval == PlanInterval.YEAR else Decimal(self.amount)


class StripeEvent(models.Model):
    """One Stripe event, stored once by its id: a redelivery (Stripe retries for days) finds it here.

    ``organization`` is the clinic the event's customer belongs to, or none (stored and ignored). Processed
    once: ``processed_at`` is set in the transaction that applied it; ``error`` says why the last attempt
    failed (Stripe retries it, an admin can reprocess it).
    """

    id = models.CharField(max_length=255, primary_key=True)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="stripe_events"
    )
    type = models.CharField(max_length=100)
    created = models.DateTimeField(help_text="When Stripe created the event.")
    livemode = models.BooleanField(default=False)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True, default="", help_text="processed, ignored or failed")
    error = models.TextField(blank=True, default="")
    payload = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "billing_stripe_events"
        indexes = [models.Index(fields=["organization", "-created"], name="billing_events_org_created_idx")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class Invoice(models.Model):
    """An invoice of the organization's subscription, kept from invoice.* events for the billing page."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="invoices")
    stripe_invoice_id = models.CharField(max_length=255, unique=True)
    number = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=20, blank=True, default="")
    amount_due = models.BigIntegerField(default=0)
    amount_paid = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True, default="")
    hosted_invoice_url = models.URLField(max_length=1000, blank=True, default="")
    invoice_created = models.DateTimeField(help_text="When Stripe created the invoice.")
    # The event time of the last change applied: an older event never overwrites a newer one's status.
    state_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "billing_invoices"
        indexes = [models.Index(fields=["organization", "-invoice_created"], name="billing_invoices_recent_idx")]

    def __str__(self) -> str:
        return self.number or self.stripe_invoice_id

    @property
    def display_amount(self) -> str:
        return f"{self.currency.upper()} {Decimal(self.amount_due) / 100:.2f}"
