"""Two clinics' requests interleaved over reused database connections: 10,000 requests, 0 foreign rows.

The binding rides on the connection (search_path and app.current_organization), and connections are reused
across requests (CONN_MAX_AGE): a request that inherited the previous request's clinic would show its
patients. Two threads, each on its own persistent connection, alternate clinic A and clinic B (and, every
few requests, an unauthenticated one and a search) and check every page holds only its own clinic's patients.
"""

from __future__ import annotations

import os

import pytest
from django.test import Client

from patients.models import Contact
from routiq.testing.clerk_fixtures import bearer
from routiq.testing.threads import in_threads
from tenants.models import Organization
from tenants.rls.binding import bind_organization

REQUESTS = int(os.environ.get("ROUTIQ_CONNECTION_SAFETY_REQUESTS", "10000"))
THREADS = 2
MARKERS = {"org_test_harbour": "Harbourmarker", "org_test_summit": "Summitmarker"}


@pytest.mark.django_db(transaction=True)
def test_interleaved_requests_of_two_clinics_never_see_each_others_rows(mint):
    organizations = [Organization.objects.get(clerk_org_id=clerk_id) for clerk_id in MARKERS]
    for organization in organizations:
        with bind_organization(organization):
            Contact.objects.bulk_create([Contact(organization=organization, first_name=f"Pat{n}",
                                                 last_name=MARKERS[organization.clerk_org_id]) for n in range(3)])

    def fresh_tokens() -> dict[str, dict]:  # a Clerk token lives 60 s; the run takes longer
        return {o.clerk_org_id: bearer(mint(o, user_id=f"user_conn_{o.slug}", role="member")) for o in organizations}
    failures: list[str] = []

    def work(index: int) -> int:
        """One thread on its own connection, reused for all its requests; returns how many clinic requests."""
        client, counted = Client(), 0
        for n in range(REQUESTS // THREADS):
            if n % 500 == 0:
                tokens = fresh_tokens()
            own, other = list(MARKERS)[(n + index) % 2], list(MARKERS)[(n + index + 1) % 2]
            if n % 50 == 7:  # an anonymous request in between: nothing bound, nothing shown
                page = client.get("/patients/", HTTP_ACCEPT="text/html")
                if page.status_code != 302 or any(m.encode() in page.content for m in MARKERS.values()):
                    failures.append(f"anonymous request {n}: {page.status_code}")
                continue
            query = {"q": "Pat1"} if n % 10 == 3 else {}
            page = client.get("/patients/", query, HTTP_HX_REQUEST="true", **tokens[own])
            counted += 1
            if page.status_code != 200 or MARKERS[own].encode() not in page.content \
                    or MARKERS[other].encode() in page.content:
                failures.append(f"thread {index} request {n} as {own}: {page.status_code}")
        return counted

    counted = in_threads(work, THREADS)
    assert failures == []
    assert sum(counted) >= REQUESTS * 0.97  # the clinic requests (anonymous ones aside) all ran
