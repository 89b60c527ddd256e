"""Response and log hardening for the portal.

A strict Content-Security-Policy: everything is served from here (CSS and htmx are vendored), except Clerk's
browser script and API when Clerk is configured. ``Cache-Control: no-store`` on everything but static files.
Access logs without query strings (they carry patient searches).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.cache import patch_cache_control

# Subscribe and Manage billing answer a form post with a redirect to Stripe: form-action must allow it.
STRIPE_PAGES = "https://checkout.stripe.com https://billing.stripe.com"


def stripe_form_targets() -> str:
    """Stripe's hosted pages, and a stand-in's (which serves them from its API origin)."""
    api = urlsplit(settings.STRIPE_API_URL)
    stand_in = f" {api.scheme}://{api.netloc}" if api.netloc and api.netloc != "api.stripe.com" else ""
    return STRIPE_PAGES + stand_in


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
        f"form-action 'self' {stripe_form_targets()}",
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


class NoStoreMiddleware:
    """``Cache-Control: no-store`` on every response but static files.

    Portal pages show patient data (lists, htmx partials, the CSV export, a patient's timeline); no browser
    cache, back-forward cache or shared proxy may keep a copy once the user has signed out or the session
    has timed out. Registered as middleware rather than per view so that pages added later are covered too.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/")

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(self.static_prefix):
            patch_cache_control(response, no_store=True, private=True)
        return response


# --- access logs --------------------------------------------------------------------------------------
# Query strings carry patient data (a search for a surname, a filter), so access logs record the path
# only. Both shapes of access-log record are handled: Django's development server logs the request line
# as its first argument; gunicorn passes a dict of "atoms" (r: the request line, q: the query string,
# f: the Referer, which holds the previous page's query string, {header}i, {variable}e).
ACCESS_LOGGERS = ("django.server", "gunicorn.access")
REQUEST_LINE = re.compile(r"^(\S+ )(\S+)( HTTP/\S+)$")
QUERY_IN_URL = re.compile(r"(?<=[^\s\"?])\?[^\s\"]*")
QUERY_ATOMS = frozenset({"q", "{query_string}e"})


def without_query(text: str) -> str:
    """A request line or URL with its query string removed; other text has any ``?…`` after a path cut."""
    line = REQUEST_LINE.match(text)
    if line:  # the target of a request line runs to the protocol, even if it holds spaces
        return line[1] + line[2].split("?", 1)[0] + line[3]
    return QUERY_IN_URL.sub("", text)


class AccessLogRedaction(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):  # gunicorn's atoms; a fresh dict per request, changed in place
            atoms = cast("dict[str, object]", record.args)
            for key, value in list(atoms.items()):
                if key in QUERY_ATOMS:
                    atoms[key] = "-"
                elif isinstance(value, str):
                    atoms[key] = without_query(value)
        elif isinstance(record.args, tuple):
            record.args = tuple(without_query(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str) and not record.args:
            record.msg = without_query(record.msg)
        return True


def redact_access_logs() -> None:
    """Attach the filter to the access loggers (once). Done in code, not in settings.LOGGING: naming
    gunicorn.access there would replace the handlers gunicorn gave it (--access-logfile)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, AccessLogRedaction) for existing in logger.filters):
            logger.addFilter(AccessLogRedaction())
