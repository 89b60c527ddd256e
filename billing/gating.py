"""What an organization's billing state allows: the one place that decides, for the banner, the scheduler and
"Sync now".

In good standing: an active or trialing subscription, or no subscription yet within the free trial
(BILLING_TRIAL_DAYS from the organization's creation). Otherwise the organization is *lapsed*: it keeps
read access to all its data and every page shows a banner; after BILLING_GRACE_DAYS its syncs pause
(the scheduler's fan-out skips it and "Sync now" says why) until Stripe reports it paid again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect
from django.utils import timezone

from tenants.models import Organization, SubscriptionStatus

GOOD_STATUSES = {SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING}
LAPSED_MESSAGES: dict[str, str] = {
    SubscriptionStatus.NONE: "The free trial has ended.",
    SubscriptionStatus.PAST_DUE: "The last payment failed.",
    SubscriptionStatus.UNPAID: "The subscription is unpaid.",
    SubscriptionStatus.CANCELED: "The subscription has ended.",
    SubscriptionStatus.INCOMPLETE: "The subscription's first payment has not gone through.",
    SubscriptionStatus.INCOMPLETE_EXPIRED: "The subscription's first payment never went through.",
    SubscriptionStatus.PAUSED: "The subscription is paused.",
}


@dataclass(frozen=True)
class Standing:
    status: str
    trial_ends_at: datetime | None = None  # the free trial (no subscription yet) or Stripe's trial_end
    lapsed_since: datetime | None = None  # None: in good standing
    syncs_pause_at: datetime | None = None

    @property
    def in_good_standing(self) -> bool:
        return self.lapsed_since is None

    @property
    def syncs_paused(self) -> bool:
        return self.syncs_pause_at is not None and timezone.now() >= self.syncs_pause_at

    @property
    def problem(self) -> str:
        return "" if self.in_good_standing else LAPSED_MESSAGES.get(self.status, "Billing needs attention.")


def free_trial_end(organization: Organization) -> datetime:
    return organization.created_at + timedelta(days=settings.BILLING_TRIAL_DAYS)


def billing_standing(organization: Organization, now: datetime | None = None) -> Standing:
    now = now or timezone.now()
    status = organization.subscription_status
    if status in GOOD_STATUSES:
        return Standing(status, trial_ends_at=organization.subscription_trial_end)
    if status == SubscriptionStatus.NONE:
        trial_end = free_trial_end(organization)
        if now < trial_end:
            return Standing(status, trial_ends_at=trial_end)
        lapsed_since = trial_end
    else:
        lapsed_since = organization.billing_lapsed_at or organization.subscription_state_at or now
    return Standing(status, lapsed_since=lapsed_since,
                    syncs_pause_at=lapsed_since + timedelta(days=settings.BILLING_GRACE_DAYS))


def sync_pause_reason(organization: Organization) -> str | None:
    """Why this organization's syncs are paused, or None when they may run."""
    standing = billing_standing(organization)
    if not standing.syncs_paused:
        return None
    return f"Syncs are paused: {standing.problem} An admin can update billing on the Billing page."


def syncs_allowed(view):
    """For views that start a sync: refuse with the reason (back to the referring page) while paused."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        reason = sync_pause_reason(request.organization)
        if reason is not None:
            messages.error(request, reason)
            return redirect("integrations")
        return view(request, *args, **kwargs)

    return wrapper
