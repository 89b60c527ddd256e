"""Two clinics' requests interleaved over reused database connections: 10,000 requests, 0 foreign rows.

The binding rides on the connection (search_path and app.current_organization), and connections are reused
across requests (CONN_MAX_AGE): a request that inherited the previous request's clinic would show its
patients. Two threads, each on its own persistent connection, alternate clinic A and clinic B (and, every
few requests, an unauthenticated one and a search) and check every page holds only its own clinic's patients.

The same interleaving runs directly and through a real PgBouncer in session pooling (the one pooler
DATABASE_POOLER admits), and, to show why transaction pooling is refused, two client connections that share
one server session there: the organization one of them sent is what the other's next query runs with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test import Client

from patients.models import Contact
from routiq.testing.clerk_fixtures import bearer
from routiq.testing.pgbouncer import start_pgbouncer
from routiq.testing.threads import in_threads
from tenants.models import Organization
from tenants.rls.binding import bind_organization

REQUESTS = int(os.environ.get("ROUTIQ_CONNECTION_SAFETY_REQUESTS", "10000"))
THREADS = 2
MARKERS = {"org_test_harbour": "Harbourmarker", "org_test_summit": "Summitmarker"}


@dataclass
class Interleaving:
    foreign: list[str] = field(default_factory=list)  # a clinic's page that showed the other clinic's patients
    other: list[str] = field(default_factory=list)  # wrong status, own patients missing, an error
    counted: int = 0


def interleave(mint, requests: int, *, database: dict | None = None) -> Interleaving:
    """``requests`` requests of the two clinics over THREADS persistent connections (``database``: their
    settings overrides, e.g. a pooler's HOST and PORT); what each page showed."""
    organizations = [Organization.objects.get(clerk_org_id=clerk_id) for clerk_id in MARKERS]
    for organization in organizations:
        with bind_organization(organization):
            Contact.objects.bulk_create([Contact(organization=organization, first_name=f"Pat{n}",
                                                 last_name=MARKERS[organization.clerk_org_id]) for n in range(3)])

    def fresh_tokens() -> dict[str, dict]:  # a Clerk token lives 60 s; the run takes longer
        return {o.clerk_org_id: bearer(mint(o, user_id=f"user_conn_{o.slug}", role="member")) for o in organizations}
    result = Interleaving()

    def work(index: int) -> int:
        """One thread on its own connection, reused for all its requests; returns how many clinic requests."""
        client, counted = Client(), 0
        for n in range(requests // THREADS):
            if n % 500 == 0:
                tokens = fresh_tokens()
            own, other = list(MARKERS)[(n + index) % 2], list(MARKERS)[(n + index + 1) % 2]
            try:
                if n % 50 == 7:  # an anonymous request in between: nothing bound, nothing shown
                    page = client.get("/patients/", HTTP_ACCEPT="text/html")
                    if any(m.encode() in page.content for m in MARKERS.values()):
                        result.foreign.append(f"anonymous request {n}")
                    elif page.status_code != 302:
                        result.other.append(f"anonymous request {n}: {page.status_code}")
                    continue
                query = {"q": "Pat1"} if n % 10 == 3 else {}
                page = client.get("/patients/", query, HTTP_HX_REQUEST="true", **tokens[own])
            except Exception as exc:  # noqa: BLE001 - counted: the test asserts there are none
                result.other.append(f"thread {index} request {n} as {own}: {exc!r}")
                continue
            counted += 1
            if MARKERS[other].encode() in page.content:
                result.foreign.append(f"thread {index} request {n} as {own}")
            elif page.status_code != 200 or MARKERS[own].encode() not in page.content:
                result.other.append(f"thread {index} request {n} as {own}: {page.status_code}")
        return counted

    result.counted = sum(in_threads(work, THREADS, database=database))
    return result


@pytest.fixture
def route(request, django_db_setup) -> Iterator[dict | None]:
    """None: straight to PostgreSQL. A pool mode: through a PgBouncer in that mode (settings overrides)."""
    if request.param == "direct":
        yield None
        return
    with start_pgbouncer(connection.settings_dict, pool_mode=request.param,
                         stats_user=settings.DATABASE_APP_ROLE) as bouncer:
        yield {"HOST": bouncer.host, "PORT": str(bouncer.port)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(900)  # 10,000 requests: minutes on a busy machine; the test is about rows, not speed
@pytest.mark.parametrize("route", ["direct", "session"], indirect=True)
def test_interleaved_requests_of_two_clinics_never_see_each_others_rows(mint, route):
    result = interleave(mint, REQUESTS, database=route)
    assert result.foreign == []
    assert result.other == []
    assert result.counted >= REQUESTS * 0.97  # the clinic requests (anonymous ones aside) all ran


@pytest.mark.django_db
@pytest.mark.parametrize(("pool_mode", "seen_by_a_again"), [("session", "a"), ("transaction", "b")])
def test_transaction_pooling_hands_one_connections_organization_to_another(org_a, org_b, pool_mode, seen_by_a_again):
    """Why DATABASE_POOLER refuses transaction pooling. Two client connections through PgBouncer with one
    server connection: A's connection sends A, B's sends B, and A's next query, which has nothing to re-send,
    runs with B's organization in transaction pooling (and keeps A's in session pooling: a server session
    per client)."""
    pool_size = 1 if pool_mode == "transaction" else 2
    with start_pgbouncer(connection.settings_dict, pool_mode=pool_mode, pool_size=pool_size,
                         stats_user=settings.DATABASE_APP_ROLE) as bouncer:
        pooled = bouncer.settings_dict(connection.settings_dict)
        first, second = (type(connections["default"])(dict(pooled), "default") for _ in range(2))

        def organization_seen(wrapper, organization) -> str:
            with bind_organization(organization), wrapper.cursor() as cursor:
                cursor.execute("SELECT current_setting('app.current_organization', true)")
                return cursor.fetchone()[0]
        try:
            assert organization_seen(first, org_a) == str(org_a.pk)
            assert organization_seen(second, org_b) == str(org_b.pk)
            assert organization_seen(first, org_a) == str({"a": org_a, "b": org_b}[seen_by_a_again].pk)
        finally:
            first.close()
            second.close()
