"""Plan gating: a lapsed organization keeps reading its data, sees a banner everywhere, and after the grace
period its syncs pause (the scheduler skips it; "Sync now" says why) until Stripe reports it paid."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.gating import billing_standing, sync_pause_reason
from billing.tests.stripe_events import event, invoice, signed, subscription
from patients.jobs import enqueue_incremental_syncs
from routiq.testing.clerk_fixtures import bearer
from routiq.testing.queues import waiting_job_ids
from tenants.credentials import credential_set
from tenants.models import Organization
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
SECRET = "whsec_gating"
NOW = int(timezone.now().timestamp())


@pytest.fixture(autouse=True)
def billing_settings(settings):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    settings.BILLING_GRACE_DAYS = 0
    settings.BILLING_TRIAL_DAYS = 14


@pytest.fixture
def subscribed(org_a, org_b, client):
    """Both clinics subscribed and active, with a Cliniko credential each."""
    for organization, customer in ((org_a, "cus_A"), (org_b, "cus_B")):
        Organization.objects.filter(pk=organization.pk).update(stripe_customer_id=customer)
        with bind_organization(organization):
            credential_set(organization=organization, provider="cliniko", secret=f"key-{customer}")
        signed(client, event("customer.subscription.created", subscription(customer, sub_id=f"sub_{customer}"),
                             created=NOW - 60), secret=SECRET)
    return org_a


def scheduled_organizations(empty_queue, django_capture_on_commit_callbacks) -> set[str]:
    """The organizations one scheduler tick queues a Cliniko sync for (from an empty queue)."""
    sync_queue = empty_queue("sync")
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_incremental_syncs()
    queued = waiting_job_ids(sync_queue)
    return {job_id.split("-", 1)[1].rsplit("-", 1)[0] for job_id in queued}


def test_payment_failed_pauses_syncs_and_shows_the_banner_then_paid_resumes(
        client, subscribed, org_a, org_b, mint, empty_queue, django_capture_on_commit_callbacks):
    assert scheduled_organizations(empty_queue, django_capture_on_commit_callbacks) == {str(org_a.pk), str(org_b.pk)}

    signed(client, event("invoice.payment_failed", invoice("cus_A", sub_id="sub_cus_A", status="open"),
                         created=NOW - 30), secret=SECRET)

    assert Organization.objects.get(pk=org_a.pk).subscription_status == "past_due"
    assert scheduled_organizations(empty_queue, django_capture_on_commit_callbacks) == {str(org_b.pk)}
    page = client.get("/patients/", **bearer(mint(org_a)))
    assert page.status_code == 200  # the data stays readable
    assert b"The last payment failed." in page.content and b"Syncs are paused" in page.content
    assert b'href="/billing/"' in page.content
    assert b"billing-banner" not in client.get("/patients/", **bearer(mint(org_b))).content

    signed(client, event("invoice.paid", invoice("cus_A", sub_id="sub_cus_A", invoice_id="in_2"), created=NOW - 10),
           secret=SECRET)

    assert Organization.objects.get(pk=org_a.pk).subscription_status == "active"
    assert scheduled_organizations(empty_queue, django_capture_on_commit_callbacks) == {str(org_a.pk), str(org_b.pk)}
    assert b"billing-banner" not in client.get("/patients/", **bearer(mint(org_a))).content


def test_within_the_grace_period_syncs_run_and_the_banner_says_when_they_pause(
        client, settings, subscribed, org_a, mint, empty_queue, django_capture_on_commit_callbacks):
    settings.BILLING_GRACE_DAYS = 7
    signed(client, event("customer.subscription.updated", subscription("cus_A", sub_id="sub_cus_A", status="past_due"),
                         created=NOW), secret=SECRET)
    organization = Organization.objects.get(pk=org_a.pk)
    standing = billing_standing(organization)
    assert (standing.in_good_standing, standing.syncs_paused) == (False, False)
    assert standing.syncs_pause_at == organization.billing_lapsed_at + timedelta(days=7)
    assert str(org_a.pk) in scheduled_organizations(empty_queue, django_capture_on_commit_callbacks)
    page = client.get("/patients/", **bearer(mint(org_a, role="member")))
    assert b"Syncs pause on" in page.content and b"Ask a clinic admin" in page.content


def test_sync_now_while_paused_explains_why_and_queues_nothing(
        client, subscribed, org_a, mint, empty_queue, django_capture_on_commit_callbacks):
    sync_queue = empty_queue("sync")
    signed(client, event("customer.subscription.deleted", subscription("cus_A", sub_id="sub_cus_A", status="canceled"),
                         created=NOW), secret=SECRET)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/settings/integrations/cliniko/sync", **bearer(mint(org_a)), follow=True)
    assert response.status_code == 200
    assert b"Syncs are paused: The subscription has ended." in response.content
    assert waiting_job_ids(sync_queue) == set()


def test_no_subscription_is_a_free_trial_that_lapses_after_its_length(org_a, settings):
    organization = Organization.objects.get(pk=org_a.pk)
    standing = billing_standing(organization)
    assert (standing.in_good_standing, standing.trial_ends_at) == (True, organization.created_at + timedelta(days=14))
    assert sync_pause_reason(organization) is None
    organization.created_at = timezone.now() - timedelta(days=15)
    assert sync_pause_reason(organization) == (
        "Syncs are paused: The free trial has ended. An admin can update billing on the Billing page.")
    settings.BILLING_GRACE_DAYS = 2
    assert sync_pause_reason(organization) is None  # lapsed a day ago, two days' grace
