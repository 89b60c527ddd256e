"""Locally signed Clerk-shaped session tokens.

Used by the DEBUG-only dev sign-in page and by tests. The tokens have the same
shape as Clerk's, so they go through the real ``ClerkTokenVerifier`` configured
with this key's public PEM or JWKS. Whoever wires this up must make sure the
dev key is never a trusted verification key outside DEBUG.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

_ORG_ROLE_PREFIX = "org:"


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(private_key=key, kid=kid or f"dev-{secrets.token_hex(8)}")

    @classmethod
    def from_private_pem(cls, pem: str, kid: str) -> SigningKey:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError("expected an RSA private key")
        return cls(private_key=key, kid=kid)

    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        ).decode()

    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                encoding=serialization.Encoding.PEM,
                format=serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode()
        )

    def public_jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}


def mint_session_token(
    key: SigningKey,
    *,
    user_id: str,
    organization_id: str | None = None,
    organization_role: str | None = "admin",
    organization_slug: str | None = None,
    azp: str | None = "http://localhost:8000",
    lifetime_seconds: int = 60,
    issued_at: datetime | None = None,
    not_before: datetime | None = None,
    version: int = 2,
    session_status: str | None = None,
    session_id: str | None = None,
    issuer: str = "https://dev.routiq.local",
    extra_claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign an RS256 session token shaped like Clerk's v2 (or v1) format.

    ``extra_claims`` are applied last; a ``None`` value removes that claim,
    which lets tests build tokens missing e.g. ``sub`` or ``exp``.
    ``headers`` override the JOSE header (e.g. a different ``kid``).
    """
    iat = issued_at or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": user_id,
        "sid": session_id or f"sess_dev{secrets.token_hex(8)}",
        "iat": _epoch(iat),
        "nbf": _epoch(not_before or iat),
        "exp": _epoch(iat + timedelta(seconds=lifetime_seconds)),
    }
    if azp is not None:
        claims["azp"] = azp
    if session_status is not None:
        claims["sts"] = session_status

    role = organization_role
    if role and role.startswith(_ORG_ROLE_PREFIX):
        role = role[len(_ORG_ROLE_PREFIX) :]
    if version == 2:
        claims["v"] = 2
        if organization_id:
            org: dict[str, Any] = {"id": organization_id}
            if role:
                org["rol"] = role  # v2 drops the "org:" prefix
            if organization_slug:
                org["slg"] = organization_slug
            claims["o"] = org
    elif version == 1:
        if organization_id:
            claims["org_id"] = organization_id
            if role:
                claims["org_role"] = _ORG_ROLE_PREFIX + role  # v1 keeps it
            if organization_slug:
                claims["org_slug"] = organization_slug
    else:
        raise ValueError("version must be 1 or 2")

    for name, value in (extra_claims or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value

    return jwt.encode(
        claims,
        key.private_key,
        algorithm="RS256",
        headers={"kid": key.kid, **(headers or {})},
    )


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())
