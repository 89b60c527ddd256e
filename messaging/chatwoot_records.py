"""Chatwoot JSON records -> rows, for the sync and for webhooks alike (one mapping, two ways in).

A record that cannot be read (no id, an id of the wrong type, an unreadable time) raises MalformedRecord: the
sync skips and counts that one record and writes the rest of its page. Text is cleaned of what PostgreSQL
cannot store (NUL, lone surrogates). Times are aware UTC datetimes truncated to the second: the API gives a
message's ``created_at`` as epoch seconds, a webhook as an ISO time with milliseconds, and the message's
unique key includes its time, so both must land on the same value or a reply and its webhook echo would be
two rows. ``message_type`` 0 (incoming) is inbound, 1 (outgoing) and 3 (template) outbound; 2 (activity:
"resolved by Jess") is not a message and reads as None, which the writers skip. Private notes are kept and
marked. Attachments are kept as metadata only (type, name, URL; http(s) URLs only, since pages link to them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, overload
from urllib.parse import unquote, urlsplit

from messaging.matching import ExternalIdentity
from patients.cliniko_records import clean_text
from routiq.sync import MalformedRecord

PROVIDER = "chatwoot"
STATUSES = frozenset({"open", "pending", "resolved", "snoozed"})
INBOUND, OUTBOUND = "inbound", "outbound"
MESSAGE_DIRECTIONS = {0: INBOUND, 1: OUTBOUND, 3: OUTBOUND, "incoming": INBOUND, "outgoing": OUTBOUND,
                      "template": OUTBOUND}
ACTIVITY = (2, "activity")
MAX_CONTENT = 100_000  # a message is text typed by a person; anything longer is not worth storing whole
PREVIEW = 200


def chatwoot_id(value, what: str = "id") -> int:
    """A positive integer id (JSON number or digit string)."""
    if isinstance(value, bool):
        raise MalformedRecord(f"bad {what}")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or not 0 < value < 2**63:
        raise MalformedRecord(f"bad {what}")
    return value


@overload
def moment(value, *, required: Literal[True]) -> datetime: ...
@overload
def moment(value, *, required: bool = False) -> datetime | None: ...
def moment(value, *, required: bool = False) -> datetime | None:
    """Epoch seconds (int/float) or an ISO time -> aware UTC datetime, to the second."""
    if value in (None, ""):
        if required:
            raise MalformedRecord("missing time")
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            parsed = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise ValueError
        else:
            raise ValueError
    except (ValueError, OverflowError, OSError):
        raise MalformedRecord("bad time") from None
    return parsed.astimezone(UTC).replace(microsecond=0)


def text(value, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedRecord(f"text field is {type(value).__name__}")
    return clean_text(str(value))[:limit]


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


# -- contacts ----------------------------------------------------------------------------------------
def contact_identity(record: dict) -> ExternalIdentity:
    """A Chatwoot contact as matching sees it."""
    return ExternalIdentity(
        provider=PROVIDER, external_id=str(chatwoot_id(record.get("id"), "contact id")),
        name=text(record.get("name"), 400), phone_raw=text(record.get("phone_number"), 64),
        email=text(record.get("email"), 320))


# -- conversations ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConversationRow:
    external_id: str  # the per-account display id
    contact: ExternalIdentity | None
    channel: str
    inbox_name: str
    status: str
    assignee_name: str
    last_activity_at: datetime | None
    provider: str = PROVIDER


def conversation_row(record: dict) -> ConversationRow:
    """A conversation from the list API or a webhook (``meta.sender`` is the contact, ``meta.assignee`` the
    agent; ``inbox`` {id, name} when the caller knows it)."""
    meta = _dict(record.get("meta"))
    sender = meta.get("sender")
    contact = contact_identity(sender) if isinstance(sender, dict) and sender.get("id") is not None else None
    status = record.get("status")
    if status not in STATUSES:
        raise MalformedRecord("unknown status")
    assignee = _dict(meta.get("assignee"))
    return ConversationRow(
        external_id=str(chatwoot_id(record.get("id"), "conversation id")),
        contact=contact,
        channel=text(meta.get("channel") or record.get("channel"), 50),
        inbox_name=text(_dict(record.get("inbox")).get("name"), 200),
        status=status,
        assignee_name=text(assignee.get("available_name") or assignee.get("name"), 200),
        last_activity_at=moment(record.get("last_activity_at") or record.get("timestamp")),
    )


# -- messages ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MessageRow:
    conversation_external_id: str
    external_id: str
    direction: str
    private: bool
    sender_name: str
    content: str
    content_type: str
    attachments: list[dict]
    sent_at: datetime
    conversation: ConversationRow | None = None  # when the record carries its conversation (webhooks, sync)
    provider: str = PROVIDER


def message_row(record: dict) -> MessageRow | None:
    """A message from the messages API or a ``message_created``/``message_updated`` webhook; None for an
    activity message. ``record["conversation"]``, when present, is the conversation it belongs to."""
    message_type = record.get("message_type")
    if message_type in ACTIVITY:
        return None
    if message_type not in MESSAGE_DIRECTIONS or isinstance(message_type, bool):
        raise MalformedRecord("unknown message_type")
    conversation = record.get("conversation")
    conversation_row_ = conversation_row(conversation) if isinstance(conversation, dict) else None
    if conversation_row_ is not None:
        conversation_id = conversation_row_.external_id
    else:
        conversation_id = str(chatwoot_id(record.get("conversation_id"), "conversation id"))
    return MessageRow(
        conversation_external_id=conversation_id,
        external_id=str(chatwoot_id(record.get("id"), "message id")),
        direction=MESSAGE_DIRECTIONS[message_type],
        private=record.get("private") is True,
        sender_name=text(_dict(record.get("sender")).get("name"), 200),
        content=text(record.get("content"), MAX_CONTENT),
        content_type=text(record.get("content_type") or "text", 30),
        attachments=attachments(record.get("attachments")),
        sent_at=moment(record.get("created_at"), required=True),
        conversation=conversation_row_,
    )


def attachments(value) -> list[dict]:
    """[{"type", "name", "url"}]: metadata only, never downloaded. A URL that is not http(s) is dropped
    (a ``javascript:`` link on a page is a script)."""
    if not isinstance(value, list):
        return []
    kept = []
    for item in value:
        if not isinstance(item, dict):
            continue
        url = item["data_url"] if isinstance(item.get("data_url"), str) else ""
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            url = ""
        name = item.get("file_name") or item.get("name") or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        kept.append({"type": text(item.get("file_type") or "file", 30), "name": text(name, 200),
                     "url": clean_text(url)[:2000]})
    return kept


def preview(content: str) -> str:
    return " ".join(content.split())[:PREVIEW]
