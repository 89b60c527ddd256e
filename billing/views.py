"""The clinic admin's Billing page, and the redirects to Stripe's Checkout and Customer Portal."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from billing import selectors, services
from billing.clients.stripe import BillingStripeClient, StripeUnavailable
from billing.gating import billing_standing
from tenants.permissions import organization_admin_required


@require_GET
@organization_admin_required
def billing(request):
    organization = request.organization
    if request.GET.get("checkout") == "success":
        messages.success(request, "Thank you. Your subscription shows here as soon as Stripe confirms it.")
    elif request.GET.get("checkout") == "cancel":
        messages.info(request, "Checkout cancelled: nothing was charged.")
    context = {
        "standing": billing_standing(organization),
        "plan": selectors.plan_for_price(organization.stripe_price_id),
        "plans": selectors.active_plans(),
        "invoices": selectors.recent_invoices(organization=organization),
    }
    return render(request, "billing/billing.html", context)


def page_url(request, query: str = "") -> str:
    return request.build_absolute_uri(reverse("billing:page")) + query


@require_POST
@organization_admin_required
def checkout(request):
    plan = next((p for p in selectors.active_plans() if p.stripe_price_id == request.POST.get("price")), None)
    if plan is None:
        messages.error(request, "Choose one of the plans on this page.")
        return redirect("billing:page")
    try:
        url = services.checkout_start(
            organization=request.organization, plan=plan, client=BillingStripeClient.from_settings(),
            success_url=page_url(request, "?checkout=success"), cancel_url=page_url(request, "?checkout=cancel"),
            actor=request.user, request=request)
    except StripeUnavailable as exc:
        messages.error(request, exc.message)
        return redirect("billing:page")
    return redirect(url)


@require_POST
@organization_admin_required
def portal(request):
    try:
        url = services.portal_start(organization=request.organization, client=BillingStripeClient.from_settings(),
                                    return_url=page_url(request), actor=request.user, request=request)
    except StripeUnavailable as exc:
        messages.error(request, exc.message)
        return redirect("billing:page")
    return redirect(url)
