"""Shared HTTP plumbing for vendor API clients, and the vendor exception types the sync code acts on.

Vendor clients know HTTP, not the database: no ORM, no settings -- configuration comes in as arguments.
Every call has a timeout; 5xx / connection errors / timeouts are retried a bounded number of times with
exponential backoff and full jitter; 429s are waited out (Retry-After or X-RateLimit-Reset) a bounded
number of times. Secrets never appear in messages, reprs or logs: error text is scrubbed of the
client's secrets, and logs carry only the URL path (no query string). Error text never carries the
vendor's response body either: it reaches pages and sync logs, and a body is whatever the server chose
to send (an internal service's answer, a reflected secret).

Redirects are never followed: credentials go on every request, and a redirect is how a server would
send them on to a host we never chose. A client built for a destination the clinic chose (a
self-hosted Chatwoot) is an *untrusted destination*: each request resolves the host, refuses
non-https URLs and loopback, private, link-local and other non-public addresses, and connects to
exactly the address it checked (see PublicAddressAdapter).
"""

from __future__ import annotations

import ipaddress
import logging
import random as _random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from routiq import safe_json

logger = logging.getLogger(__name__)

Params = Mapping[str, Any] | Sequence[tuple[str, Any]] | None
Timeout = float | tuple[float, float]
# requests' transient transport failures (ConnectTimeout is both a ConnectionError and a Timeout).
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class VendorError(Exception):
    """A vendor call failed. ``retryable`` tells the sync whether trying again later can help.

    ``summary`` is what a person is shown: the kind of failure and the HTTP status, nothing the vendor wrote.
    """

    retryable: bool = False
    kind: str = "request failed"

    def __init__(self, provider: str, message: str, *, status: int | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(f"{provider}: {message}")  # args (hence repr) hold only the scrubbed message
        self.provider = provider
        self.status = status
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    @property
    def summary(self) -> str:
        return f"{self.kind} (HTTP {self.status})" if self.status else self.kind


class VendorAuthError(VendorError):
    """401/403: a bad or under-privileged key. Retrying cannot help; the sync must stop and say so."""

    kind = "authentication refused"


class VendorNotFound(VendorError):
    """404."""

    kind = "not found"


class VendorRedirected(VendorError):
    """3xx: never followed (the credentials would go wherever the Location header says)."""

    kind = "redirect not followed"


class DestinationRefused(VendorError):
    """An untrusted destination that is not a public https address (checked when the request is made)."""

    kind = "destination refused"

    @property
    def summary(self) -> str:
        return f"{self.kind}: {self.message}"  # our own words about the URL, never the vendor's


class VendorRateLimited(VendorError):
    """429 still coming after the client's bounded waits. ``retry_after``: the vendor's last hint, seconds."""

    retryable = True
    kind = "rate limited"

    def __init__(self, provider: str, message: str, *, status: int | None = 429,
                 retry_after: float | None = None) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after = retry_after


class VendorUnavailable(VendorError):
    """5xx, connection errors and timeouts, after bounded retries."""

    retryable = True
    kind = "vendor unavailable"


class VendorResponseError(VendorError):
    """2xx with a body we cannot use (not JSON, not an object, missing the expected key)."""

    kind = "unexpected response"


class VendorClientError(VendorError):
    """Any other 4xx: our request is wrong; retrying the same request cannot help."""

    kind = "request refused"


class Limiter(Protocol):
    def acquire(self) -> None: ...


# -- untrusted destinations -------------------------------------------------------------------
Resolver = Callable[..., list]
# 64:ff9b::/96 translates to IPv4 through a NAT64 gateway: judge the IPv4 address it carries.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refusal(address: str) -> str | None:
    """Why a connection to ``address`` (an IP literal) is refused, or None for a public address.

    Refused: loopback, private (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254), shared
    (CGNAT 100.64/10), multicast, reserved, unspecified, documentation ranges -- and IPv6 forms that carry
    such an IPv4 address (IPv4-mapped, 6to4, NAT64), which would otherwise reach it in disguise.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)
    except ValueError:
        return "not an IP address"
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4-mapped and NAT64 addresses reach exactly the IPv4 address they carry: judge that one (the
        # wrappers' own ranges count as non-global). A 6to4 address must pass as itself and as its IPv4.
        if ip.ipv4_mapped is not None:
            candidates = [ip.ipv4_mapped]
        elif ip in _NAT64:
            candidates = [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
        elif ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
    for candidate in candidates:
        # is_global alone lets multicast through (224.0.0.0/4 counts as global), hence the extra tests.
        if (not candidate.is_global or candidate.is_multicast or candidate.is_reserved or candidate.is_loopback
                or candidate.is_link_local or candidate.is_unspecified or candidate.is_private):
            return "the host is not a public internet address"
    return None


class PublicAddressAdapter(HTTPAdapter):
    """A transport adapter for untrusted destinations: it resolves the host for every request, refuses
    non-https URLs and non-public addresses (all of the host's addresses must pass), then connects to the
    very address it checked -- so DNS cannot answer differently between the check and the connection
    (rebinding). TLS still verifies the certificate against the host name (SNI and hostname check use
    ``server_hostname``), and the Host header names the host, not the IP.

    ``allow_private_networks`` (the operator's VENDOR_ALLOW_PRIVATE_NETWORKS, for development and tests)
    allows plain http and local addresses, but the address is still pinned.
    """

    def __init__(self, *, provider: str, allow_private_networks: bool = False,
                 resolve: Resolver = socket.getaddrinfo, **kwargs: Any) -> None:
        self.provider = provider
        self.allow_private_networks = allow_private_networks
        self._resolve = resolve
        super().__init__(**kwargs)

    def checked_address(self, scheme: str, host: str | None, port: int) -> str:
        """The address to connect to for ``host``; raises DestinationRefused."""
        if scheme != "https" and not (scheme == "http" and self.allow_private_networks):
            raise DestinationRefused(self.provider, "the URL must use https")
        if not host:
            raise DestinationRefused(self.provider, "the URL has no host")
        try:
            infos = self._resolve(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            # A name that does not resolve now may resolve later: transient, retried like a refused connection.
            raise requests.ConnectionError(f"cannot resolve the host ({type(exc).__name__})") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise requests.ConnectionError("the host has no address")
        if not self.allow_private_networks:
            for address in addresses:
                if (reason := address_refusal(address)) is not None:
                    raise DestinationRefused(self.provider, reason)
        return addresses[0]

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> Any:
        # Proxies are ignored on purpose (the session does not read them either): the pinned address
        # is the one we connect to, or the check means nothing.
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        scheme, host = host_params["scheme"], host_params["host"]
        port = host_params["port"] or (443 if scheme == "https" else 80)
        address = self.checked_address(scheme, host, port)
        if scheme == "https":
            # The stubs list only the keys requests itself sets; urllib3 takes any connection argument here.
            pool_kwargs["server_hostname"] = host  # type: ignore[typeddict-unknown-key]  # SNI and certificate check against the name, not the IP
        return self.poolmanager.connection_from_host(scheme=scheme, host=address, port=port,
                                                     pool_kwargs=pool_kwargs)

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        # urllib3 would name the pinned IP in Host; virtual hosts route on the name.
        parts = urlsplit(request.url or "")  # always set once prepared
        request.headers["Host"] = parts.netloc.rpartition("@")[2]


def untrusted_session(*, provider: str, allow_private_networks: bool = False,
                      resolve: Resolver = socket.getaddrinfo) -> requests.Session:
    """A session whose every request goes through PublicAddressAdapter."""
    session = requests.Session()
    session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
    adapter = PublicAddressAdapter(provider=provider, allow_private_networks=allow_private_networks,
                                   resolve=resolve)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class VendorHttpClient:
    """GET-JSON client with timeouts, retries, 429 handling and optional shared pacing (``limiter``).

    ``untrusted_destination``: the base URL was chosen by a clinic, not the operator -- every request is
    checked and pinned by PublicAddressAdapter (``allow_private_networks`` relaxes it for local stand-ins).
    """

    def __init__(self, *, provider: str, base_url: str, headers: Mapping[str, str] | None = None,
                 auth: Any = None, timeout: Timeout = (5, 30), max_retries: int = 5,
                 max_rate_limit_retries: int = 5, max_rate_limit_wait: float = 120.0,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, limiter: Limiter | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep,
                 random: Callable[[], float] = _random.random, clock: Callable[[], float] = time.time,
                 secrets: Iterable[str] = (), untrusted_destination: bool = False,
                 allow_private_networks: bool = False) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        # Headers and auth go on each request, so a caller-supplied session is never mutated.
        self.headers = dict(headers or {})
        self._auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_rate_limit_retries = max_rate_limit_retries
        self.max_rate_limit_wait = max_rate_limit_wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.limiter = limiter
        if untrusted_destination:
            if session is not None:
                raise ValueError("an untrusted destination uses its own checked session")
            session = untrusted_session(provider=provider, allow_private_networks=allow_private_networks)
        self.untrusted_destination = untrusted_destination
        self.session = session or requests.Session()
        self._sleep, self._random, self._clock = sleep, random, clock
        self._secrets = tuple(s for s in secrets if s)
        origin = urlsplit(self.base_url)
        self._origin = (origin.scheme.lower(), origin.netloc.lower())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} provider={self.provider!r} base_url={self.base_url!r}>"

    # -- public ------------------------------------------------------------------------
    def url_for(self, url_or_path: str) -> str:
        """Absolute URLs (e.g. a ``links.next``) as is -- but only on the base URL's host, since the
        credentials go with every request; relative paths are appended to the base URL (keeping /v1)."""
        parts = urlsplit(url_or_path)
        if not parts.scheme:
            return f"{self.base_url}/{url_or_path.lstrip('/')}"
        if (parts.scheme.lower(), parts.netloc.lower()) != self._origin:
            raise VendorResponseError(self.provider, f"refusing to send credentials to another host ({parts.netloc})")
        return url_or_path

    def get_json(self, url_or_path: str, params: Params = None) -> dict[str, Any]:
        url = self.url_for(url_or_path)
        return self._json(url, self._send(url, params))

    def _json(self, url: str, response: requests.Response) -> dict[str, Any]:
        try:
            # Stdlib json keeps integers exact (19-digit ids stay ints, never floats).
            body = safe_json.loads(response.content)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise VendorResponseError(self.provider, f"HTTP {response.status_code} from {self._path(url)} "
                                      "is not valid JSON", status=response.status_code) from None
        if not isinstance(body, dict):
            raise VendorResponseError(self.provider, f"expected a JSON object from {self._path(url)}, "
                                      f"got {type(body).__name__}", status=response.status_code)
        return body

    def post_json(self, url_or_path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON body; the answer must be a JSON object. Not idempotent, so only what cannot have
        reached the vendor is retried: a 429 (refused before acting) and a connection that never opened.
        A timeout or a 5xx may have been acted on and raises VendorUnavailable at once, so a reply is never
        sent twice by a retry here."""
        url = self.url_for(url_or_path)
        return self._json(url, self._send(url, None, method="POST", body=body))

    def backoff(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**(attempt-1)))."""
        return self._random() * min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))

    def rate_limit_wait(self, response: requests.Response) -> float | None:
        """Seconds to wait after a 429, from Retry-After (seconds or HTTP date) or X-RateLimit-Reset
        (UNIX epoch seconds), clamped to [0, max_rate_limit_wait]; None when neither header is usable."""
        wait: float | None = None
        retry_after = response.headers.get("Retry-After", "").strip()
        reset = response.headers.get("X-RateLimit-Reset", "").strip()
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                try:
                    when = parsedate_to_datetime(retry_after)
                    wait = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() - self._clock()
                except (TypeError, ValueError):
                    wait = None
        if wait is None and reset:
            try:
                value = float(reset)
                # Epoch per Cliniko; some vendors send a delta -- anything before 2001 cannot be an epoch.
                wait = value - self._clock() if value >= 1e9 else value
            except ValueError:
                wait = None
        return None if wait is None else min(max(wait, 0.0), self.max_rate_limit_wait)

    # -- internals -----------------------------------------------------------------------
    def _send(self, url: str, params: Params, *, method: str = "GET",
              body: Mapping[str, Any] | None = None) -> requests.Response:
        path = self._path(url)
        failures = rate_limited = 0
        idempotent = method == "GET"
        while True:
            if self.limiter is not None:
                self.limiter.acquire()  # once per attempt: retries spend the shared budget too
            try:
                response = self.session.request(method, url, params=params, json=body, headers=self.headers,
                                                auth=self._auth, timeout=self.timeout, allow_redirects=False)
            except TRANSIENT_ERRORS as exc:
                failures += 1
                never_sent = isinstance(exc, requests.ConnectTimeout)  # anything later may have been received
                if failures > self.max_retries or not (idempotent or never_sent):
                    raise VendorUnavailable(self.provider, self._scrub(
                        f"{type(exc).__name__} on {method} {path} after {failures} attempts")) from exc
                self._pause(self.backoff(failures), f"{type(exc).__name__}", f"{method} {path}", failures,
                            self.max_retries)
                continue
            except requests.RequestException as exc:  # invalid URL, too many redirects: not transient
                raise VendorError(self.provider, self._scrub(f"{type(exc).__name__} on {method} {path}")) from exc

            status = response.status_code
            if status == 429:
                rate_limited += 1
                hint = self.rate_limit_wait(response)
                if rate_limited > self.max_rate_limit_retries:
                    raise VendorRateLimited(self.provider, f"still rate limited on {method} {path} after "
                                            f"{rate_limited} attempts", retry_after=hint)
                wait = hint if hint is not None else self.backoff(rate_limited)
                self._pause(wait, "HTTP 429", f"{method} {path}", rate_limited, self.max_rate_limit_retries)
                continue
            if status >= 500:
                failures += 1
                if failures > self.max_retries or not idempotent:
                    raise VendorUnavailable(self.provider, f"HTTP {status} on {method} {path} after {failures} "
                                            "attempts", status=status)
                self._pause(self.backoff(failures), f"HTTP {status}", f"{method} {path}", failures, self.max_retries)
                continue
            if not 200 <= status < 300:
                raise self._error_for(status, path, method)
            return response

    def _error_for(self, status: int, path: str, method: str = "GET") -> VendorError:
        # The status and our own path only: the vendor's body is not ours to repeat (see module docstring).
        if 300 <= status < 400:
            return VendorRedirected(self.provider, f"HTTP {status} redirect on {method} {path} not followed",
                                    status=status)
        if status in (401, 403):
            return VendorAuthError(self.provider, f"credentials rejected (HTTP {status}) on {method} {path}",
                                   status=status)
        if status == 404:
            return VendorNotFound(self.provider, f"HTTP 404 on {method} {path}", status=status)
        return VendorClientError(self.provider, f"HTTP {status} on {method} {path}", status=status)

    def _pause(self, seconds: float, reason: str, path: str, attempt: int, limit: int) -> None:
        logger.warning("%s: %s on %s; retry %d/%d in %.1fs", self.provider, reason, path, attempt, limit, seconds)
        if seconds > 0:
            self._sleep(seconds)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _path(self, url: str) -> str:
        return self._scrub(urlsplit(url).path or "/")
