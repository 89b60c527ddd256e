"""pytest fixtures for signed-in requests: a test signing key configured as CLERK_JWT_KEY, token minting."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from tenants.clerk.authentication import verifier
from tenants.clerk.dev_tokens import SigningKey, mint_session_token

AUTHORIZED_PARTY = "http://testserver"


@functools.cache
def test_signing_key() -> SigningKey:
    return SigningKey.generate(kid="test-key")


@pytest.fixture
def clerk_key(settings) -> Iterator[SigningKey]:
    key = test_signing_key()
    settings.CLERK_JWT_KEY = key.public_pem()
    settings.CLERK_JWKS_URL = ""
    settings.CLERK_AUTHORIZED_PARTIES = [AUTHORIZED_PARTY]
    verifier.cache_clear()
    yield key
    verifier.cache_clear()


@pytest.fixture
def mint(clerk_key):
    """mint(organization, user_id=…, role=…, **overrides) -> a valid session token for that organization."""

    def _mint(organization=None, *, user_id: str = "user_test_alice", role: str = "admin", **overrides) -> str:
        return mint_session_token(
            clerk_key,
            user_id=user_id,
            organization_id=organization.clerk_org_id if organization is not None else None,
            organization_role=role,
            **{"azp": AUTHORIZED_PARTY, **overrides},
        )

    return _mint


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
