"""Vendor secrets encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

``settings.ROUTIQ_ENCRYPTION_KEYS`` is a list of Fernet keys: the first encrypts, every key decrypts. To
rotate, put a new key first, run ``manage.py rotate_credentials``, then drop the old key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Shorter secrets would give away too much of themselves in their "last four".
MIN_LENGTH_TO_SHOW_LAST_FOUR = 8


class CredentialDecryptionError(Exception):
    """A stored secret that none of the configured keys can decrypt (wrong key, key removed, corrupted)."""


def encrypt_secret(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    """Decrypt, or raise CredentialDecryptionError: a missing key must never look like an empty secret."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialDecryptionError(_UNDECRYPTABLE) from None


def rotate_secret(token: str) -> str:
    """Re-encrypt ``token`` under the first key (it may have been encrypted under any configured key)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialDecryptionError(_UNDECRYPTABLE) from None


def last_four(secret: str) -> str:
    """The last four characters to show a human which secret is stored; '' for short secrets."""
    return secret[-4:] if len(secret) >= MIN_LENGTH_TO_SHOW_LAST_FOUR else ""


_UNDECRYPTABLE = (
    "A stored secret could not be decrypted with any key in ROUTIQ_ENCRYPTION_KEYS: the key that encrypted "
    "it was removed or changed, or the ciphertext is corrupted. Restore the old key (after the new one) or "
    "set the credential again."
)


def _fernet() -> MultiFernet:
    keys = getattr(settings, "ROUTIQ_ENCRYPTION_KEYS", None) or ()
    if isinstance(keys, str):  # a bare string would be iterated character by character
        raise ImproperlyConfigured("ROUTIQ_ENCRYPTION_KEYS must be a list of Fernet keys, not a string.")
    if not keys:
        raise ImproperlyConfigured("ROUTIQ_ENCRYPTION_KEYS is empty: vendor credentials cannot be encrypted.")
    return _multi_fernet(tuple(keys))


@lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    # Keyed by the key tuple: a changed setting (a deploy, a test) builds a fresh MultiFernet.
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Never echo the key itself; its position is enough to find it.
            raise ImproperlyConfigured(
                f"ROUTIQ_ENCRYPTION_KEYS key #{position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes; generate one with Fernet.generate_key())."
            ) from None
    return MultiFernet(fernets)
