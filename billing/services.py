"""Billing writes: the organization's Stripe customer, and the state Stripe's events report.

Events arrive out of order and more than once, so the organization's subscription state is decided by
the events' own times, never by arrival: each change records the time of the event that made it
(``subscription_state_at``), and an event older than that changes nothing. A subscription that has ended
(canceled, incomplete_expired) never comes back: Stripe starts a new subscription instead. Every change is
audited, with the event that made it, before -> after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.clients.stripe import BillingStripeClient, StripeCustomerMissing, StripeUnavailable
from billing.gating import GOOD_STATUSES
from billing.models import Invoice
from tenants import cache as tenant_cache
from tenants.audit import audit_record
from tenants.models import Organization, SubscriptionStatus, User

logger = logging.getLogger(__name__)

ENDED_STATUSES = {SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED}
BILLING_FIELDS = ["stripe_customer_id", "stripe_subscription_id", "stripe_price_id", "subscription_status",
                  "subscription_current_period_end", "subscription_trial_end", "subscription_cancel_at_period_end",
                  "subscription_state_at", "billing_lapsed_at"]


def from_epoch(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value not in (None, "") else None


def subscription_status(value: Any) -> str:
    if value not in SubscriptionStatus.values:
        raise ValueError(f"unknown subscription status {value!r}")
    return value


# -- the customer ---------------------------------------------------------------------------------------
def customer_ensure(*, organization: Organization, client: BillingStripeClient, actor: User | None = None,
                    request=None, replacing: str = "") -> str:
    """The organization's Stripe customer id, created on first need (Stripe call outside any transaction).

    The idempotency key is the organization's id, so two admins pressing Subscribe at once, or a retry
    after a lost answer, get the same customer; the conditional update keeps the first id stored.
    ``replacing``: the stored id Stripe no longer knows, to be replaced by a new customer.
    """
    if organization.stripe_customer_id and organization.stripe_customer_id != replacing:
        return organization.stripe_customer_id
    email = actor.email if actor is not None and getattr(actor, "email", None) else ""
    customer_id = client.create_customer(organization_id=str(organization.pk), clerk_org_id=organization.clerk_org_id,
                                         name=organization.name, email=email, replacing=replacing)
    try:
        with transaction.atomic():
            stored = Organization.objects.filter(pk=organization.pk, stripe_customer_id=replacing).update(
                stripe_customer_id=customer_id, updated_at=timezone.now())
            if stored:
                tenant_cache.organization_forget(organization)
                audit_record(action="billing.customer_created", organization=organization, actor=actor,
                             object_type="organization", object_id=organization.pk,
                             changes={"stripe_customer_id": [replacing, customer_id]}, request=request)
    except IntegrityError as exc:  # Stripe answered with a customer another organization already has
        logger.error("stripe customer %s is already another organization's; organization_id=%s", customer_id,
                     organization.pk)
        raise StripeUnavailable("Stripe answered with another organization's customer. The platform team has "
                                "been told.") from exc
    organization.refresh_from_db(fields=["stripe_customer_id"])
    return organization.stripe_customer_id


def with_customer(*, organization: Organization, client: BillingStripeClient, actor: User | None, request,
                  call: Callable[[str], str]) -> str:
    """``call(customer_id)``; if Stripe no longer knows the stored customer (deleted there without an event
    reaching us, or the key moved to another account or from test to live mode), one new customer, once."""
    customer_id = customer_ensure(organization=organization, client=client, actor=actor, request=request)
    try:
        return call(customer_id)
    except StripeCustomerMissing:
        customer_id = customer_ensure(organization=organization, client=client, actor=actor, request=request,
                                      replacing=customer_id)
        return call(customer_id)


def checkout_start(*, organization: Organization, plan, client: BillingStripeClient, success_url: str,
                   cancel_url: str, actor: User | None = None, request=None) -> str:
    """A Checkout Session for ``plan``; returns the URL to send the admin to."""
    url = with_customer(organization=organization, client=client, actor=actor, request=request,
                        call=lambda customer_id: client.create_checkout_session(
                            customer_id=customer_id, organization_id=str(organization.pk),
                            price_id=plan.stripe_price_id, success_url=success_url, cancel_url=cancel_url))
    audit_record(action="billing.checkout_started", organization=organization, actor=actor,
                 object_type="plan", object_id=plan.stripe_price_id, request=request)
    return url


def portal_start(*, organization: Organization, client: BillingStripeClient, return_url: str,
                 actor: User | None = None, request=None) -> str:
    """A Customer Portal session (plan changes, cards, cancellation; the results come back as events)."""
    url = with_customer(organization=organization, client=client, actor=actor, request=request,
                        call=lambda customer_id: client.create_portal_session(customer_id=customer_id,
                                                                             return_url=return_url))
    audit_record(action="billing.portal_opened", organization=organization, actor=actor,
                 object_type="organization", object_id=organization.pk, request=request)
    return url


# -- state from events ----------------------------------------------------------------------------------
def organization_for_update(organization: Organization) -> Organization:
    """The organization's row, locked: two events of one organization apply one after the other."""
    return Organization.objects.select_for_update().get(pk=organization.pk)


def save_billing_changes(organization: Organization, before: dict[str, Any], *, action: str, event_id: str) -> bool:
    """Save the billing fields that changed and audit them (before -> after); False when none did."""
    changed = [name for name in BILLING_FIELDS if getattr(organization, name) != before[name]]
    if not changed:
        return False
    organization.save(update_fields=[*changed, "updated_at"])
    tenant_cache.organization_forget(organization)
    audit_record(action=action, organization=organization, actor_label=f"stripe:{event_id}",
                 object_type="organization", object_id=organization.pk,
                 changes={name: [jsonable(before[name]), jsonable(getattr(organization, name))] for name in changed})
    return True


def jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def snapshot(organization: Organization) -> dict[str, Any]:
    return {name: getattr(organization, name) for name in BILLING_FIELDS}


def set_status(organization: Organization, status: str, at: datetime) -> None:
    """Move the status, keeping when it left good standing (the grace period counts from then)."""
    if status in GOOD_STATUSES:
        organization.billing_lapsed_at = None
    elif organization.subscription_status in GOOD_STATUSES or organization.billing_lapsed_at is None:
        organization.billing_lapsed_at = at
    organization.subscription_status = status
    organization.subscription_state_at = at


def is_stale(organization: Organization, at: datetime) -> bool:
    return organization.subscription_state_at is not None and at < organization.subscription_state_at


def subscription_apply(*, organization: Organization, subscription: dict, at: datetime, event_id: str) -> bool:
    """Apply a subscription object Stripe sent at ``at``; returns whether anything changed.

    Ignored: an event older than the one that last decided the state; any news of a subscription that has
    ended (it cannot restart); an older subscription ending while a newer one is current.
    """
    organization = organization_for_update(organization)
    status = subscription_status(subscription["status"])
    subscription_id = str(subscription["id"])
    current_id, current_status = organization.stripe_subscription_id, organization.subscription_status
    same = subscription_id == current_id
    if same and current_status in ENDED_STATUSES:
        return False
    before = snapshot(organization)
    item = (subscription.get("items") or {}).get("data") or [{}]
    price_id = str((item[0].get("price") or {}).get("id") or "")
    period_end = from_epoch(item[0].get("current_period_end") or subscription.get("current_period_end"))
    if is_stale(organization, at):
        # Older news: it decides nothing, but may describe what a newer event (an invoice) left unknown.
        if same:
            organization.stripe_price_id = organization.stripe_price_id or price_id
            organization.subscription_current_period_end = organization.subscription_current_period_end or period_end
        return save_billing_changes(organization, before, action="billing.subscription_described", event_id=event_id)
    if not same and current_id and current_status not in ENDED_STATUSES and status in ENDED_STATUSES:
        return False
    organization.stripe_subscription_id = subscription_id
    organization.stripe_price_id = price_id or organization.stripe_price_id
    organization.subscription_current_period_end = period_end
    organization.subscription_trial_end = from_epoch(subscription.get("trial_end"))
    organization.subscription_cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    set_status(organization, status, at)
    return save_billing_changes(organization, before, action="billing.subscription_changed", event_id=event_id)


def checkout_completed(*, organization: Organization, session: dict, at: datetime, event_id: str) -> bool:
    """Checkout finished: remember its subscription, unless another one is current."""
    organization = organization_for_update(organization)
    subscription_id = str(session.get("subscription") or "")
    if not subscription_id or organization.stripe_subscription_id == subscription_id or is_stale(organization, at):
        return False
    if organization.stripe_subscription_id and organization.subscription_status not in ENDED_STATUSES:
        return False  # a current subscription's own events decide whether a second one replaces it
    before = snapshot(organization)
    organization.stripe_customer_id = organization.stripe_customer_id or str(session.get("customer") or "")
    # The status is left to the subscription's own events (created/updated), whichever order they arrive in.
    organization.stripe_subscription_id = subscription_id
    return save_billing_changes(organization, before, action="billing.checkout_completed", event_id=event_id)


def invoice_subscription_id(invoice: dict) -> str:
    """Where the invoice names its subscription: ``parent.subscription_details`` (API 2025-03 and later)
    or the older top-level ``subscription``."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return str(details.get("subscription") or invoice.get("subscription") or "")


def invoice_apply(*, organization: Organization, invoice: dict, at: datetime, paid: bool, event_id: str) -> bool:
    """Move the current subscription's status (a failed payment makes it past due, a paid invoice active
    again, unless a newer event already decided otherwise), and keep the invoice for the billing page."""
    changed = invoice_status_apply(organization=organization, invoice=invoice, at=at, paid=paid, event_id=event_id)
    invoice_upsert(organization=organization, invoice=invoice, at=at)
    return changed


def invoice_status_apply(*, organization: Organization, invoice: dict, at: datetime, paid: bool,
                         event_id: str) -> bool:
    organization = organization_for_update(organization)
    invoice_subscription = invoice_subscription_id(invoice)
    current_id, current = organization.stripe_subscription_id, organization.subscription_status
    # An invoice can arrive before its subscription's own events: with no live subscription known, it
    # introduces it (its created/updated events, being older, then change nothing).
    adopt = bool(invoice_subscription) and invoice_subscription != current_id and (
        not current_id or current in ENDED_STATUSES)
    if not adopt and (not current_id or invoice_subscription != current_id or current in ENDED_STATUSES):
        return False
    if is_stale(organization, at):
        return False
    if paid and (adopt or current in {SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID,
                                      SubscriptionStatus.INCOMPLETE}):
        new_status = SubscriptionStatus.ACTIVE
    elif not paid and (adopt or current in GOOD_STATUSES):
        new_status = SubscriptionStatus.PAST_DUE
    else:
        return False
    before = snapshot(organization)
    organization.stripe_subscription_id = invoice_subscription
    set_status(organization, new_status, at)
    action = "billing.invoice_paid" if paid else "billing.payment_failed"
    return save_billing_changes(organization, before, action=action, event_id=event_id)


def invoice_upsert(*, organization: Organization, invoice: dict, at: datetime) -> None:
    fields = {
        "number": str(invoice.get("number") or "")[:100],
        "status": str(invoice.get("status") or "")[:20],
        "amount_due": int(invoice.get("amount_due") or 0),
        "amount_paid": int(invoice.get("amount_paid") or 0),
        "currency": str(invoice.get("currency") or "")[:3],
        "hosted_invoice_url": hosted_url(invoice.get("hosted_invoice_url")),
        "invoice_created": from_epoch(invoice.get("created")) or at,
        "state_at": at,
    }
    stored = Invoice.objects.select_for_update().filter(stripe_invoice_id=str(invoice["id"])).first()
    if stored is None:
        Invoice.objects.create(organization=organization, stripe_invoice_id=str(invoice["id"]), **fields)
    elif stored.organization_id == organization.pk and stored.state_at <= at:
        for name, value in fields.items():
            setattr(stored, name, value)
        stored.save(update_fields=[*fields, "updated_at"])


def hosted_url(value: Any) -> str:
    """Stripe's hosted invoice page, and nothing else a link on our page could point at."""
    url = str(value or "")
    return url if url.startswith("https://") and len(url) <= 1000 else ""


def customer_deleted(*, organization: Organization, customer: dict, at: datetime, event_id: str) -> bool:
    """The customer was deleted at Stripe (its subscriptions end with it): forget it."""
    organization = organization_for_update(organization)
    if organization.stripe_customer_id != str(customer.get("id")):
        return False
    before = snapshot(organization)
    organization.stripe_customer_id = ""
    if organization.subscription_status not in ENDED_STATUSES | {SubscriptionStatus.NONE}:
        set_status(organization, SubscriptionStatus.CANCELED, at)
    return save_billing_changes(organization, before, action="billing.customer_deleted", event_id=event_id)
