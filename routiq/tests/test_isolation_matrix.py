"""Every URL pattern of the portal, discovered from Django's resolver, requested as clinic A with clinic B's ids,
with ids nobody has and with malformed ones, for every method: never a 500, never a byte of B's data, never a
change to B's rows; an id-bearing URL answers 400/403/404/405 (or sends the caller to sign in). The same URLs
with A's own ids, and searches for A's patient, must not write a patient's name, email or phone to the logs.

A new page is covered without editing this test. A new URL parameter fails it until PARAMETERS says what the
parameter names (one of B's objects, or a fixed value such as a provider) — so nobody forgets to think about it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from billing.models import Invoice
from messaging.models import Conversation, Message
from messaging.tests import factories
from patients.models import Contact, ContactMatchCandidate
from routiq.testing.clerk_fixtures import bearer
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
SECRET = "Quokka-belongs-to-clinic-B"
# Clinic A's patient: none of these may reach a log line, whatever page shows or searches them.
PHI = {"first_name": "Wilhelmina", "last_name": "Zybrowski", "email": "wilhelmina.zybrowski@example.net",
       "phone_e164": "+61491570159"}
NOW = timezone.now().replace(microsecond=0)
STAFF_PREFIXES = ("admin/", "django-rq/")  # Django admin and the RQ dashboard: staff sign-in, tested below
# Pages anyone may open: what they show is not a clinic's.
PUBLIC = {"healthz", "sign-in", "sign-out", "dev-sign-in"}
METHODS = ("get", "post", "put", "patch", "delete")
MALFORMED = ["0", "-1", "99999999999999999999999", "not-an-id", "%00", "..%2F..%2Fadmin", "%27%20OR%201%3D1--",
             "a" * 300, "%F0%9F%92%A5", str(uuid.uuid4())]
REFUSED = {400, 403, 404, 405}


@dataclass(frozen=True)
class Route:
    route: str  # e.g. "conversations/<str:conversation_id>/reply/"
    name: str
    parameters: tuple[str, ...]

    def path(self, values: dict[str, str]) -> str:
        return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], self.route)


def portal_routes(patterns=None, prefix: str = "") -> Iterator[Route]:
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if route.startswith(STAFF_PREFIXES):
            continue
        if isinstance(pattern, URLResolver):
            yield from portal_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield Route(route, pattern.name or route, tuple(re.findall(r"<(?:\w+:)?(\w+)>", route)))


ROUTES = sorted(portal_routes(), key=lambda r: r.route)


@pytest.fixture
def clinic_b(org_a, org_b) -> dict[str, str]:
    """Clinic B's objects, under ids clinic A does not have (each schema has its own sequences)."""
    def above_a(model) -> int:
        with bind_organization(org_a):
            return (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000

    patient = factories.contact(org_b, "Bea", SECRET, email="bea@clinic-b.example")
    lead = factories.contact(org_b, "Lead", SECRET, patient=False, phone_e164="+61412000777")
    thread = factories.conversation(org_b, patient, assignee_name=SECRET)
    message = factories.message(org_b, thread, NOW, f"hello {SECRET}", id=above_a(Message))
    factories.appointment(org_b, patient, NOW - timedelta(days=1))
    match = factories.match_candidate(org_b, lead, patient, id=above_a(ContactMatchCandidate))
    with bind_organization(org_b):
        Invoice.objects.create(organization=org_b, stripe_invoice_id="in_b", number=SECRET, invoice_created=NOW,
                               state_at=NOW)
    return {"patient": str(patient.pk), "lead": str(lead.pk), "conversation": str(thread.pk),
            "message": str(message.pk), "match": str(match.pk), "token": org_b.webhook_token}


@pytest.fixture
def clinic_a(org_a) -> dict[str, str]:
    patient = factories.contact(org_a, PHI["first_name"], PHI["last_name"], email=PHI["email"],
                                phone_e164=PHI["phone_e164"])
    lead = factories.contact(org_a, PHI["first_name"], "Lead", patient=False, phone_e164=PHI["phone_e164"])
    thread = factories.conversation(org_a, patient)
    message = factories.message(org_a, thread, NOW, f"my number is {PHI['phone_e164']}")
    factories.appointment(org_a, patient, NOW + timedelta(days=2))
    match = factories.match_candidate(org_a, lead, patient)
    return {"patient": str(patient.pk), "lead": str(lead.pk), "conversation": str(thread.pk),
            "message": str(message.pk), "match": str(match.pk), "token": org_a.webhook_token}


@pytest.fixture
def webhooks_on(settings):
    """Webhooks configured (unconfigured ones answer 503 by design), and no rate limit in the way."""
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 100_000
    settings.CLERK_WEBHOOK_SECRET = "whsec_" + "bWF0cml4LXNlY3JldC1vZi0zMi1ieXRlcy0xMjM0NTY="
    settings.STRIPE_WEBHOOK_SECRETS = ["whsec_matrix"]


# What each URL parameter names: B's object(s) of that kind, or fixed values that name no clinic's data.
PARAMETERS: dict[str, Callable[[dict[str, str]], list[str]]] = {
    "patient_id": lambda b: [b["patient"], b["lead"]],
    "conversation_id": lambda b: [b["conversation"]],
    "message_id": lambda b: [b["message"]],
    "candidate_id": lambda b: [b["match"]],
    "token": lambda b: [b["token"]],  # B's webhook URL secret: unsigned, empty posts must be refused
}
FIXED_VALUES = {"provider": ["cliniko", "chatwoot", "manychat", "stripe"]}  # names a vendor, not a record


def snapshot(organization) -> dict:
    with bind_organization(organization):
        return {
            "contacts": list(Contact.objects.order_by("pk").values()),
            "conversations": list(Conversation.objects.order_by("pk").values()),
            "messages": list(Message.objects.order_by("pk").values()),
            "candidates": list(ContactMatchCandidate.objects.order_by("pk").values()),
            "invoices": list(Invoice.objects.order_by("pk").values()),
            "audit": AuditLog.objects.count(),
            "organization": Organization.objects.filter(pk=organization.pk).values().get(),
        }


def variants(route: Route, b: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """(label, parameter values): B's ids, then missing and malformed ones, one parameter at a time."""
    undescribed = [p for p in route.parameters if p not in PARAMETERS and p not in FIXED_VALUES]
    assert not undescribed, f"describe {undescribed} of {route.route} in PARAMETERS or FIXED_VALUES"
    base = {p: (FIXED_VALUES[p][0] if p in FIXED_VALUES else PARAMETERS[p](b)[0]) for p in route.parameters}
    for parameter in route.parameters:
        if parameter in FIXED_VALUES:
            for value in FIXED_VALUES[parameter] + MALFORMED:
                yield f"{parameter}={value[:20]}", {**base, parameter: quote(value, safe="%")}
        else:
            for value in PARAMETERS[parameter](b):
                yield f"B's {parameter}", {**base, parameter: value}
            for value in MALFORMED:
                yield f"{parameter}={value[:20]}", {**base, parameter: value}


def names_b_object(route: Route) -> bool:
    return any(p in PARAMETERS for p in route.parameters)


def is_sign_in_redirect(response) -> bool:
    return response.status_code in (301, 302, 303) and response["Location"].startswith("/sign-in/")


def test_the_matrix_knows_the_portal():
    """The discovery finds the pages this test is about (a broken walk would make the matrix vacuous)."""
    names = {route.name for route in ROUTES}
    assert {"list", "detail", "inbox", "conversation", "reply", "page", "checkout", "stripe-webhook",
            "integrations", "sync-now"} <= names
    assert len(ROUTES) >= 29


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.route or "/")
def test_clinic_a_gets_nothing_of_clinic_b_on_any_url(client, mint, org_a, org_b, clinic_b, route, webhooks_on):
    token = bearer(mint(org_a, role="admin"))
    before = snapshot(org_b)
    cases = list(variants(route, clinic_b)) if route.parameters else [("no parameters", {})]
    for label, values in cases:
        path = route.path(values)
        for method in METHODS:
            response = getattr(client, method)(path, **token)
            where = f"{method.upper()} {path[:120]} ({label})"
            assert response.status_code < 500, where
            content = b"".join(response.streaming_content) if response.streaming else response.content
            assert SECRET.encode() not in content, where
            if names_b_object(route):
                assert response.status_code in REFUSED or is_sign_in_redirect(response), \
                    f"{where}: {response.status_code}"
    assert snapshot(org_b) == before


def own_variants(route: Route, a: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    if not route.parameters:
        yield "search for A's patient", {}
        return
    base = {p: (FIXED_VALUES[p][0] if p in FIXED_VALUES else PARAMETERS[p](a)[0]) for p in route.parameters}
    for parameter in route.parameters:
        for value in FIXED_VALUES.get(parameter) or PARAMETERS[parameter](a):
            yield f"A's {parameter}", {**base, parameter: value}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.route or "/")
def test_clinic_a_on_its_own_ids_logs_no_patient_data(client, mint, org_a, clinic_a, route, webhooks_on, caplog):
    token = bearer(mint(org_a, role="admin"))
    searches = {"q": PHI["last_name"], "search": PHI["phone_e164"], "email": PHI["email"]}
    with caplog.at_level("DEBUG"):
        for label, values in own_variants(route, clinic_a):
            path = route.path(values)
            for method in METHODS:
                # GET searches for the patient; POST sends the patient's name as a form's text.
                data = {"get": searches, "post": {"content": PHI["last_name"], **searches}}.get(method)
                call = getattr(client, method)
                response = call(path, data, **token) if data is not None else call(path, **token)
                assert response.status_code < 500, f"{method.upper()} {path} ({label})"
                if response.streaming:
                    b"".join(response.streaming_content)
    logged = caplog.text + "".join(str(record.args) for record in caplog.records)
    for value in PHI.values():
        assert value not in logged, f"{value!r} logged on {route.route}"


@pytest.mark.parametrize("route", [r for r in ROUTES if r.name not in PUBLIC], ids=lambda r: r.route or "/")
def test_without_a_token_every_url_is_refused(client, clinic_b, route, settings):
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 100_000
    cases = list(variants(route, clinic_b))[:3] if route.parameters else [("no parameters", {})]
    for label, values in cases:
        path = route.path(values)
        for method in METHODS:
            response = getattr(client, method)(path)
            where = f"{method.upper()} {path[:120]} ({label}): {response.status_code}"
            assert response.status_code in REFUSED | {401, 503} or is_sign_in_redirect(response), where
            assert SECRET.encode() not in response.content, where


@pytest.mark.parametrize("path", ["/admin/", "/admin/tenants/organization/", "/admin/billing/stripeevent/",
                                  "/admin/billing/plan/overview/", "/django-rq/"])
def test_a_clinic_token_does_not_open_the_staff_areas(client, mint, org_a, clinic_b, path):
    response = client.get(path, **bearer(mint(org_a, role="admin")))
    assert response.status_code in (302, 403), path
    if response.status_code == 302:
        assert response["Location"].startswith("/admin/login/"), path
