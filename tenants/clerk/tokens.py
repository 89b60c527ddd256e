"""Verify Clerk session tokens without a network call per request.

The token comes from the ``__session`` cookie or an ``Authorization: Bearer``
header. It is an RS256 JWT that lives about 60 seconds, so it is verified
locally against either a PEM public key (``CLERK_JWT_KEY``) or a JWKS document
(``CLERK_JWKS_URL``) that is fetched once and cached by ``kid``, in the process and, given a
``jwks_store``, in a store every process shares (a new worker asks it before Clerk). A token verified in full
is remembered (bounded, by its hash) for the rest of its life, so the client's next requests cost no RS256
check; its exp/nbf are checked again on every use (``ClerkTokenVerifier._remembered``).

No Django imports: configuration is passed in so this stays a plain, testable
module; the middleware owns reading settings and turning ``TokenError`` into
an anonymous request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import RSAAlgorithm
from jwt.types import Options

_ALGORITHM = "RS256"
_MIN_RSA_BITS = 2048
# Clerk tokens are about 1 KB; refuse to spend effort parsing anything huge.
_MAX_TOKEN_CHARS = 16 * 1024
# exp/iat are required so a token can never be valid forever. iss/aud are not
# part of Clerk's session-token contract (azp plays the audience role).
_DECODE_OPTIONS: Options = {
    "require": ["exp", "iat"],
    "verify_aud": False,
    "verify_iss": False,
}
_ORG_ROLE_PREFIX = "org:"
# Verified tokens remembered per process: far more than the tokens alive at once in a worker (each lives ~60 s).
_VERIFIED_MEMO_SIZE = 4096


class JwksStore(Protocol):
    """Where processes share the JWKS document (public keys only). Both calls must not raise."""

    def get(self) -> Any: ...

    def put(self, document: Any) -> None: ...


class TokenError(Exception):
    """A session token was rejected. ``reason`` is a short machine code."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class SessionClaims:
    user_id: str
    session_id: str | None
    organization_id: str | None
    # "admin", "member" or a custom role name; never carries the "org:" prefix.
    organization_role: str | None
    organization_slug: str | None
    issued_at: datetime
    expires_at: datetime
    authorized_party: str | None
    token_version: int


# PyJWT exceptions -> TokenError reasons; first match wins (subclasses first).
_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not-yet-valid"),
    (jwt.InvalidSignatureError, "bad-signature"),
    (jwt.InvalidAlgorithmError, "bad-algorithm"),
    (jwt.MissingRequiredClaimError, "missing-claim"),
    (jwt.DecodeError, "malformed"),
    (jwt.PyJWTError, "invalid-claims"),
)


@dataclass(frozen=True)
class _Verified:
    claims: SessionClaims
    kid: str | None
    key: RSAPublicKey  # the key object that checked the signature
    not_before: int  # iat, or nbf if later
    expires: int


class _VerifiedTokens:
    """A bounded LRU of tokens that passed full verification, by the SHA-256 of the whole token (so the tokens
    themselves, bearer credentials, are not kept)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> _Verified | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries.move_to_end(digest)
            return entry

    def put(self, digest: bytes, entry: _Verified) -> None:
        with self._lock:
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def drop(self, digest: bytes) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def __len__(self) -> int:
        return len(self._entries)


class ClerkTokenVerifier:
    """Verifies Clerk session tokens; safe to share between threads."""

    def __init__(
        self,
        *,
        jwt_key_pem: str | None = None,
        jwks_url: str | None = None,
        authorized_parties: Sequence[str],
        leeway_seconds: int = 5,
        jwks_refetch_interval_seconds: float = 300,
        http_timeout_seconds: float = 3,
        jwks_store: JwksStore | None = None,
        verified_memo_size: int = _VERIFIED_MEMO_SIZE,
    ) -> None:
        if isinstance(authorized_parties, str):
            # A bare string would silently become a set of characters.
            raise TypeError("authorized_parties must be a sequence of origins")
        if not jwt_key_pem and not jwks_url:
            raise ValueError("configure jwt_key_pem or jwks_url")

        # An empty collection disables the azp check, as in Clerk's own SDKs.
        self._authorized_parties = frozenset(authorized_parties)
        self._leeway = leeway_seconds
        self._jwks_url = jwks_url
        self._refetch_interval = jwks_refetch_interval_seconds
        self._http_timeout = http_timeout_seconds
        self._jwks_store = jwks_store

        # Parsed once here: loading a PEM costs far more than a verification.
        self._static_key = _load_pem(jwt_key_pem) if jwt_key_pem else None

        self._lock = threading.Lock()
        # Replaced wholesale on refetch, so lock-free reads always see a
        # complete mapping.
        self._jwks_keys: dict[str, RSAPublicKey] = {}
        self._last_fetch_at: float | None = None
        self._fetch_count = 0
        self._verified = _VerifiedTokens(verified_memo_size)

    @property
    def jwks_fetch_count(self) -> int:
        """Number of JWKS HTTP fetches attempted (successful or not)."""
        return self._fetch_count

    def verify(self, token: str) -> SessionClaims:
        """Return the claims of a valid token or raise ``TokenError``."""
        try:
            return self._verify(token)
        except jwt.PyJWTError as exc:
            reason = next(r for cls, r in _PYJWT_REASONS if isinstance(exc, cls))
            raise TokenError(reason, str(exc)) from exc
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            # Hostile input can reach odd corners (e.g. out-of-range dates);
            # callers are promised TokenError and nothing else.
            raise TokenError("malformed", exc.__class__.__name__) from exc

    def _verify(self, token: str) -> SessionClaims:
        if not isinstance(token, str) or not token:
            raise TokenError("malformed", "empty token")
        if len(token) > _MAX_TOKEN_CHARS:
            raise TokenError("malformed", "token too long")

        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        remembered = self._remembered(digest)
        if remembered is not None:
            return remembered

        header = _peek_header(token)
        # Checked before key lookup so "none"/HS256 tokens never reach a key
        # (PyJWT's allow-list below is the second line of defence).
        if header.get("alg") != _ALGORITHM:
            raise TokenError("bad-algorithm", "only RS256 tokens are accepted")

        key = self._key_for(header)
        payload = jwt.decode(token, key, algorithms=[_ALGORITHM], leeway=self._leeway, options=_DECODE_OPTIONS)
        claims = self._claims_from(payload)
        # Only now, with the signature and every claim checked (PyJWT has checked that these convert with int()).
        issued_at, not_before = int(payload["iat"]), payload.get("nbf")
        self._verified.put(digest, _Verified(
            claims=claims, kid=header.get("kid"), key=key, expires=int(payload["exp"]),
            not_before=issued_at if not_before is None else max(issued_at, int(not_before)),
        ))
        return claims

    def _remembered(self, digest: bytes) -> SessionClaims | None:
        """The claims of a token this verifier checked in full lately, still within its times; else None.

        A client sends the same token for its whole life (~60 s), and an RS256 check with the JSON parsing
        around it is most of what signing in costs per request. Only the very same string hits (the hash covers
        the signature), so a forged or altered token is always verified in full. exp and nbf/iat are checked
        again here, with the leeway, exactly as PyJWT checks them: an expired token is refused as before.
        Key rotation: an entry is served only while the verifier still holds the very key object that checked
        it — a JWKS refetch builds new ones, so every token is verified again after it. A key Clerk withdrew is
        seen at a refetch, as without the memo; a remembered token outlives nothing beyond its exp (~60 s).
        """
        entry = self._verified.get(digest)
        if entry is None or entry.key is not self._held_key(entry.kid):
            return None
        now = time.time()
        if entry.expires <= now - self._leeway:
            self._verified.drop(digest)
            raise jwt.ExpiredSignatureError("Signature has expired")
        if entry.not_before > now + self._leeway:  # only if the clock went back
            raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
        return entry.claims

    def _claims_from(self, payload: Mapping[str, Any]) -> SessionClaims:
        if payload.get("sts") == "pending":
            # Signed in but with outstanding session tasks (e.g. choose an org).
            raise TokenError("session-pending", "session has pending tasks")

        user_id = payload.get("sub")
        if not isinstance(user_id, str) or not user_id:
            raise TokenError("missing-subject", "token has no subject")

        azp = _optional_str(payload, "azp")
        if self._authorized_parties and azp not in self._authorized_parties:
            raise TokenError("unauthorized-party", "azp is not an authorized party")

        version = payload.get("v", 1)
        if type(version) is not int or version not in (1, 2):
            raise TokenError("unsupported-version", "unknown session token version")

        if version == 2:
            org = payload.get("o")
            if org is None:
                org = {}
            elif not isinstance(org, Mapping):
                raise TokenError("malformed", "claim 'o' must be an object")
            org_id = _optional_str(org, "id")
            org_role = _optional_str(org, "rol")
            org_slug = _optional_str(org, "slg")
        else:
            org_id = _optional_str(payload, "org_id")
            org_role = _optional_str(payload, "org_role")
            org_slug = _optional_str(payload, "org_slug")

        if org_role and org_role.startswith(_ORG_ROLE_PREFIX):
            org_role = org_role[len(_ORG_ROLE_PREFIX) :]

        return SessionClaims(
            user_id=user_id,
            session_id=_optional_str(payload, "sid"),
            organization_id=org_id or None,
            organization_role=(org_role or None) if org_id else None,
            organization_slug=(org_slug or None) if org_id else None,
            # PyJWT has already checked that these convert with int().
            issued_at=datetime.fromtimestamp(int(payload["iat"]), tz=UTC),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=UTC),
            authorized_party=azp,
            token_version=version,
        )

    # -- keys ---------------------------------------------------------------

    def _held_key(self, kid: str | None) -> RSAPublicKey | None:
        return self._static_key if self._static_key is not None else self._jwks_keys.get(kid or "")

    def _key_for(self, header: Mapping[str, Any]) -> RSAPublicKey:
        if self._static_key is not None:
            return self._static_key
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("unknown-kid", "token header has no kid")
        key = self._jwks_keys.get(kid)
        return key if key is not None else self._refresh_for(kid)

    def _refresh_for(self, kid: str) -> RSAPublicKey:
        with self._lock:
            # Another process may have fetched the document already (a rotation, or this worker is new).
            shared = _parse_jwks(self._jwks_store.get()) if self._jwks_store is not None else {}
            if kid in shared:
                self._jwks_keys = shared
                return shared[kid]
            now = time.monotonic()
            due = self._last_fetch_at is None or now - self._last_fetch_at >= self._refetch_interval
            if due:
                # Failed attempts count too: an outage must not turn every
                # request into a blocking HTTP call.
                self._last_fetch_at = now
                self._fetch_count += 1
                self._jwks_keys = self._fetch_jwks()
            elif not self._jwks_keys:
                raise TokenError("jwks-unavailable", "JWKS fetch failed recently")

            # Also covers a refresh done by another thread while we waited.
            key = self._jwks_keys.get(kid)
            if key is None:
                raise TokenError("unknown-kid", "no JWKS key matches the token kid")
            return key

    def _fetch_jwks(self) -> dict[str, RSAPublicKey]:
        assert self._jwks_url is not None
        try:
            response = requests.get(self._jwks_url, timeout=self._http_timeout)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise TokenError("jwks-unavailable", f"JWKS fetch failed: {exc.__class__.__name__}") from exc
        keys = _parse_jwks(document)
        if not keys:
            # Keep the previous cache rather than wiping it on a bad document.
            raise TokenError("jwks-unavailable", "JWKS has no usable RS256 keys")
        if self._jwks_store is not None:
            self._jwks_store.put(document)
        return keys


def _peek_header(token: str) -> dict[str, Any]:
    """Read the JOSE header just to pick the key and pre-check ``alg``.

    jwt.decode re-parses (strictly) and verifies the whole token afterwards;
    PyJWT's strict base64 check is most of a verify's cost, so not calling
    get_unverified_header as well roughly halves it.
    """
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError) as exc:
        raise TokenError("malformed", "unreadable token header") from exc
    if not isinstance(header, dict):
        raise TokenError("malformed", "token header is not an object")
    return header


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise TokenError("malformed", f"claim {name!r} must be a string")
    return value


def _load_pem(pem: str) -> RSAPublicKey:
    # Environment variables often carry the PEM with literal "\n" escapes.
    text = pem.strip().replace("\\n", "\n")
    key = load_pem_public_key(text.encode())
    if not isinstance(key, RSAPublicKey) or key.key_size < _MIN_RSA_BITS:
        raise ValueError(f"jwt_key_pem must be an RSA public key of >= {_MIN_RSA_BITS} bits")
    return key


def _parse_jwks(document: Any) -> dict[str, RSAPublicKey]:
    """Usable RS256 signing keys by kid; anything odd is skipped, not fatal."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        return {}
    keys: dict[str, RSAPublicKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", _ALGORITHM) != _ALGORITHM:
            continue
        try:
            key = RSAAlgorithm.from_jwk(dict(entry))
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        # from_jwk yields a private key if "d" is present; a JWKS must not have one.
        if isinstance(key, RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
            keys[kid] = key
    return keys
