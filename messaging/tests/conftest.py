"""Fixtures shared by the messaging tests."""

from __future__ import annotations

import pytest

from messaging.tests.chatwoot_helpers import TOKEN_A, TOKEN_B
from routiq.testing.chatwoot_stub import ChatwootStub


@pytest.fixture
def private_networks(settings):
    """Vendor stand-ins listen on 127.0.0.1, which a clinic-chosen destination may not be in production."""
    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True


@pytest.fixture
def chatwoot():
    """Organization A's Chatwoot (account 7)."""
    with ChatwootStub(api_token=TOKEN_A, account_id=7) as stub:
        yield stub


@pytest.fixture
def chatwoot_b():
    """Organization B's Chatwoot: the same account number on another server, so ids collide on purpose."""
    with ChatwootStub(api_token=TOKEN_B, account_id=7) as stub:
        yield stub


@pytest.fixture
def sleeps():
    return []
