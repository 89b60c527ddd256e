from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from patients.clients.cliniko import ClinikoClient
from routiq.testing.cliniko_stub import ClinikoStub
from tenants.credentials import credential_set
from tenants.rls.binding import bind_organization

API_KEY = "MS0xMjM0NTY3ODkwYWJjZGVm-au1"


@pytest.fixture
def cliniko():
    with ClinikoStub(api_keys=[API_KEY], rate_limit_per_minute=None) as stub:
        yield stub


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def cliniko_client(cliniko, sleeps):
    """A client for the stand-in server that records its waits instead of sleeping."""
    return ClinikoClient(API_KEY, contact_email=django_settings.CLINIKO_CONTACT_EMAIL, base_url=cliniko.base_url,
                         sleep=sleeps.append, max_retries=2, random=lambda: 0.5)


@pytest.fixture
def cliniko_credential(org_a, cliniko):
    with bind_organization(org_a):
        return credential_set(organization=org_a, provider="cliniko", secret=API_KEY, base_url=cliniko.base_url)
