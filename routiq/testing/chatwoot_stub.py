"""Local stand-in for Chatwoot's application API (one account) for tests, benchmarks and the dev demo.

It speaks Chatwoot's wire protocol, so the real client runs against it unpatched:
- the ``api_access_token`` header (401 otherwise), account-scoped paths ``/api/v1/accounts/{id}/…``
  (404 for another account);
- ``GET contacts``: 15 a page, ``page``, ``sort`` (``created_at``, ``-created_at``, ``name``, …),
  ``{"meta": {"count", "current_page"}, "payload": […]}``;
- ``GET conversations``: ``status`` open|pending|resolved|snoozed|all (default open), ``assignee_type``,
  ``sort_by`` (default latest activity first), ``page``, 25 a page,
  ``{"data": {"meta": {"mine_count", "assigned_count", "unassigned_count", "all_count"}, "payload": […]}}``;
  ids are the per-account display ids;
- ``GET conversations/{id}/messages``: the latest 20; ``before=<id>`` the 20 before it; ``after=<id>`` up to 100
  after it (always oldest first), ``{"meta": {…}, "payload": […]}`` with ``message_type`` 0 incoming,
  1 outgoing, 2 activity, 3 template and ``created_at`` in epoch seconds;
- ``POST conversations/{id}/messages`` ``{content, message_type: "outgoing", private}`` -> the created message,
  and, when the stub has a webhook URL and secret, the signed ``message_created`` delivery Chatwoot sends for
  it (the echo of our own reply);
- ``GET inboxes`` (``{"payload": [{id, name, channel_type}]}``).
Faults: ``queue_faults("rate_limit" | "status" | "malformed" | "not_json" | "delay", …)`` (429 carries
``Retry-After``) or ``schedule_fault(kind, at=n)``;
``serve_raw(kind, id, **fields)`` serves one record with broken values. Stdlib only (no Django).

``signed_webhook_post(url, secret, payload)`` POSTs a delivery signed as Chatwoot >= 4.11.2 signs it:
``X-Chatwoot-Signature: sha256=HMAC-SHA256(secret, "{timestamp}.{body}")``, ``X-Chatwoot-Timestamp``,
``X-Chatwoot-Delivery``. The ``*_webhook_payload`` helpers build the event bodies Chatwoot sends.

    with ChatwootStub(api_token="tok", account_id=3) as stub:
        stub.seed(conversations=40)
        client = ChatwootClient("tok", base_url=stub.base_url, account_id=3, allow_private_networks=True)

Standalone: ``python -m routiq.testing.chatwoot_stub --port 8775 --api-token demo-token --account-id 1
--seed-conversations 30``
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.request import Request, urlopen

from routiq.testing.stub_server import DEFAULT_CLOCK, NOT_JSON, Reply, StubError, StubServer, post_delivery

CONTACTS_PER_PAGE = 15
CONVERSATIONS_PER_PAGE = 25
LATEST_MESSAGES = 20
MESSAGES_BEFORE = 20
MESSAGES_AFTER = 100
STATUSES = ("open", "pending", "resolved", "snoozed")
MESSAGE_TYPES = {"incoming": 0, "outgoing": 1, "activity": 2, "template": 3}
MESSAGE_TYPE_NAMES = {number: name for name, number in MESSAGE_TYPES.items()}
FAULT_KINDS = frozenset({"status", "rate_limit", "malformed", "not_json", "delay"})
CONTACT_SORTS = {"name", "email", "phone_number", "created_at", "last_activity_at"}
CONVERSATION_SORTS = {
    "latest": ("last_activity_at", True), "last_activity_at_desc": ("last_activity_at", True),
    "last_activity_at_asc": ("last_activity_at", False), "created_at_desc": ("created_at", True),
    "created_at_asc": ("created_at", False),
}
AGENTS: tuple[dict[str, Any], ...] = ({"id": 1, "name": "Jess Carter", "available_name": "Jess", "email": "jess@clinic.example"},
          {"id": 2, "name": "Sam Patel", "available_name": "Sam", "email": "sam@clinic.example"})
FIRST_NAMES = ("Olivia", "Charlotte", "Amelia", "Isla", "Mia", "Grace", "Zoë", "Siobhán", "Priya", "Jack",
               "Oliver", "Noah", "Lachlan", "Liam", "Minh", "Mohammed", "Arjun", "Susan", "Karen", "Peter")
LAST_NAMES = ("Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Martin", "Lee", "Kelly",
              "Chen", "Singh", "Patel", "Tran", "Murphy", "O'Brien", "Rossi", "Kowalski")
INBOUND_TEXTS = ("Hi, can I move my appointment to Thursday?", "Is there parking near the clinic?",
                 "My back is still sore after yesterday, is that normal?", "Do you bulk bill?",
                 "Thanks so much, see you then!", "Can I get a receipt for my health fund?",
                 "Running 10 minutes late, sorry!", "What should I bring to my first visit?")
OUTBOUND_TEXTS = ("Of course, Thursday 10:30 is free. Shall I book it?", "Yes, there is free parking out the back.",
                  "A little soreness is normal for a day or two. Ice helps.", "See you then!",
                  "I've emailed your receipt.", "No problem, we'll see you soon.")
PRIVATE_NOTES = ("Prefers mornings.", "Check the referral letter before the visit.", "Called back, no answer.")


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _iso(moment: datetime, millis: int = 0) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"


class ChatwootStub(StubServer):
    """One Chatwoot account. Binds its port on construction; ``with`` starts and stops it.

    State methods return records in the API's form. The clock (``stub.clock``) only moves when told
    (``advance``) or when a message is added (one second per message, so messages have distinct times).
    Fault kinds (``queue_faults``): "status" (answer ``status``), "rate_limit" (429 with ``Retry-After:
    seconds``), "malformed" (200, truncated JSON), "not_json" (200, a body that is not JSON), "delay" (hold
    the answer ``seconds``, then answer normally: a client timeout, or a page held while a worker is killed).
    """

    fault_kinds = FAULT_KINDS

    def __init__(self, *, api_token: str = "test-token", account_id: int = 1, port: int = 0,
                 clock: datetime = DEFAULT_CLOCK, webhook_url: str | None = None,
                 webhook_secret: str | None = None) -> None:
        super().__init__(port=port, clock=clock.astimezone(UTC).replace(microsecond=0))
        self.api_token = api_token
        self.account_id = int(account_id)
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.webhook_responses: list[tuple[int, bytes]] = []  # what the echo deliveries got back
        self._inboxes: dict[int, dict] = {}
        self._contacts: dict[int, dict] = {}
        self._conversations: dict[int, dict] = {}
        self._messages: dict[int, dict] = {}  # message id -> record (ids are global to the installation)
        self._raw: dict[tuple[str, int], dict] = {}
        self._next = {"inbox": 0, "contact": 0, "conversation": 0, "message": 0}
        self.add_inbox("WhatsApp", "Channel::Whatsapp")

    def serve_raw(self, kind: str, record_id: int, **fields: Any) -> None:
        """Serve one record ("contact", "conversation" or "message") with these JSON values, unchecked, as a
        corrupted record would arrive; filters and sorting still use its real values."""
        with self._lock:
            self._raw[(kind, int(record_id))] = fields

    def wait_for_webhooks(self, count: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
        """Wait until ``count`` echo deliveries have been answered (they are sent after the POST's answer, as
        Chatwoot's background job sends them); returns the answers."""
        deadline = time.monotonic() + timeout
        while len(self.webhook_responses) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.webhook_responses)

    # -- state API ------------------------------------------------------------------------
    def add_inbox(self, name: str, channel_type: str = "Channel::Api") -> dict:
        with self._lock:
            inbox_id = self._take("inbox")
            self._inboxes[inbox_id] = {"id": inbox_id, "name": name, "channel_type": channel_type}
            return dict(self._inboxes[inbox_id])

    def add_contact(self, name: str = "", *, email: str | None = None, phone_number: str | None = None,
                    identifier: str | None = None, **extra: Any) -> dict:
        with self._lock:
            contact_id = self._take("contact")
            now = _epoch(self.clock)
            self._contacts[contact_id] = {
                "id": contact_id, "name": name, "email": email, "phone_number": phone_number,
                "identifier": identifier, "thumbnail": "", "availability_status": "offline", "blocked": False,
                "additional_attributes": {}, "custom_attributes": {}, "created_at": now,
                "last_activity_at": None, **extra}
            return self.contact(contact_id)

    def update_contact(self, contact_id: int, **fields: Any) -> dict:
        with self._lock:
            self._contacts[int(contact_id)].update(fields)
            return self.contact(contact_id)

    def add_conversation(self, contact_id: int, *, inbox_id: int = 1, status: str = "open",
                         assignee_id: int | None = None) -> dict:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            display_id = self._take("conversation")
            now = _epoch(self.clock)
            self._conversations[display_id] = {
                "id": display_id, "uuid": str(uuid.UUID(int=random.Random(display_id).getrandbits(128))),
                "contact_id": int(contact_id), "inbox_id": inbox_id, "status": status, "assignee_id": assignee_id,
                "created_at": now, "last_activity_at": now, "updated_at": float(now)}
            return self.conversation(display_id)

    def set_status(self, display_id: int, status: str) -> dict:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            conversation = self._conversations[int(display_id)]
            conversation["status"] = status
            conversation["updated_at"] = float(_epoch(self.clock))
            return self.conversation(display_id)

    def add_message(self, display_id: int, content: str, *, message_type: str | int = "incoming",
                    private: bool = False, sender_id: int | None = None,
                    attachments: Iterable[dict] = (), created_at: datetime | None = None) -> dict:
        """A message in a conversation; ``message_type`` "incoming" (from the contact), "outgoing" (an
        agent), "activity" or "template". ``attachments``: [{"file_type", "data_url", …}]."""
        kind = message_type if isinstance(message_type, int) else MESSAGE_TYPES[message_type]
        with self._lock:
            self.clock += timedelta(seconds=1)
            conversation = self._conversations[int(display_id)]
            message_id = self._take("message")
            moment = _epoch(created_at or self.clock)
            if kind == 0:
                sender = {"type": "contact", "id": conversation["contact_id"]}
            elif kind in (1, 3) or private:
                sender = {"type": "user", "id": sender_id or conversation["assignee_id"] or AGENTS[0]["id"]}
            else:
                sender = None
            self._messages[message_id] = {
                "id": message_id, "conversation_id": conversation["id"], "inbox_id": conversation["inbox_id"],
                "content": content, "message_type": kind, "content_type": "text", "private": private,
                "created_at": moment, "source_id": None, "sender": sender,
                # Chatwoot keeps milliseconds: the API shows whole epoch seconds, webhooks an ISO time with them.
                "_millis": (message_id * 337) % 1000,
                "attachments": [{"id": message_id * 10 + n, "message_id": message_id, "account_id": self.account_id,
                                 "file_type": "file", "extension": None, "thumb_url": "", "file_size": 0, **a}
                                for n, a in enumerate(attachments)]}
            conversation["last_activity_at"] = max(conversation["last_activity_at"], moment)
            conversation["updated_at"] = float(moment)
            contact = self._contacts.get(conversation["contact_id"])
            if contact is not None and kind == 0:
                contact["last_activity_at"] = moment
            return self.message(message_id)

    def contact(self, contact_id: int) -> dict:
        with self._lock:
            return self._served("contact", self._contact_form(self._contacts[int(contact_id)]))

    def conversation(self, display_id: int) -> dict:
        with self._lock:
            return self._served("conversation", self._conversation_form(self._conversations[int(display_id)]))

    def message(self, message_id: int) -> dict:
        with self._lock:
            return self._served("message", self._message_form(self._messages[int(message_id)]))

    def all_contacts(self) -> list[dict]:
        with self._lock:
            return [self.contact(contact_id) for contact_id in sorted(self._contacts)]

    def all_conversations(self) -> list[dict]:
        with self._lock:
            return [self.conversation(display_id) for display_id in sorted(self._conversations)]

    def messages_of(self, display_id: int) -> list[dict]:
        with self._lock:
            return [self.message(m["id"]) for m in sorted(self._messages.values(), key=lambda m: m["id"])
                    if m["conversation_id"] == int(display_id)]

    def seed(self, *, conversations: int = 20, messages_per_conversation: tuple[int, int] = (2, 8),
             seed: int = 42, people: Iterable[dict] = ()) -> None:
        """Realistic clinic chat: a contact per conversation (Australian mobiles, most with an email), a mix
        of statuses and inboxes, inbound questions and outbound answers, a few private notes and an
        attachment now and then. Message times end at the clock. ``people`` ({"name", "phone_number",
        "email"}): contacts to write as first (e.g. the clinic's patients, so matching links them); the other
        conversations get made-up people, who become leads."""
        rng = random.Random(seed)
        people = list(people)
        with self._lock:
            if len(self._inboxes) == 1:
                self.add_inbox("Website chat", "Channel::WebWidget")
                self.add_inbox("Instagram", "Channel::Instagram")
            inbox_ids = sorted(self._inboxes)
            start = self.clock - timedelta(days=14)
            self.clock = start
            step = max(1, 14 * 24 * 60 // max(1, conversations * sum(messages_per_conversation)))  # minutes
            for n in range(conversations):
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                digits = f"{rng.randrange(10**8):08d}"
                if n < len(people):
                    person = people[n]
                    contact = self.add_contact(person.get("name") or "", phone_number=person.get("phone_number"),
                                               email=person.get("email"))
                else:
                    contact = self.add_contact(
                        f"{first} {last}", phone_number=f"+614{digits}",
                        email=None if rng.random() < 0.3 else f"{first.lower()}.{last.lower()}{n}@example.com"
                        .replace("'", "").replace("ë", "e").replace("á", "a"))
                conversation = self.add_conversation(
                    contact["id"], inbox_id=rng.choice(inbox_ids), status=rng.choice(("open", "open", "pending",
                                                                                      "resolved", "snoozed")),
                    assignee_id=rng.choice((None, AGENTS[0]["id"], AGENTS[1]["id"])))
                for m in range(rng.randint(*messages_per_conversation)):
                    self.clock += timedelta(minutes=rng.randint(1, step))
                    if m % 2 == 0:
                        self.add_message(conversation["id"], rng.choice(INBOUND_TEXTS), attachments=(
                            [{"file_type": "image", "data_url": f"https://files.example/{n}-{m}.jpg"}]
                            if rng.random() < 0.1 else []))
                    elif rng.random() < 0.15:
                        self.add_message(conversation["id"], rng.choice(PRIVATE_NOTES), message_type="outgoing",
                                         private=True)
                    else:
                        self.add_message(conversation["id"], rng.choice(OUTBOUND_TEXTS), message_type="outgoing")
            self.clock = max(self.clock, start + timedelta(days=14))

    # -- API forms ----------------------------------------------------------------------
    def _take(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind]

    def _served(self, kind: str, form: dict) -> dict:
        return {**form, **self._raw.get((kind, form["id"]), {})}

    def _contact_form(self, contact: dict) -> dict:
        return {**contact, "type": "contact"}

    def _agent(self, agent_id: int | None) -> dict | None:
        agent = next((a for a in AGENTS if a["id"] == agent_id), None)
        return None if agent is None else {**agent, "availability_status": "online", "role": "agent",
                                           "thumbnail": "", "type": "user"}

    def _sender(self, sender: dict | None) -> dict | None:
        if sender is None:
            return None
        if sender["type"] == "contact":
            contact = self._contacts.get(sender["id"])
            return None if contact is None else self._contact_form(contact)
        return self._agent(sender["id"])

    def _message_form(self, message: dict) -> dict:
        message = {key: value for key, value in message.items() if not key.startswith("_")}
        return {**message, "sender": self._sender(message["sender"]),
                "attachments": [dict(a) for a in message["attachments"]]}

    def _conversation_form(self, conversation: dict) -> dict:
        inbox = self._inboxes.get(conversation["inbox_id"], {})
        messages = [m for m in self._messages.values()
                    if m["conversation_id"] == conversation["id"] and m["message_type"] != 2]
        last = max(messages, key=lambda m: m["id"], default=None)
        return {
            "id": conversation["id"], "uuid": conversation["uuid"], "account_id": self.account_id,
            "inbox_id": conversation["inbox_id"], "status": conversation["status"],
            "meta": {"sender": self._sender({"type": "contact", "id": conversation["contact_id"]}),
                     "assignee": self._agent(conversation["assignee_id"]), "team": None, "hmac_verified": False,
                     "channel": inbox.get("channel_type", "")},
            "messages": [self._message_form(last)] if last else [],
            "labels": [], "priority": None, "unread_count": 0, "can_reply": True, "additional_attributes": {},
            "custom_attributes": {}, "snoozed_until": None, "agent_last_seen_at": 0, "contact_last_seen_at": 0,
            "timestamp": conversation["last_activity_at"], "last_activity_at": conversation["last_activity_at"],
            "created_at": conversation["created_at"], "updated_at": conversation["updated_at"],
        }

    # -- HTTP ----------------------------------------------------------------------------------
    def _respond(self, method: str, path: str, query: list[tuple[str, str]], headers: Any,
                 body: bytes) -> Reply | dict | bytes:
        params = dict(query)
        fault = self._take_fault(path)
        if fault and fault.kind == "status":
            raise StubError(fault.status, {"error": f"forced HTTP {fault.status}"})
        if fault and fault.kind == "rate_limit":
            raise StubError(429, {"error": "Throttled"}, {"Retry-After": str(fault.seconds)})
        if fault and fault.kind == "malformed":
            return b'{"payload": [{"id": 1'
        if fault and fault.kind == "not_json":
            return NOT_JSON
        if fault and fault.kind == "delay":
            self._pause(fault.seconds)
        if headers.get("api_access_token") != self.api_token:
            raise StubError(401, {"errors": ["Invalid Access Token"]})
        match = re.fullmatch(r"/api/v1/accounts/(\d+)(/.*)?", path)
        if not match or int(match[1]) != self.account_id:
            raise StubError(404, {"error": "Resource could not be found"})
        sub = match[2] or "/"
        with self._lock:
            if method == "GET" and sub == "/contacts":
                return self._list_contacts(params)
            if method == "GET" and sub == "/conversations":
                return self._list_conversations(params)
            if method == "GET" and sub == "/inboxes":
                return {"payload": [dict(i) for i in self._inboxes.values()]}
            messages = re.fullmatch(r"/conversations/(\d+)/messages", sub)
            if messages and int(messages[1]) in self._conversations:
                if method == "GET":
                    return self._list_messages(int(messages[1]), params)
                if method == "POST":
                    return self._create_message(int(messages[1]), body)
        raise StubError(404, {"error": "Resource could not be found"})

    def _list_contacts(self, params: dict[str, str]) -> dict:
        page = _positive(params, "page", 1)
        sort = params.get("sort", "-last_activity_at")
        field = sort.lstrip("-")
        if field not in CONTACT_SORTS:
            raise StubError(422, {"error": f"invalid sort {sort!r}"})
        rows = sorted(self._contacts.values(), key=lambda c: c["id"])
        rows.sort(key=lambda c: (c[field] is None, c[field] or 0 if field.endswith("_at") else c[field] or ""),
                  reverse=sort.startswith("-"))
        start = (page - 1) * CONTACTS_PER_PAGE
        return {"meta": {"count": len(rows), "current_page": page},
                "payload": [self._served("contact", self._contact_form(c))
                            for c in rows[start:start + CONTACTS_PER_PAGE]]}

    def _list_conversations(self, params: dict[str, str]) -> dict:
        page = _positive(params, "page", 1)
        status = params.get("status", "open")
        if status not in (*STATUSES, "all"):
            raise StubError(422, {"error": f"invalid status {status!r}"})
        field, descending = CONVERSATION_SORTS.get(params.get("sort_by", "latest"), CONVERSATION_SORTS["latest"])
        matching = [c for c in self._conversations.values() if status == "all" or c["status"] == status]
        assigned = [c for c in matching if c["assignee_id"] is not None]
        assignee_type = params.get("assignee_type", "all")
        shown = {"assigned": assigned, "unassigned": [c for c in matching if c["assignee_id"] is None],
                 "me": [c for c in assigned if c["assignee_id"] == AGENTS[0]["id"]]}.get(assignee_type, matching)
        shown = sorted(shown, key=lambda c: (c[field], c["id"]), reverse=descending)
        start = (page - 1) * CONVERSATIONS_PER_PAGE
        return {"data": {
            "meta": {"mine_count": sum(1 for c in assigned if c["assignee_id"] == AGENTS[0]["id"]),
                     "assigned_count": len(assigned), "unassigned_count": len(matching) - len(assigned),
                     "all_count": len(matching)},
            "payload": [self._served("conversation", self._conversation_form(c))
                        for c in shown[start:start + CONVERSATIONS_PER_PAGE]]}}

    def _list_messages(self, display_id: int, params: dict[str, str]) -> dict:
        rows = sorted((m for m in self._messages.values() if m["conversation_id"] == display_id),
                      key=lambda m: (m["created_at"], m["id"]))
        after, before = params.get("after"), params.get("before")
        if after not in (None, "") and before not in (None, ""):
            rows = [m for m in rows if int(after) < m["id"] < int(before)][:1000]
        elif before not in (None, ""):
            rows = [m for m in rows if m["id"] < int(before)][-MESSAGES_BEFORE:]
        elif after not in (None, ""):
            rows = [m for m in rows if m["id"] > int(after)][:MESSAGES_AFTER]
        else:
            rows = rows[-LATEST_MESSAGES:]
        conversation = self._conversations[display_id]
        return {"meta": {"labels": [], "additional_attributes": {}, "contact_id": conversation["contact_id"],
                         "assignee": self._agent(conversation["assignee_id"]), "agent_last_seen_at": 0},
                "payload": [self._served("message", self._message_form(m)) for m in rows]}

    def _create_message(self, display_id: int, body: bytes) -> Reply:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise StubError(400, {"error": "invalid JSON"}) from None
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise StubError(422, {"error": "content is required"})
        message_type = data.get("message_type", "outgoing")
        if message_type not in ("outgoing", "incoming"):
            raise StubError(422, {"error": "invalid message_type"})
        conversation = self._conversations[display_id]
        created = self.add_message(display_id, content, message_type=message_type, private=bool(data.get("private")),
                                   sender_id=conversation["assignee_id"] or AGENTS[0]["id"])
        after_send = None
        if self.webhook_url and self.webhook_secret:
            payload = self.message_webhook_payload(created["id"])
            url, secret = self.webhook_url, self.webhook_secret

            def after_send() -> None:  # Chatwoot delivers from a background job, after answering the POST
                self.webhook_responses.append(signed_webhook_post(url, secret, payload))
        return Reply(created, after=after_send)

    # -- webhook payloads -------------------------------------------------------------------
    def account(self) -> dict:
        return {"id": self.account_id, "name": "Clinic"}

    def conversation_webhook_data(self, display_id: int) -> dict:
        """A conversation as webhook events carry it (the API form plus ``contact_inbox``)."""
        with self._lock:
            form = self._conversation_form(self._conversations[int(display_id)])
            return {**form, "channel": form["meta"]["channel"],
                    "contact_inbox": {"contact_id": self._conversations[int(display_id)]["contact_id"],
                                      "inbox_id": form["inbox_id"], "source_id": form["uuid"]}}

    def message_webhook_payload(self, message_id: int, event: str = "message_created") -> dict:
        """``message_created``/``message_updated``: the message flat, ``message_type`` as a word and
        ``created_at`` as an ISO time, with its ``conversation``, ``inbox`` and ``account``."""
        with self._lock:
            message = self._messages[int(message_id)]
            form = self._served("message", self._message_form(message))
            inbox = self._inboxes.get(message["inbox_id"], {})
            created, millis = form["created_at"], message["_millis"]
            return {**form, "event": event,
                    "message_type": MESSAGE_TYPE_NAMES.get(form["message_type"], form["message_type"]),
                    "created_at": _iso(datetime.fromtimestamp(created, UTC), millis) if isinstance(created, int)
                    else created,
                    "content_attributes": {}, "inbox": {"id": inbox.get("id"), "name": inbox.get("name")},
                    "conversation": self.conversation_webhook_data(message["conversation_id"]),
                    "account": self.account()}

    def conversation_webhook_payload(self, display_id: int, event: str = "conversation_created",
                                     changed_attributes: list | None = None) -> dict:
        payload = {**self.conversation_webhook_data(display_id), "event": event, "account": self.account()}
        if changed_attributes is not None:
            payload["changed_attributes"] = changed_attributes
        return payload

    def contact_webhook_payload(self, contact_id: int, event: str = "contact_created",
                                changed_attributes: list | None = None) -> dict:
        payload = {**self.contact(contact_id), "event": event, "account": self.account()}
        if changed_attributes is not None:
            payload["changed_attributes"] = changed_attributes
        return payload


def _positive(params: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(params.get(name) or default)
    except ValueError:
        raise StubError(422, {"error": f"{name} must be an integer"}) from None
    if value < 1:
        raise StubError(422, {"error": f"{name} must be positive"})
    return value


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``"{timestamp}.{raw body}"`` under the webhook's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_webhook_headers(secret: str | None, body: bytes, *, timestamp: int | None = None,
                           delivery_id: str | None = None) -> dict[str, str]:
    """The headers of one delivery; no signature without a secret (Chatwoot before 4.11.2, or none set)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json", "User-Agent": "Chatwoot",
               "X-Chatwoot-Timestamp": stamp, "X-Chatwoot-Delivery": delivery_id or str(uuid.uuid4())}
    if secret is not None:
        headers["X-Chatwoot-Signature"] = webhook_signature(secret, stamp, body)
    return headers


def signed_webhook_post(url: str, secret: str | None, payload: dict | bytes, *, timestamp: int | None = None,
                        delivery_id: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """POST one delivery to ``url`` as Chatwoot does (5 s timeout); returns (status, body), 4xx/5xx too."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return post_delivery(url, body, signed_webhook_headers(secret, body, timestamp=timestamp, delivery_id=delivery_id),
                         timeout=timeout)


def cliniko_people(base_url: str, api_key: str, *, limit: int, wait: float = 30.0) -> list[dict]:
    """Up to ``limit`` patients of a Cliniko (stand-in) API as Chatwoot contacts (name, phone, email): the
    demo's chats then come from the clinic's own patients. Waits for the server to come up."""
    import base64

    if limit < 1:
        return []
    auth = base64.b64encode(f"{api_key}:".encode()).decode()
    request = Request(f"{base_url.rstrip('/')}/patients?per_page={min(limit, 100)}",  # noqa: S310
                      headers={"Authorization": f"Basic {auth}", "Accept": "application/json",
                               "User-Agent": "RoutIQ demo (demo@routiq.example)"})
    deadline = time.monotonic() + wait
    while True:
        try:
            with urlopen(request, timeout=5) as response:  # noqa: S310
                patients = json.loads(response.read())["patients"]
            break
        except OSError:
            if time.monotonic() > deadline:
                return []
            time.sleep(0.5)
    people = []
    for patient in patients:
        # Chatwoot keeps phone numbers in E.164; the demo's Cliniko patients are Australian.
        digits = ["".join(ch for ch in p["number"] if ch.isdigit())
                  for p in patient.get("patient_phone_numbers") or [] if p.get("number")]
        phones = [f"+61{d[1:]}" if d.startswith("0") else f"+{d}" for d in digits if d]
        if phones or patient.get("email"):
            people.append({"name": f"{patient.get('first_name') or ''} {patient.get('last_name') or ''}".strip(),
                           "phone_number": phones[0] if phones else None, "email": patient.get("email")})
    return people[:limit]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Chatwoot API stand-in in the foreground.")
    parser.add_argument("--port", type=int, default=8775)
    parser.add_argument("--api-token", default="demo-token")
    parser.add_argument("--account-id", type=int, default=1)
    parser.add_argument("--seed-conversations", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--webhook-url", default=None, help="where to POST the echo of a reply (message_created)")
    parser.add_argument("--cliniko-url", default=None,
                        help="a Cliniko (stand-in) API whose patients write first, so the demo links them")
    parser.add_argument("--cliniko-key", default="demo-key")
    parser.add_argument("--webhook-secret", default=None)
    args = parser.parse_args(argv)
    stub = ChatwootStub(api_token=args.api_token, account_id=args.account_id, port=args.port,
                        clock=datetime.now(UTC), webhook_url=args.webhook_url, webhook_secret=args.webhook_secret)
    people = cliniko_people(args.cliniko_url, args.cliniko_key, limit=args.seed_conversations * 2 // 3) \
        if args.cliniko_url else []
    stub.seed(conversations=args.seed_conversations, seed=args.seed, people=people)
    print(f"Chatwoot stand-in at {stub.base_url} (account {stub.account_id}); Ctrl-C to stop", flush=True)
    stub.serve_until_interrupted()


if __name__ == "__main__":
    main()
