"""Tests for Clerk session-token verification and the Clerk test kit."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from svix.webhooks import Webhook, WebhookVerificationError

from routiq.testing.clerk_stub import (
    JWKSServer,
    forge_token_alg_none,
    forge_token_hs256_with_public_key,
    forge_token_tampered_payload,
    forge_token_wrong_kid,
    new_svix_secret,
    svix_headers,
)
from tenants.clerk.dev_tokens import SigningKey, mint_session_token
from tenants.clerk.tokens import ClerkTokenVerifier, SessionClaims, TokenError

ORIGIN = "http://localhost:8000"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate(kid="key-a")


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate(kid="key-b")


@pytest.fixture
def verifier(key: SigningKey) -> ClerkTokenVerifier:
    return ClerkTokenVerifier(jwt_key_pem=key.public_pem(), authorized_parties=[ORIGIN])


@pytest.fixture
def jwks_server(key: SigningKey) -> Iterator[JWKSServer]:
    with JWKSServer([key]) as server:
        yield server


def jwks_verifier(server: JWKSServer, **kwargs: Any) -> ClerkTokenVerifier:
    return ClerkTokenVerifier(jwks_url=server.url, authorized_parties=[ORIGIN], **kwargs)


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def reason_of(verifier: ClerkTokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    return info.value.reason


def unverified_payload(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


# -- accepted tokens -------------------------------------------------------------


def test_valid_v2_token_with_pem_key(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    issued = ago(10).replace(microsecond=0)
    token = mint_session_token(
        key,
        user_id="user_1",
        session_id="sess_1",
        organization_id="org_1",
        organization_role="admin",
        organization_slug="north-clinic",
        issued_at=issued,
    )
    assert unverified_payload(token)["o"] == {"id": "org_1", "rol": "admin", "slg": "north-clinic"}
    assert verifier.verify(token) == SessionClaims(
        user_id="user_1",
        session_id="sess_1",
        organization_id="org_1",
        organization_role="admin",
        organization_slug="north-clinic",
        issued_at=issued,
        expires_at=issued + timedelta(seconds=60),
        authorized_party=ORIGIN,
        token_version=2,
    )


def test_valid_v2_token_via_jwks_fetches_once(jwks_server: JWKSServer, key: SigningKey) -> None:
    verifier = jwks_verifier(jwks_server)
    token = mint_session_token(key, user_id="user_1", organization_id="org_1")
    for _ in range(3):
        claims = verifier.verify(token)
    assert (claims.user_id, claims.organization_id, claims.organization_role) == (
        "user_1",
        "org_1",
        "admin",
    )
    assert jwks_server.fetch_count == verifier.jwks_fetch_count == 1


def test_v2_role_with_prefix_is_normalised(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    # Clerk documents v2 roles without the prefix; tolerate it anyway.
    token = mint_session_token(key, user_id="user_1", extra_claims={"o": {"id": "org_1", "rol": "org:member"}})
    assert verifier.verify(token).organization_role == "member"


def test_valid_v1_token_strips_org_prefix(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(
        key,
        user_id="user_1",
        organization_id="org_1",
        organization_role="admin",
        version=1,
    )
    payload = unverified_payload(token)
    assert "v" not in payload and payload["org_role"] == "org:admin"
    claims = verifier.verify(token)
    assert claims.organization_id == "org_1"
    assert claims.organization_role == "admin"
    assert claims.token_version == 1


@pytest.mark.parametrize("version", [1, 2])
def test_custom_role_is_normalised(verifier: ClerkTokenVerifier, key: SigningKey, version: int) -> None:
    token = mint_session_token(
        key,
        user_id="user_1",
        organization_id="org_1",
        organization_role="org:billing",
        version=version,
    )
    assert verifier.verify(token).organization_role == "billing"


def test_no_org_claim_means_no_organization(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(key, user_id="user_1")
    assert "o" not in unverified_payload(token)
    claims = verifier.verify(token)
    assert claims.organization_id is None
    assert claims.organization_role is None
    assert claims.organization_slug is None


def test_expiry_within_leeway_is_accepted(key: SigningKey) -> None:
    # Expired ~3 s ago: inside the default 5 s leeway, outside a zero leeway.
    token = mint_session_token(key, user_id="user_1", issued_at=ago(63))
    lenient = ClerkTokenVerifier(jwt_key_pem=key.public_pem(), authorized_parties=[ORIGIN])
    strict = ClerkTokenVerifier(jwt_key_pem=key.public_pem(), authorized_parties=[ORIGIN], leeway_seconds=0)
    assert lenient.verify(token).user_id == "user_1"
    assert reason_of(strict, token) == "expired"


def test_no_authorized_parties_configured_skips_azp_check(key: SigningKey) -> None:
    verifier = ClerkTokenVerifier(jwt_key_pem=key.public_pem(), authorized_parties=[])
    assert verifier.verify(mint_session_token(key, user_id="u", azp=None)).authorized_party is None


def test_pem_wins_over_jwks_url(key: SigningKey) -> None:
    verifier = ClerkTokenVerifier(
        jwt_key_pem=key.public_pem(),
        jwks_url="http://127.0.0.1:9/unreachable",
        authorized_parties=[ORIGIN],
    )
    assert verifier.verify(mint_session_token(key, user_id="user_1")).user_id == "user_1"
    assert verifier.jwks_fetch_count == 0


def test_pem_with_escaped_newlines_is_accepted(key: SigningKey) -> None:
    escaped = key.public_pem().replace("\n", "\\n")
    verifier = ClerkTokenVerifier(jwt_key_pem=escaped, authorized_parties=[ORIGIN])
    assert verifier.verify(mint_session_token(key, user_id="user_1")).user_id == "user_1"


# -- rejected claims --------------------------------------------------------------


def test_expired_token(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    assert reason_of(verifier, mint_session_token(key, user_id="u", issued_at=ago(120))) == "expired"


def test_not_yet_valid_token(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(key, user_id="u", not_before=ago(-60))
    assert reason_of(verifier, token) == "not-yet-valid"


def test_wrong_azp(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(key, user_id="u", azp="https://evil.example")
    assert reason_of(verifier, token) == "unauthorized-party"


def test_missing_azp_with_parties_configured(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    assert reason_of(verifier, mint_session_token(key, user_id="u", azp=None)) == "unauthorized-party"


def test_pending_session(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(key, user_id="u", session_status="pending")
    assert reason_of(verifier, token) == "session-pending"


def test_missing_subject(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(key, user_id="u", extra_claims={"sub": None})
    assert reason_of(verifier, token) == "missing-subject"


def test_missing_expiry(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(key, user_id="u", extra_claims={"exp": None})
    assert reason_of(verifier, token) == "missing-claim"


def test_unknown_token_version(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    token = mint_session_token(key, user_id="u", extra_claims={"v": 3})
    assert reason_of(verifier, token) == "unsupported-version"


# -- forged tokens ----------------------------------------------------------------


def test_alg_none_is_rejected(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    genuine = mint_session_token(key, user_id="u")
    verifier.verify(genuine)
    assert reason_of(verifier, forge_token_alg_none(genuine)) == "bad-algorithm"


def test_hs256_with_public_key_secret_is_rejected(
    verifier: ClerkTokenVerifier, jwks_server: JWKSServer, key: SigningKey
) -> None:
    forged = forge_token_hs256_with_public_key(mint_session_token(key, user_id="u"), key)
    assert reason_of(verifier, forged) == "bad-algorithm"
    assert reason_of(jwks_verifier(jwks_server), forged) == "bad-algorithm"


def test_tampered_payload_is_rejected(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    genuine = mint_session_token(key, user_id="user_1", organization_id="org_1")
    verifier.verify(genuine)
    forged = forge_token_tampered_payload(genuine, sub="user_admin")
    assert reason_of(verifier, forged) == "bad-signature"


def test_token_signed_by_other_key_under_trusted_kid(
    jwks_server: JWKSServer, key: SigningKey, other_key: SigningKey
) -> None:
    forged = forge_token_wrong_kid(other_key, key.kid, user_id="u")
    assert reason_of(jwks_verifier(jwks_server), forged) == "bad-signature"


# -- JWKS cache ---------------------------------------------------------------------


def test_unknown_kid_refetches_after_rotation(jwks_server: JWKSServer, key: SigningKey, other_key: SigningKey) -> None:
    verifier = jwks_verifier(jwks_server, jwks_refetch_interval_seconds=0.05)
    verifier.verify(mint_session_token(key, user_id="u"))
    rotated = mint_session_token(other_key, user_id="user_2")
    assert reason_of(verifier, rotated) == "unknown-kid"

    jwks_server.set_keys([key, other_key])
    time.sleep(0.06)
    assert verifier.verify(rotated).user_id == "user_2"
    assert verifier.verify(rotated).user_id == "user_2"
    assert jwks_server.fetch_count == 2


def test_unknown_kid_flood_refetches_at_most_once_per_interval(jwks_server: JWKSServer, key: SigningKey) -> None:
    interval = 1.0  # generous: the first flood must finish inside it, even on a slow CI box
    verifier = jwks_verifier(jwks_server, jwks_refetch_interval_seconds=interval)
    verifier.verify(mint_session_token(key, user_id="u"))
    flood = [forge_token_wrong_kid(key, f"bogus-{i}", user_id="u") for i in range(100)]

    def blast() -> set[str]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return set(pool.map(lambda t: reason_of(verifier, t), flood))

    assert blast() == {"unknown-kid"}
    assert jwks_server.fetch_count == 1  # still inside the first interval

    time.sleep(interval + 0.05)
    assert blast() == {"unknown-kid"}
    assert jwks_server.fetch_count == 2  # exactly one refetch for the whole flood


def test_concurrent_cold_start_fetches_once(key: SigningKey) -> None:
    # Requests arriving while the first fetch is in flight must wait for it,
    # not fail and not fetch again.
    with JWKSServer([key], response_delay=0.2) as server:
        verifier = jwks_verifier(server)
        token = mint_session_token(key, user_id="user_1")
        with ThreadPoolExecutor(max_workers=8) as pool:
            users = set(pool.map(lambda _: verifier.verify(token).user_id, range(8)))
        assert users == {"user_1"}
        assert server.fetch_count == 1


@pytest.mark.parametrize(
    "failure",
    [None, (503, b"unavailable"), (200, b"not json"), (200, b'{"keys": []}')],
    ids=["connection-refused", "http-503", "invalid-json", "no-keys"],
)
def test_jwks_unavailable(key: SigningKey, failure: tuple[int, bytes] | None) -> None:
    server = JWKSServer([key]).start()
    if failure is None:
        server.stop()
    else:
        server.fail_with(*failure)
    try:
        verifier = jwks_verifier(server, http_timeout_seconds=1)
        token = mint_session_token(key, user_id="u")
        assert reason_of(verifier, token) == "jwks-unavailable"
        # The failed attempt counts towards the rate limit: no retry storm.
        assert reason_of(verifier, token) == "jwks-unavailable"
        assert verifier.jwks_fetch_count == 1
    finally:
        server.stop()


# -- malformed input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b.c",
        "a.b",
        "...",
        "é.é.é",
        "eyJhbGciOiJSUzI1NiJ9.e30",  # header only
        "bnVsbA.e30.AA",  # header is JSON null
        base64.urlsafe_b64encode(b"[" * 9000).decode() + ".e30.AA",  # json recursion bomb
        "x" * 20_000,
    ],
    ids=["empty", "abc", "a.b.c", "a.b", "dots", "non-ascii", "header-only", "null-header", "deep", "huge"],
)
def test_garbage_is_malformed(verifier: ClerkTokenVerifier, garbage: str) -> None:
    assert reason_of(verifier, garbage) == "malformed"


@pytest.mark.parametrize("claim", ["iat", "exp"])
def test_out_of_range_timestamp_is_malformed(verifier: ClerkTokenVerifier, key: SigningKey, claim: str) -> None:
    # Validly signed, but no datetime can represent it.
    token = mint_session_token(key, user_id="u", extra_claims={claim: 10**20 if claim == "exp" else -(10**12)})
    assert reason_of(verifier, token) == "malformed"


def test_mutated_tokens_only_ever_raise_token_error(verifier: ClerkTokenVerifier, key: SigningKey) -> None:
    genuine = mint_session_token(key, user_id="u")
    rng = random.Random(1234)
    alphabet = 'ABCxyz019-_.=+/{}"é '
    for _ in range(300):
        chars = list(genuine)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        try:
            verifier.verify("".join(chars))
        except TokenError:
            pass  # any other exception type fails the test


# -- remembered tokens ---------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token PyJWT decodes (signature and claims checked) during the test."""
    seen: list[str] = []
    original = jwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    return seen


def test_a_token_sent_again_is_checked_in_full_once(
    verifier: ClerkTokenVerifier, key: SigningKey, decodes: list[str]
) -> None:
    token = mint_session_token(key, user_id="user_1", organization_id="org_1", session_id="sess_1", azp=ORIGIN)

    answers = [verifier.verify(token) for _ in range(3)]

    assert decodes == [token]
    assert answers[0] == answers[1] == answers[2]
    assert (answers[2].user_id, answers[2].organization_id, answers[2].session_id) == ("user_1", "org_1", "sess_1")


def test_a_remembered_token_is_refused_once_it_expires(key: SigningKey) -> None:
    strict = ClerkTokenVerifier(jwt_key_pem=key.public_pem(), authorized_parties=[ORIGIN], leeway_seconds=0)
    token = mint_session_token(key, user_id="u", issued_at=ago(58.5), azp=ORIGIN)  # exp within 0.5-1.5 s
    assert strict.verify(token).user_id == "u"

    time.sleep(1.6)

    assert reason_of(strict, token) == "expired"
    assert reason_of(strict, token) == "expired"


def test_an_altered_remembered_token_is_checked_in_full_and_refused(
    verifier: ClerkTokenVerifier, key: SigningKey, decodes: list[str]
) -> None:
    token = mint_session_token(key, user_id="u", azp=ORIGIN)
    verifier.verify(token)
    promoted = forge_token_tampered_payload(token, sub="user_admin")
    resigned = token[:-2] + ("AA" if not token.endswith("AA") else "BB")

    assert reason_of(verifier, promoted) == "bad-signature"
    assert reason_of(verifier, resigned) in ("bad-signature", "malformed")
    assert decodes == [token, promoted, resigned]


def test_a_refused_token_is_not_remembered(verifier: ClerkTokenVerifier, key: SigningKey, decodes: list[str]) -> None:
    token = mint_session_token(key, user_id="u", azp="https://evil.example")

    assert [reason_of(verifier, token) for _ in range(2)] == ["unauthorized-party"] * 2
    assert decodes == [token, token]


def test_the_memo_is_bounded_and_forgets_the_least_recently_used(key: SigningKey, decodes: list[str]) -> None:
    small = ClerkTokenVerifier(jwt_key_pem=key.public_pem(), authorized_parties=[], verified_memo_size=2)
    first, second, third = (mint_session_token(key, user_id=f"user_{n}") for n in range(3))

    for token in (first, second, first, third, first, second):
        small.verify(token)

    # first stays (used again before third came); second made room for third, so it is checked again.
    assert decodes == [first, second, third, second]


def test_a_remembered_token_is_checked_again_once_its_key_is_withdrawn(
    jwks_server: JWKSServer, key: SigningKey, other_key: SigningKey
) -> None:
    verifier = jwks_verifier(jwks_server, jwks_refetch_interval_seconds=0.05)
    old = mint_session_token(key, user_id="u", azp=ORIGIN)
    assert verifier.verify(old).user_id == "u"

    jwks_server.set_keys([other_key])  # Clerk rotated key-a out
    time.sleep(0.06)
    assert verifier.verify(mint_session_token(other_key, user_id="v", azp=ORIGIN)).user_id == "v"  # the refetch

    assert reason_of(verifier, old) == "unknown-kid"


# -- svix -----------------------------------------------------------------------------


def test_svix_headers_are_accepted_by_svix() -> None:
    secret = new_svix_secret()
    body = json.dumps({"type": "user.created", "data": {"id": "user_1"}}).encode()
    headers = svix_headers(secret, body, msg_id="msg_1")
    Webhook(secret).verify(body, headers)  # raises on failure; returns None in 2.9.1
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"user_1", b"user_2"), headers)
