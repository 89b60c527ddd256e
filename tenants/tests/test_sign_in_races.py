"""A new member's first requests arrive together (a page and its htmx parts, two tabs): each is answered,
and one user and one membership come of them (found by the connection-safety test as a 500)."""

from __future__ import annotations

import pytest
from django.test import Client

from routiq.testing.clerk_fixtures import bearer
from routiq.testing.threads import at_once
from tenants.models import Organization, OrganizationMember, User
from tenants.rls.binding import bind_organization


@pytest.mark.django_db(transaction=True)
def test_simultaneous_first_requests_of_a_new_member_make_one_user_and_one_membership(mint):
    organization = Organization.objects.get(clerk_org_id="org_test_harbour")
    token = bearer(mint(organization, user_id="user_race_new", role="member"))
    statuses = at_once(lambda: Client(raise_request_exception=False).get("/patients/", **token).status_code, 4)
    assert statuses == [200, 200, 200, 200]
    assert User.objects.filter(clerk_user_id="user_race_new").count() == 1
    with bind_organization(organization):
        members = OrganizationMember.objects.filter(organization=organization, user__clerk_user_id="user_race_new")
        assert members.count() == 1
