"""A strict Content-Security-Policy for the portal: everything is served from here (CSS and htmx are
vendored), except Clerk's browser script and API when Clerk is configured."""

from __future__ import annotations

from django.conf import settings


def content_security_policy() -> str:
    clerk = settings.CLERK_FRONTEND_API_URL.rstrip("/")
    extra = f" {clerk}" if clerk else ""
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self'{extra}",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src 'self'{extra}",
        f"frame-src 'self'{extra}",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ])


class ContentSecurityPolicyMiddleware:
    """Adds the policy to portal pages. The Django admin keeps Django's own defaults (it uses inline styles)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = content_security_policy()

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith("/admin/"):
            response.setdefault("Content-Security-Policy", self.policy)
            response.setdefault("Referrer-Policy", "same-origin")
        return response
