"""Sign-in, sign-out and the DEBUG-only dev sign-in."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import logout
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_http_methods, require_POST

from tenants import services
from tenants.clerk.dev_tokens import mint_session_token
from tenants.clerk.middleware import SESSION_CLERK_SESSION
from tenants.models import MembershipStatus, Organization, OrganizationMember
from tenants.rls.binding import bind_organization


def safe_next(request, default: str = "/patients/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or default
    return target if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) else default


def sign_in(request):
    # After "Sign out" the page also signs the browser out of Clerk (static/js/clerk-sign-out.js), so the
    # next visitor of a shared computer is not signed straight back in by Clerk's still-open session.
    # Clerk's hosted sign-in returns here without the signed-out flag (it would sign the browser out again).
    return_url = request.build_absolute_uri(f"{reverse('sign-in')}?{urlencode({'next': safe_next(request)})}")
    return render(request, "tenants/sign_in.html", {
        "next": safe_next(request), "sign_out_of_clerk": "signed-out" in request.GET, "return_url": return_url,
    })


@require_POST
def sign_out(request):
    clerk_session_id = request.session.get(SESSION_CLERK_SESSION)
    user = request.user if request.user.is_authenticated else None
    logout(request)
    if clerk_session_id:
        # Ended here too, not only in the browser: until Clerk's script has signed out, it may still set a
        # fresh __session cookie for this Clerk session, and the portal must not accept it any more.
        services.clerk_session_end(clerk_session_id=clerk_session_id, reason="signed-out",
                                   clerk_user_id=getattr(user, "clerk_user_id", "") or "", actor=user)
    response = HttpResponseRedirect(f"{settings.LOGIN_URL}?signed-out=1")
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

        assert membership.user.clerk_user_id is not None  # dev_memberships lists Clerk users only
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
