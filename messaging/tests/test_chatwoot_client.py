"""The Chatwoot client against the stand-in, over real HTTP: auth, paging, message cursors, 429s, replies,
and the stand-in's signed webhook deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from messaging.clients.chatwoot import ChatwootClient
from messaging.tests.chatwoot_helpers import client_for
from routiq.http import (
    DestinationRefused,
    VendorAuthError,
    VendorNotFound,
    VendorRateLimited,
    VendorResponseError,
    VendorUnavailable,
)
from routiq.testing.chatwoot_stub import ChatwootStub


@pytest.fixture
def stub(chatwoot):
    return chatwoot


def test_a_wrong_token_or_account_is_refused(stub):
    with pytest.raises(VendorAuthError):
        ChatwootClient("not-the-token", base_url=stub.base_url, account_id=7,
                       allow_private_networks=True).check_connection()
    with pytest.raises(VendorNotFound):
        ChatwootClient(stub.api_token, base_url=stub.base_url, account_id=8,
                       allow_private_networks=True).check_connection()
    assert stub.requests[0].headers["api_access_token"] == "not-the-token"


def test_a_local_address_is_refused_unless_the_operator_allows_it(stub):
    client = ChatwootClient(stub.api_token, base_url=stub.base_url, account_id=7, max_retries=0)

    with pytest.raises(DestinationRefused):
        client.check_connection()
    with pytest.raises(DestinationRefused):
        client.send_message(1, "hello")
    assert stub.requests == []


def test_contacts_page_fifteen_at_a_time_oldest_first(stub):
    for n in range(32):
        stub.add_contact(f"Person {n}")
        stub.advance(seconds=1)

    pages = list(client_for(stub).contact_pages())

    assert [len(page.records) for page in pages] == [15, 15, 2]
    assert [c["name"] for page in pages for c in page.records] == [f"Person {n}" for n in range(32)]
    assert pages[0].total_entries == 32
    assert {r.param("sort") for r in stub.requests} == {"created_at"}


def test_conversations_of_every_status_page_twenty_five_at_a_time(stub):
    contact = stub.add_contact("Many Threads")
    for n in range(53):
        stub.add_conversation(contact["id"], status=("open", "pending", "resolved", "snoozed")[n % 4])
        stub.advance(seconds=1)

    pages = list(client_for(stub).conversation_pages())

    assert [len(page.records) for page in pages] == [25, 25, 3]
    ids = [c["id"] for page in pages for c in page.records]
    assert ids == list(range(53, 0, -1))  # latest activity first
    assert {(r.param("status"), r.param("assignee_type")) for r in stub.requests} == {("all", "all")}


def test_a_page_that_is_not_a_list_fails_the_page(stub):
    stub.queue_faults("malformed", 1)
    with pytest.raises(VendorResponseError):
        client_for(stub).contacts_page(1)


def test_messages_by_id_cursor(stub):
    conversation = stub.add_conversation(stub.add_contact("Chatty")["id"])
    ids = [stub.add_message(conversation["id"], f"m{n}")["id"] for n in range(250)]
    client = client_for(stub)

    latest = client.messages(conversation["id"])
    older = client.messages(conversation["id"], before=latest[0]["id"])
    newer = client.messages(conversation["id"], after=ids[9])
    batches = list(client.messages_after(conversation["id"], 0))

    assert [m["id"] for m in latest] == ids[-20:]
    assert [m["id"] for m in older] == ids[-40:-20]
    assert [m["id"] for m in newer] == ids[10:110]
    assert [len(b) for b in batches] == [100, 100, 50]
    assert [m["id"] for b in batches for m in b] == ids
    assert [r.param("after") for r in stub.requests[-3:]] == ["0", str(ids[99]), str(ids[199])]


def test_rate_limits_wait_for_retry_after_then_give_up(stub):
    sleeps: list[float] = []
    stub.queue_faults("rate_limit", 2, seconds=3)
    client_for(stub, sleeps).contacts_page(1)
    assert sleeps == [3.0, 3.0]

    stub.queue_faults("rate_limit", 10, seconds=1)
    with pytest.raises(VendorRateLimited):
        client_for(stub, [], max_rate_limit_retries=2).contacts_page(1)


def test_server_errors_are_retried_for_reads(stub):
    sleeps: list[float] = []
    stub.queue_faults("status", 2, status=502)

    client_for(stub, sleeps).contacts_page(1)

    assert len(sleeps) == 2 and len(stub.requests) == 3


def test_send_message_posts_an_outgoing_message_and_returns_it(stub):
    conversation = stub.add_conversation(stub.add_contact("Replied To")["id"])

    sent = client_for(stub).send_message(conversation["id"], "On our way", private=True)

    (post,) = [r for r in stub.requests if r.method == "POST"]
    assert json.loads(post.body) == {"content": "On our way", "message_type": "outgoing", "private": True}
    assert stub.messages_of(conversation["id"]) == [sent]
    assert (sent["message_type"], sent["private"]) == (1, True)


def test_a_reply_is_retried_after_a_429_but_never_after_it_may_have_arrived(stub):
    conversation = stub.add_conversation(stub.add_contact("Careful")["id"])
    stub.queue_faults("rate_limit", 1, seconds=0)
    client_for(stub).send_message(conversation["id"], "first")  # a 429 is a refusal: safe to try again
    assert len(stub.messages_of(conversation["id"])) == 1

    stub.queue_faults("status", 1, status=504)
    with pytest.raises(VendorUnavailable):
        client_for(stub).send_message(conversation["id"], "second")
    assert [r.method for r in stub.requests].count("POST") == 3


class _Receiver:
    """Records POSTed webhook deliveries (headers and raw body) and answers 200."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/chatwoot/token/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_reply_is_echoed_as_a_signed_message_created_delivery():
    receiver = _Receiver()
    try:
        with ChatwootStub(api_token="tok", account_id=3, webhook_url=receiver.url, webhook_secret="s3cret") as stub:
            conversation = stub.add_conversation(stub.add_contact("Echo")["id"])
            sent = ChatwootClient("tok", base_url=stub.base_url, account_id=3,
                                  allow_private_networks=True).send_message(conversation["id"], "Echo me")
            assert stub.wait_for_webhooks(1) == [(200, b"{}")]
    finally:
        receiver.close()

    ((headers, body),) = receiver.received
    expected = hmac.new(b"s3cret", f"{headers['X-Chatwoot-Timestamp']}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Chatwoot-Signature"] == f"sha256={expected}"
    assert headers["X-Chatwoot-Delivery"]
    payload = json.loads(body)
    assert (payload["event"], payload["id"], payload["message_type"]) == ("message_created", sent["id"], "outgoing")
    assert (payload["conversation"]["id"], payload["account"]["id"]) == (conversation["id"], 3)
