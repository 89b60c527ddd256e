"""Platform admin: billing state on the organization page, the plan table (audited), Stripe's events
(read-only, reprocess) and the billing overview."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Plan, StripeEvent
from billing.selectors import billing_overview
from billing.tests.stripe_events import event, subscription
from tenants.models import AuditLog, Organization, User
from tenants.rls.binding import bind_organization, platform_access

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = User.objects.create_user(username="billing-admin", password="correct horse battery staple",
                                    is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def test_the_organization_page_shows_its_billing_state_read_only(client, staff, org_a):
    Organization.objects.filter(pk=org_a.pk).update(
        stripe_customer_id="cus_admin_view", subscription_status="past_due",
        billing_lapsed_at=timezone.now() - timedelta(days=30))
    page = client.get(f"/admin/tenants/organization/{org_a.pk}/change/").content.decode()
    assert "cus_admin_view" in page
    assert "The last payment failed." in page and "syncs paused" in page
    assert 'name="stripe_customer_id"' not in page and 'name="subscription_status"' not in page


def test_plan_changes_are_audited_before_and_after(client, staff):
    client.post("/admin/billing/plan/add/", {"stripe_price_id": "price_x", "name": "Basic", "amount": "4900",
                                             "currency": "aud", "interval": "month", "features": '["Inbox"]',
                                             "is_active": "on", "sort_order": "0"})
    plan = Plan.objects.get(stripe_price_id="price_x")
    client.post(f"/admin/billing/plan/{plan.pk}/change/", {"stripe_price_id": "price_x", "name": "Basic",
                                                            "amount": "5900", "currency": "aud", "interval": "month",
                                                            "features": '["Inbox"]', "is_active": "on",
                                                            "sort_order": "0"})
    with platform_access("test: plan audit"):
        rows = list(AuditLog.objects.filter(object_type="plan").order_by("id").values_list("action", "changes"))
    assert rows[0][0] == "billing.plan_created"
    assert rows[1] == ("billing.plan_changed", {"amount": [4900, 5900]})


def test_events_are_read_only_and_can_be_reprocessed(client, staff, org_a):
    Organization.objects.filter(pk=org_a.pk).update(stripe_customer_id="cus_A")
    body = event("customer.subscription.created", subscription("cus_A"))
    with bind_organization(org_a):
        StripeEvent.objects.create(id=body["id"], organization=org_a, type=body["type"], created=timezone.now(),
                                   payload=body, outcome="failed", error="boom")
    listing = client.get("/admin/billing/stripeevent/")
    assert listing.status_code == 200 and body["id"].encode() in listing.content
    assert client.get(f"/admin/billing/stripeevent/{body['id']}/change/").status_code == 200  # a view, no form
    assert client.post(f"/admin/billing/stripeevent/{body['id']}/delete/").status_code == 403

    response = client.post("/admin/billing/stripeevent/", {"action": "reprocess", "_selected_action": [body["id"]]},
                           follow=True)

    assert b"Reprocessed 1 event(s); 0 failed." in response.content
    assert Organization.objects.get(pk=org_a.pk).subscription_status == "active"
    with bind_organization(org_a):
        stored = StripeEvent.objects.get(pk=body["id"])
    assert (stored.outcome, stored.error) == ("processed", "")


def test_billing_overview_counts_statuses_revenue_and_trials(client, staff, org_a, org_b, settings):
    settings.BILLING_TRIAL_DAYS = 14
    Plan.objects.create(stripe_price_id="price_m", name="Monthly", amount=4900)
    Plan.objects.create(stripe_price_id="price_y", name="Yearly", amount=120000, interval="year")
    Organization.objects.filter(pk=org_a.pk).update(subscription_status="active", stripe_price_id="price_y")
    Organization.objects.filter(pk=org_b.pk).update(subscription_status="trialing",
                                                    subscription_trial_end=timezone.now() + timedelta(days=3))
    with platform_access("test: overview"):
        overview = billing_overview()
    assert dict(overview.by_status)["Active"] == 1 and dict(overview.by_status)["Trialing"] == 1
    assert {str(k): str(v) for k, v in overview.monthly_recurring_revenue.items()} == {"AUD": "100.00"}
    assert [trial.organization.pk for trial in overview.trials_ending] == [org_b.pk]

    page = client.get("/admin/billing/plan/overview/")
    assert page.status_code == 200
    assert b"100.00" in page.content and org_b.name.encode() in page.content
