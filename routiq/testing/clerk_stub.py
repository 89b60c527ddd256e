"""Test kit for Clerk integration: a local JWKS server, forged tokens, svix signing.

Nothing here talks to Clerk or Svix; it lets tests exercise the real verifier
and webhook code against local stand-ins.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tenants.clerk.dev_tokens import SigningKey, mint_session_token

JWKS_PATH = "/.well-known/jwks.json"


class JWKSServer:
    """Serves the JWKS of some SigningKeys on 127.0.0.1 in a background thread.

    ``set_keys`` rotates keys; ``fail_with`` makes the endpoint answer with an
    arbitrary status/body (e.g. 503, or invalid JSON) until cleared;
    ``response_delay`` slows every answer, to widen race windows in tests.
    """

    def __init__(self, keys: Iterable[SigningKey] = (), *, response_delay: float = 0) -> None:
        self._lock = threading.Lock()
        self._keys = list(keys)
        self._response_delay = response_delay
        self._failure: tuple[int, bytes] | None = None
        self._fetch_count = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{JWKS_PATH}"  # bound to 127.0.0.1 above

    @property
    def fetch_count(self) -> int:
        with self._lock:
            return self._fetch_count

    def set_keys(self, keys: Iterable[SigningKey]) -> None:
        with self._lock:
            self._keys = list(keys)

    def fail_with(self, status: int | None, body: bytes = b"") -> None:
        with self._lock:
            self._failure = None if status is None else (status, body)

    def start(self) -> Self:
        # A short poll interval keeps shutdown() (and so each test) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down and release the port; later fetches get connection refused."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _respond(self) -> tuple[int, bytes]:
        time.sleep(self._response_delay)
        with self._lock:
            self._fetch_count += 1
            if self._failure is not None:
                return self._failure
            document = {"keys": [key.public_jwk() for key in self._keys]}
        return 200, json.dumps(document).encode()


def _handler_for(server: JWKSServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != JWKS_PATH:
                status, body = 404, b"not found"
            else:
                status, body = server._respond()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


# -- forged tokens for negative tests -----------------------------------------
# Each takes a genuine token and breaks exactly one property, so a test can
# show the original verifies and the forgery does not.


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _unb64url_json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def forge_token_alg_none(token: str) -> str:
    """Same header/payload, ``alg: none`` and an empty signature."""
    header_segment, payload_segment, _ = token.split(".")
    header = {**_unb64url_json(header_segment), "alg": "none"}
    return f"{_b64url_json(header)}.{payload_segment}."


def forge_token_hs256_with_public_key(token: str, key: SigningKey) -> str:
    """Re-sign with HS256 using the *public* PEM as the HMAC secret.

    Classic algorithm-confusion attack: a verifier that lets the token pick
    the algorithm would accept this, since the public key is public.
    """
    header_segment, payload_segment, _ = token.split(".")
    header = {**_unb64url_json(header_segment), "alg": "HS256"}
    signing_input = f"{_b64url_json(header)}.{payload_segment}"
    mac = hmac.new(key.public_pem().encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{_b64url(mac.digest())}"


def forge_token_tampered_payload(token: str, **changes: Any) -> str:
    """Keep the genuine header and signature, splice in an edited payload."""
    header_segment, payload_segment, signature = token.split(".")
    payload = {**_unb64url_json(payload_segment), **changes}
    return f"{header_segment}.{_b64url_json(payload)}.{signature}"


def forge_token_wrong_kid(signing_key: SigningKey, claimed_kid: str, **mint_kwargs: Any) -> str:
    """A well-formed token signed by ``signing_key`` but labelled ``claimed_kid``."""
    return mint_session_token(signing_key, headers={"kid": claimed_kid}, **mint_kwargs)


# -- svix (Clerk webhooks) ------------------------------------------------------


def new_svix_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def svix_headers(secret: str, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Svix would send with ``body``, signed with ``secret``."""
    ts = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{ts}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(ts),
        "svix-signature": f"v1,{signature}",
    }
