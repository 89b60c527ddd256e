"""Keyset cursors that the browser can carry but not read.

A cursor is the sort key of the last row shown: a patient's surname and first name, or a date of their last
visit. It travels in URLs, so it lands in browser history, access logs and Referer headers. It is therefore
encrypted and authenticated (Fernet: AES-128-CBC and HMAC-SHA256) under a key derived from SECRET_KEY (and
SECRET_KEY_FALLBACKS, so a key rotation does not break the links in open tabs). It names the organization
and the sort it belongs to. A cursor that does not decrypt, is too long, or belongs to another organization or
sort restarts the list at the first page: the caller gets None, never an exception.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils.crypto import salted_hmac

# A real cursor is about 200 characters; anything far longer is not worth decrypting.
MAX_CURSOR_LENGTH = 1000
KEY_SALT = "routiq.patients.cursors"


@lru_cache(maxsize=4)
def _fernet(secrets: tuple[str, ...]) -> MultiFernet:
    keys = [
        Fernet(base64.urlsafe_b64encode(salted_hmac(KEY_SALT, "fernet", secret=secret, algorithm="sha256").digest()))
        for secret in secrets
    ]
    return MultiFernet(keys)


def fernet() -> MultiFernet:
    return _fernet((settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS))


def encode_cursor(*, organization_id, sort: str, values: list) -> str:
    plain = [value.isoformat() if isinstance(value, datetime) else str(value) for value in values]
    payload = json.dumps({"o": str(organization_id), "s": sort, "v": plain}, separators=(",", ":"))
    return fernet().encrypt(payload.encode()).decode("ascii")


def decode_cursor(cursor: str | None, *, organization_id, sort: str, types: tuple[str, ...]) -> list | None:
    """The typed sort key (str, datetime or UUID per ``types``), or None for no usable cursor."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii():
        return None
    try:
        payload = json.loads(fernet().decrypt(cursor.encode("ascii")))
    except (InvalidToken, ValueError, TypeError):
        return None
    if not isinstance(payload, dict) or payload.get("o") != str(organization_id) or payload.get("s") != sort:
        return None
    values = payload.get("v")
    if not isinstance(values, list) or len(values) != len(types) or not all(isinstance(v, str) for v in values):
        return None
    try:
        return [PARSERS[kind](value) for kind, value in zip(types, values, strict=True)]
    except (KeyError, ValueError):
        return None


PARSERS: dict[str, Callable[[str], object]] = {"text": str, "uuid": uuid.UUID, "timestamp": datetime.fromisoformat}
