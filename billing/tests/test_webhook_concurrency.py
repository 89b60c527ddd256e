"""The same Stripe event delivered twice at the same moment is processed once (two connections, committed)."""

from __future__ import annotations

import pytest
from django.test import Client

from billing.models import StripeEvent
from billing.tests.stripe_events import event, signed, subscription
from routiq.testing.threads import at_once
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization

SECRET = "whsec_concurrent"


@pytest.mark.django_db(transaction=True)
def test_the_same_event_at_the_same_moment_is_processed_once(settings_override):
    organization = Organization.objects.get(clerk_org_id="org_test_harbour")
    Organization.objects.filter(pk=organization.pk).update(stripe_customer_id="cus_race")
    bodies = [event("customer.subscription.updated", subscription("cus_race", status=status), created=1_780_000_000 + n)
              for n, status in enumerate(["trialing", "active", "past_due"])]
    answers = [(body["id"], status) for body in bodies
               for status in at_once(lambda body=body: signed(Client(), body, secret=SECRET).json()["status"], 2)]

    assert sorted(answers) == sorted((body["id"], status) for body in bodies for status in ("duplicate", "processed"))
    assert Organization.objects.get(pk=organization.pk).subscription_status == "past_due"
    with bind_organization(organization):
        assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 3
        assert AuditLog.objects.filter(action="billing.subscription_changed").count() == 3


@pytest.fixture
def settings_override(settings):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 10_000
