"""Billing reads: the plans on offer, an organization's invoices, and the platform's billing overview."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from billing.gating import free_trial_end
from billing.models import Invoice, Plan
from tenants.models import Organization, SubscriptionStatus

RECENT_INVOICES = 12


def active_plans() -> list[Plan]:
    return list(Plan.objects.filter(is_active=True))


def plan_for_price(price_id: str) -> Plan | None:
    return Plan.objects.filter(stripe_price_id=price_id).first() if price_id else None


def recent_invoices(*, organization: Organization, limit: int = RECENT_INVOICES) -> list[Invoice]:
    return list(Invoice.objects.filter(organization=organization).order_by("-invoice_created", "-id")[:limit])


@dataclass(frozen=True)
class TrialEnding:
    organization: Organization
    ends_at: datetime


@dataclass(frozen=True)
class BillingOverview:
    by_status: list[tuple[str, int]]  # (label, organizations), most first
    monthly_recurring_revenue: dict[str, Decimal]  # currency -> amount in major units, active subscriptions
    trials_ending: list[TrialEnding]  # in the next 7 days, soonest first
    unknown_prices: list[str]  # active subscriptions on a price missing from the plan table (not in MRR)


def billing_overview(now: datetime | None = None) -> BillingOverview:
    """Across every active organization. Call inside platform_access (the admin is)."""
    now = now or timezone.now()
    week_ahead = now + timedelta(days=7)
    organizations = list(Organization.objects.filter(is_active=True).only(
        "id", "name", "created_at", "subscription_status", "stripe_price_id", "subscription_trial_end"))
    plans = {plan.stripe_price_id: plan for plan in Plan.objects.all()}
    labels = dict(SubscriptionStatus.choices)
    counts = Counter(labels.get(o.subscription_status, o.subscription_status) for o in organizations)
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    unknown, trials = set(), []
    for organization in organizations:
        status = organization.subscription_status
        if status == SubscriptionStatus.ACTIVE:
            plan = plans.get(organization.stripe_price_id)
            if plan is None:
                unknown.add(organization.stripe_price_id or "(none)")
            else:
                revenue[plan.currency.upper()] += plan.monthly_amount / 100
        ends_at = (free_trial_end(organization) if status == SubscriptionStatus.NONE
                   else organization.subscription_trial_end if status == SubscriptionStatus.TRIALING else None)
        if ends_at is not None and now <= ends_at < week_ahead:
            trials.append(TrialEnding(organization, ends_at))
    return BillingOverview(
        by_status=counts.most_common(),
        monthly_recurring_revenue={currency: amount.quantize(Decimal("0.01")) for currency, amount in revenue.items()},
        trials_ending=sorted(trials, key=lambda trial: trial.ends_at),
        unknown_prices=sorted(unknown),
    )
