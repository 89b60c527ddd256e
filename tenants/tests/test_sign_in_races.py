"""A new member's first requests arrive together (a page and its htmx parts, two tabs): each is answered,
and one user and one membership come of them (found by the connection-safety test as a 500)."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from routiq.testing.clerk_fixtures import bearer
from tenants.models import Organization, OrganizationMember, User
from tenants.rls.binding import bind_organization


@pytest.mark.django_db(transaction=True)
def test_simultaneous_first_requests_of_a_new_member_make_one_user_and_one_membership(mint):
    organization = Organization.objects.get(clerk_org_id="org_test_harbour")
    token = bearer(mint(organization, user_id="user_race_new", role="member"))
    barrier, statuses = threading.Barrier(4), []

    def first_request():
        with connection.cursor() as cursor:  # this thread's own connection, as the app role
            cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')
        barrier.wait()
        try:
            statuses.append(Client(raise_request_exception=False).get("/patients/", **token).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=first_request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200, 200, 200]
    assert User.objects.filter(clerk_user_id="user_race_new").count() == 1
    with bind_organization(organization):
        members = OrganizationMember.objects.filter(organization=organization, user__clerk_user_id="user_race_new")
        assert members.count() == 1
