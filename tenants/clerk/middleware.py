"""Portal requests carry a verified Clerk identity, and its clinic is bound for the view."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import NoReturn

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode

from tenants import cache as tenant_cache
from tenants import services
from tenants.audit import audit_record
from tenants.clerk import bound_read
from tenants.clerk.authentication import (
    AccessDenied,
    PortalIdentity,
    identity_from_claims,
    identity_from_session,
    session_is_idle,
    verifier,
)
from tenants.clerk.tokens import SessionClaims, TokenError
from tenants.rls.binding import bind_organization

logger = logging.getLogger(__name__)

SESSION_ORGANIZATION = "routiq_organization_id"
SESSION_LAST_SEEN = "routiq_last_seen"
SESSION_CLERK_SESSION = "routiq_clerk_session_id"
SESSION_STARTED = "routiq_started"
SESSION_TOUCH_INTERVAL = timedelta(seconds=60)
# Paths that carry no clinic data and authenticate differently (or not at all).
UNBOUND_PATH_PREFIXES = (
    "/static/", "/healthz", "/webhooks/", "/admin/", "/django-rq/", "/sign-in/", "/sign-out/", "/dev/sign-in/",
    "/favicon.ico",  # browsers ask for it on their own; it is answered 404 without a sign-in redirect
    "/loadtest/",  # routiq/loadtest.py's bare view: mounted only with ROUTIQ_LOADTEST_BARE_VIEW (a 404 otherwise)
)


def touch(session) -> None:
    """Record activity for the idle timeout, at most once a minute (a session write per request is waste)."""
    last_seen = session.get(SESSION_LAST_SEEN)
    if last_seen is None or timezone.now() - datetime.fromisoformat(last_seen) > SESSION_TOUCH_INTERVAL:
        session[SESSION_LAST_SEEN] = timezone.now().isoformat()


def session_is_expired(started_iso: str | None) -> bool:
    """Past the absolute lifetime, counted from sign-in (sessions from before it was recorded count as expired)."""
    if not started_iso:
        return True
    started = datetime.fromisoformat(started_iso)
    return timezone.now() - started > timedelta(seconds=settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS)


class Unauthenticated(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ClerkOrganizationMiddleware:
    """Authenticate a portal request from Clerk's session token or the session it opened; bind its clinic.

    ``Authorization: Bearer`` requests are stateless: the token is the whole authentication. A token in the
    ``__session`` cookie (Clerk's browser script) opens or refreshes a Django session bound to that user and
    organization; later requests without a fresh token ride on the session until it has been idle for
    SESSION_IDLE_TIMEOUT_SECONDS or SESSION_ABSOLUTE_TIMEOUT_SECONDS have passed since sign-in, or Clerk ends
    the Clerk session it came from (webhook, or Sign out here). Either way the organization is bound for the
    view and unbound after it, including while a streamed response is being sent.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.identity = None
        if request.path.startswith(UNBOUND_PATH_PREFIXES):
            return self.get_response(request)
        try:
            identity = self.authenticate(request)
        except Unauthenticated as exc:
            return self.unauthenticated(request, exc.reason)
        except AccessDenied as exc:
            request.session.flush()
            return self.denied(request, str(exc))

        request.identity, request.organization = identity, identity.organization
        with bind_organization(identity.organization):
            response = self.get_response(request)
        if response.streaming:
            response.streaming_content = self.bound_stream(identity, response.streaming_content)
        return response

    def authenticate(self, request) -> PortalIdentity:
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
        if bearer:
            # API-style request: the token is the whole authentication; no session is opened or used.
            identity = self.identity_for_token(request, self.verify(request, bearer))
            request.user = identity.user
            return identity
        cookie = request.COOKIES.get("__session")
        if cookie:
            try:
                claims = verifier().verify(cookie)
            except TokenError as exc:
                # A stale cookie is normal between Clerk's refreshes: the session carries on. Anything else
                # (forged, wrong party, pending) ends the session.
                if exc.reason != "expired":
                    self.reject(request, exc)
            else:
                identity = self.identity_for_token(request, claims)
                self.open_session(request, identity, claims.session_id)
                return identity
        return self.resume_session(request)

    def verify(self, request, token: str) -> SessionClaims:
        try:
            return verifier().verify(token)
        except TokenError as exc:
            self.reject(request, exc)

    def identity_for_token(self, request, claims: SessionClaims) -> PortalIdentity:
        """Who a verified token speaks for, unless Clerk has ended its session. Warm, that is read in the statement
        that binds the connection, and nothing else (bound_read.token_lookups)."""
        lookups = bound_read.token_lookups(clerk_session_id=claims.session_id, clerk_org_id=claims.organization_id,
                                             clerk_user_id=claims.user_id)
        # Clerk ended the session (revoked, banned, signed out) but its last token is valid for up to 60 s.
        if lookups.session_ended():
            self.reject(request, TokenError("session-ended"))
        return identity_from_claims(claims, lookups)

    @staticmethod
    def reject(request, exc: TokenError) -> NoReturn:
        request.session.flush()
        logger.info("token rejected reason=%s path=%s", exc.reason, request.path)
        raise Unauthenticated(exc.reason) from exc

    def open_session(self, request, identity: PortalIdentity, clerk_session_id: str | None) -> None:
        session = request.session
        same_session = (
            session.get(SESSION_ORGANIZATION) == str(identity.organization.pk)
            and str(request.user.pk) == str(identity.user.pk)
            and session.get(SESSION_CLERK_SESSION) == (clerk_session_id or "")
            and not session_is_idle(session.get(SESSION_LAST_SEEN))
            and not session_is_expired(session.get(SESSION_STARTED))
        )
        if not same_session:
            # A new user, organization or Clerk session, or a session past its lifetime: new session key (no
            # fixation), new audit row. login() only rotates the key for a *different* user, so rotate it here.
            session.cycle_key()
            login(request, identity.user, backend="django.contrib.auth.backends.ModelBackend")
            started = timezone.now()
            session[SESSION_ORGANIZATION] = str(identity.organization.pk)
            session[SESSION_CLERK_SESSION] = clerk_session_id or ""
            session[SESSION_STARTED] = started.isoformat()
            # A fixed expiry: without it every save (touch() below) would push expire_date another
            # SESSION_COOKIE_AGE into the future, and the session would never end while in use.
            session.set_expiry(started + timedelta(seconds=settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS))
            if clerk_session_id:
                services.portal_session_record(session_key=session.session_key, clerk_session_id=clerk_session_id,
                                               user=identity.user)
            audit_record(
                action="session.started", organization=identity.organization, actor=identity.user,
                object_type="clerk_session", object_id=clerk_session_id or "", request=request,
                changes={"role": identity.membership.role},
            )
        touch(session)

    def resume_session(self, request) -> PortalIdentity:
        session = request.session
        organization_pk = session.get(SESSION_ORGANIZATION)
        if not organization_pk or not request.user.is_authenticated:
            raise Unauthenticated("no-session")
        if session_is_expired(session.get(SESSION_STARTED)):
            session.flush()
            raise Unauthenticated("session-expired")
        if session_is_idle(session.get(SESSION_LAST_SEEN)):
            session.flush()
            raise Unauthenticated("idle-timeout")
        lookups = tenant_cache.session_lookups(clerk_session_id=session.get(SESSION_CLERK_SESSION),
                                               organization_id=organization_pk,
                                               clerk_user_id=request.user.clerk_user_id)
        if lookups.session_ended():
            session.flush()
            raise Unauthenticated("session-ended")
        identity = identity_from_session(request.user, organization_pk, lookups)
        touch(session)
        return identity

    @staticmethod
    def bound_stream(identity: PortalIdentity, content):
        with bind_organization(identity.organization):
            yield from content

    @staticmethod
    def wants_json(request) -> bool:
        return request.headers.get("Authorization") is not None or "application/json" in request.headers.get(
            "Accept", ""
        )

    def unauthenticated(self, request, reason: str):
        if self.wants_json(request):
            return JsonResponse({"error": "unauthenticated", "reason": reason}, status=401)
        if reason == "no-session" and request.method == "GET":
            return HttpResponseRedirect(f"{settings.LOGIN_URL}?{urlencode({'next': request.get_full_path()})}")
        return render(request, "tenants/sign_in.html", {"reason": reason}, status=401)

    def denied(self, request, message: str):
        if self.wants_json(request):
            return JsonResponse({"error": "forbidden", "reason": message}, status=403)
        return render(request, "tenants/denied.html", {"message": message}, status=403)
