"""The billing banner on every portal page of a lapsed organization (billing/gating.py decides)."""

from __future__ import annotations

from billing.gating import billing_standing


def billing_banner(request):
    organization = getattr(request, "organization", None)
    if getattr(request, "identity", None) is None or organization is None:
        return {}
    standing = billing_standing(organization)
    return {"billing_standing": None if standing.in_good_standing else standing}
