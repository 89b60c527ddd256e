"""The same Stripe event delivered twice at the same moment is processed once (two connections, committed)."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from billing.models import StripeEvent
from billing.tests.stripe_events import event, signed, subscription
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization

SECRET = "whsec_concurrent"


@pytest.mark.django_db(transaction=True)
def test_the_same_event_at_the_same_moment_is_processed_once(settings_override):
    organization = Organization.objects.get(clerk_org_id="org_test_harbour")
    Organization.objects.filter(pk=organization.pk).update(stripe_customer_id="cus_race")
    bodies = [event("customer.subscription.updated", subscription("cus_race", status=status), created=1_780_000_000 + n)
              for n, status in enumerate(["trialing", "active", "past_due"])]
    answers: list[tuple[str, str]] = []
    for body in bodies:
        barrier = threading.Barrier(2)

        def deliver(body=body, barrier=barrier):
            with connection.cursor() as cursor:  # this thread's own connection, as the app role
                cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')
            barrier.wait()
            answers.append((body["id"], signed(Client(), body, secret=SECRET).json()["status"]))
            connection.close()

        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(answers) == sorted((body["id"], status) for body in bodies for status in ("duplicate", "processed"))
    assert Organization.objects.get(pk=organization.pk).subscription_status == "past_due"
    with bind_organization(organization):
        assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 3
        assert AuditLog.objects.filter(action="billing.subscription_changed").count() == 3


@pytest.fixture
def settings_override(settings):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 10_000
