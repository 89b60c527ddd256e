"""Where vendor credentials may go: no redirects, no vendor body in error text, and for destinations a clinic
chose (routiq.http's untrusted destinations) public https addresses only, checked and pinned per request.

Every server here listens on 127.0.0.1. Non-public addresses other than loopback are only ever judged by
``address_refusal`` or refused before connecting: nothing here opens a connection to them.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from requests.auth import HTTPBasicAuth

from routiq.http import (
    DestinationRefused,
    PublicAddressAdapter,
    VendorAuthError,
    VendorClientError,
    VendorHttpClient,
    VendorRedirected,
    VendorUnavailable,
    address_refusal,
    untrusted_session,
)
from routiq.testing.vendor_stubs import RecordingServer

MARKER = "VENDOR-BODY-MARKER-7f3a"
SECRET = "cw-secret-token-0000-1111"


def resolver(mapping: dict[str, str]):
    """A getaddrinfo stand-in: ``mapping`` host -> one address (a DNS answer we choose)."""

    def resolve(host, port, type=0, **kwargs):  # noqa: A002 - getaddrinfo's name
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = socket.AF_INET6 if ":" in mapping[host] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (mapping[host], port))]

    return resolve


# -- which addresses are public --------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.10",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "2002:a00:1::1", "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe", "2001:db8::1", "not-an-address",
])
def test_non_public_addresses_are_refused(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:1.1.1.1",
                                     "64:ff9b::101:101"])
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


# -- untrusted destinations: checked when the request is made ---------------------------------------
def test_a_name_resolving_to_loopback_is_refused_before_anything_is_sent():
    with RecordingServer() as server:
        port = server.base_url.rsplit(":", 1)[1]
        session = untrusted_session(provider="chatwoot", resolve=resolver({"chat.clinic.test": "127.0.0.1"}))
        with pytest.raises(DestinationRefused, match="not a public internet address"):
            session.get(f"https://chat.clinic.test:{port}/api", timeout=2)

    assert server.requests == []


def test_every_address_of_the_host_must_be_public():
    adapter = PublicAddressAdapter(provider="chatwoot")
    adapter._resolve = lambda host, port, type=0: [  # noqa: ARG005 - getaddrinfo's signature
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("1.1.1.1", port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
    ]

    with pytest.raises(DestinationRefused):
        adapter.checked_address("https", "chat.clinic.test", 443)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/api", "https://127.0.0.1:9/api", "https://localhost:9/api",
                                 "https://[::1]:9/api", "https://[::ffff:127.0.0.1]:9/api"])
def test_the_client_refuses_local_destinations_with_the_setting_off(url):
    client = VendorHttpClient(provider="chatwoot", base_url=url, headers={"api_access_token": SECRET},
                              secrets=[SECRET], untrusted_destination=True, max_retries=0)

    with pytest.raises(DestinationRefused) as caught:
        client.get_json("contacts")

    assert caught.value.retryable is False and SECRET not in str(caught.value)
    assert caught.value.summary.startswith("destination refused: ")


def test_plain_http_is_refused_even_for_a_public_address():
    adapter = PublicAddressAdapter(provider="chatwoot", resolve=resolver({"chat.example.com": "1.1.1.1"}))

    with pytest.raises(DestinationRefused, match="https"):
        adapter.checked_address("http", "chat.example.com", 80)


def test_a_name_that_does_not_resolve_is_a_transient_failure():
    client = VendorHttpClient(provider="chatwoot", base_url="https://nowhere.clinic.test", max_retries=0,
                              session=untrusted_session(provider="chatwoot", resolve=resolver({})))

    with pytest.raises(VendorUnavailable):
        client.get_json("contacts")


def test_allowing_private_networks_still_connects_to_the_checked_address_with_the_host_name():
    with RecordingServer() as server:
        port = server.base_url.rsplit(":", 1)[1]
        session = requests.Session()
        session.mount("http://", PublicAddressAdapter(provider="chatwoot", allow_private_networks=True,
                                                      resolve=resolver({"chat.clinic.test": "127.0.0.1"})))
        response = session.get(f"http://chat.clinic.test:{port}/api/v1/x", timeout=2)

    assert response.status_code == 200
    (received,) = server.requests
    assert received.path == "/api/v1/x" and received.headers["Host"] == f"chat.clinic.test:{port}"


def test_an_untrusted_destination_uses_its_own_checked_session():
    with pytest.raises(ValueError):
        VendorHttpClient(provider="chatwoot", base_url="https://chat.example.com", session=requests.Session(),
                         untrusted_destination=True)


# -- pinning keeps TLS honest ---------------------------------------------------------------------------
@pytest.fixture
def tls_server(tmp_path):
    """An https server on 127.0.0.1 whose certificate names only chat.clinic.test; yields (port, ca_file, seen)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.clinic.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("chat.clinic.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    seen: list[tuple[str | None, str]] = []
    server_names: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append((server_names[-1] if server_names else None, self.headers["Host"]))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format, *args) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], str(cert_file), seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_pinned_https_request_sends_sni_and_verifies_the_certificate_for_the_host_name(tls_server):
    port, ca_file, seen = tls_server
    session = requests.Session()
    session.mount("https://", PublicAddressAdapter(provider="chatwoot", allow_private_networks=True,
                                                   resolve=resolver({"chat.clinic.test": "127.0.0.1",
                                                                     "other.clinic.test": "127.0.0.1"})))

    assert session.get(f"https://chat.clinic.test:{port}/", verify=ca_file, timeout=5).status_code == 200
    assert seen == [("chat.clinic.test", f"chat.clinic.test:{port}")]
    with pytest.raises(requests.exceptions.SSLError):  # same address, a name the certificate does not carry
        session.get(f"https://other.clinic.test:{port}/", verify=ca_file, timeout=5)


# -- redirects and vendor bodies (every client) ------------------------------------------------------
@pytest.mark.parametrize("untrusted", [False, True])
def test_a_redirect_to_another_host_is_not_followed_and_the_credentials_stay_home(untrusted):
    from routiq.testing.vendor_stubs import ChatwootStub

    with ChatwootStub(token=SECRET, account_id="7") as vendor, RecordingServer() as other:
        vendor.redirect_to(f"{other.base_url}/collect")
        options = {"untrusted_destination": True, "allow_private_networks": True} if untrusted else {}
        client = VendorHttpClient(provider="chatwoot", base_url=vendor.base_url, secrets=[SECRET],
                                  headers={"api_access_token": SECRET}, auth=HTTPBasicAuth(SECRET, ""),
                                  max_retries=0, **options)

        with pytest.raises(VendorRedirected) as caught:
            client.get_json("api/v1/accounts/7/contacts")

    assert caught.value.status == 302 and caught.value.summary == "redirect not followed (HTTP 302)"
    assert len(vendor.requests) == 1 and other.requests == []


@pytest.mark.parametrize(("status", "error"), [(401, VendorAuthError), (400, VendorClientError),
                                               (503, VendorUnavailable)])
@pytest.mark.parametrize("body", [{"message": MARKER, "errors": [MARKER]}, f"<html>{MARKER}</html>"])
def test_error_text_never_carries_the_vendors_body(status, error, body):
    from routiq.testing.vendor_stubs import ChatwootStub

    with ChatwootStub(token=SECRET, account_id="7") as vendor:
        vendor.answer_with(status, body)
        client = VendorHttpClient(provider="chatwoot", base_url=vendor.base_url, max_retries=0,
                                  sleep=lambda seconds: None)
        with pytest.raises(error) as caught:
            client.get_json("api/v1/accounts/7/contacts")

    err = caught.value
    assert err.status == status and f"HTTP {status}" in err.summary
    for text in (str(err), repr(err), err.message, err.summary):
        assert MARKER not in text
