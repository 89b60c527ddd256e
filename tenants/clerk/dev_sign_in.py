"""DEBUG-only sign-in: locally signed Clerk-shaped tokens for the demo organizations' staff.

The token goes through exactly the same middleware path as a real Clerk token; only the key differs. The
URL is not even routed unless settings.DEV_SIGN_IN_ENABLED (DEBUG on, no Clerk key configured).
"""

from __future__ import annotations

import functools

from django.conf import settings

from tenants.clerk.dev_tokens import SigningKey

DEV_KID = "routiq-dev"


@functools.cache
def dev_signing_key() -> SigningKey:
    if not settings.DEV_SIGN_IN_ENABLED:
        raise RuntimeError("The dev sign-in is disabled (DEBUG off or Clerk configured).")
    path = settings.DEV_SIGNING_KEY_PATH
    if path.exists():
        return SigningKey.from_private_pem(path.read_text(), DEV_KID)
    key = SigningKey.generate(kid=DEV_KID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key.private_pem())
    path.chmod(0o600)
    return key
