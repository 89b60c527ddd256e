"""Sign-in, sign-out and the DEBUG-only dev sign-in."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import logout
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from tenants.clerk.dev_tokens import mint_session_token
from tenants.models import MembershipStatus, Organization, OrganizationMember
from tenants.rls.binding import bind_organization


def safe_next(request, default: str = "/patients/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or default
    return target if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) else default


def sign_in(request):
    return render(request, "tenants/sign_in.html", {"next": safe_next(request)})


@require_POST
def sign_out(request):
    logout(request)
    response = HttpResponseRedirect(settings.LOGIN_URL)
    response.delete_cookie("__session")
    return response


@require_http_methods(["GET", "POST"])
def dev_sign_in(request):
    if not settings.DEV_SIGN_IN_ENABLED:
        raise Http404
    if request.method == "POST":
        membership = dev_membership(request.POST.get("membership", ""))
        if membership is None:
            raise Http404
        from tenants.clerk.dev_sign_in import dev_signing_key

        token = mint_session_token(
            dev_signing_key(),
            user_id=membership.user.clerk_user_id,
            organization_id=membership.organization.clerk_org_id,
            organization_role=membership.clerk_role or membership.role,
            organization_slug=membership.organization.slug,
            azp=f"{request.scheme}://{request.get_host()}",
        )
        response = HttpResponseRedirect(safe_next(request))
        response.set_cookie("__session", token, max_age=60, httponly=False, samesite="Lax")
        return response
    return render(request, "tenants/dev_sign_in.html", {"memberships": dev_memberships(), "next": safe_next(request)})


def dev_memberships() -> list[OrganizationMember]:
    memberships = []
    for organization in Organization.objects.filter(is_active=True).order_by("name"):
        with bind_organization(organization):
            memberships += list(
                OrganizationMember.objects.filter(status=MembershipStatus.ACTIVE, user__clerk_user_id__isnull=False)
                .select_related("user", "organization")
                .order_by("role", "user__username")
            )
    return memberships


def dev_membership(membership_id: str) -> OrganizationMember | None:
    return next((m for m in dev_memberships() if str(m.pk) == membership_id), None)
