"""Writes of conversations and messages, for the syncs, the webhooks and the reply box.

Each write is set-based: one hand-written ``INSERT … ON CONFLICT … DO UPDATE … WHERE (…) IS DISTINCT FROM (…)``
per page (unchanged rows are not rewritten), then the touched conversations are locked and their counters
(``message_count``, ``last_message_at``, ``last_message_preview``, ``unanswered_since``) moved by the rows
written, in the same transaction, so neither a page nor a write ever counts messages. Rows are duck-typed
(messaging.chatwoot_records' ConversationRow / MessageRow; ManyChat builds the same attributes) and carry
their provider.

The organization is bound by the caller and must be the one named.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from messaging.chatwoot_records import message_row
from messaging.matching import contacts_for_identities
from messaging.models import Conversation, Message
from routiq.sync import WriteCounts
from tenants.audit import audit_record
from tenants.models import Organization, User
from tenants.rls.binding import require_organization_id


def _bound(organization: Organization) -> str:
    bound = require_organization_id()
    if bound != str(organization.pk):
        raise RuntimeError("The organization written to must be the bound one.")
    return bound


def _unique_last(rows: Sequence, key) -> list:
    """One row per key, the last one winning: ON CONFLICT cannot touch a row twice in one statement."""
    return list({key(row): row for row in rows if row is not None}.values())


# -- conversations -----------------------------------------------------------------------------------
CONVERSATIONS_UPSERT = """
INSERT INTO conversations AS c (
    id, organization_id, provider, external_id, contact_id, channel, inbox_name, status, assignee_name,
    last_message_at, last_message_preview, message_count, unanswered_since, deleted_at, created_at, updated_at)
SELECT gen_random_uuid(), %(organization_id)s, r.provider, r.external_id, r.contact_id, r.channel, r.inbox_name,
       r.status, r.assignee_name, NULL, '', 0, NULL, NULL, now(), now()
FROM unnest(%(providers)s::text[], %(external_ids)s::text[], %(contact_ids)s::uuid[], %(channels)s::text[],
            %(inbox_names)s::text[], %(statuses)s::text[], %(assignees)s::text[])
     AS r(provider, external_id, contact_id, channel, inbox_name, status, assignee_name)
ON CONFLICT (organization_id, provider, external_id) DO UPDATE SET
    contact_id = coalesce(EXCLUDED.contact_id, c.contact_id),
    channel = CASE WHEN EXCLUDED.channel <> '' THEN EXCLUDED.channel ELSE c.channel END,
    inbox_name = CASE WHEN EXCLUDED.inbox_name <> '' THEN EXCLUDED.inbox_name ELSE c.inbox_name END,
    status = EXCLUDED.status, assignee_name = EXCLUDED.assignee_name, deleted_at = NULL, updated_at = now()
WHERE (c.contact_id, c.channel, c.inbox_name, c.status, c.assignee_name, c.deleted_at)
      IS DISTINCT FROM (coalesce(EXCLUDED.contact_id, c.contact_id),
       CASE WHEN EXCLUDED.channel <> '' THEN EXCLUDED.channel ELSE c.channel END,
       CASE WHEN EXCLUDED.inbox_name <> '' THEN EXCLUDED.inbox_name ELSE c.inbox_name END,
       EXCLUDED.status, EXCLUDED.assignee_name, NULL)
RETURNING c.id, (c.xmax = 0) AS inserted
"""


def conversations_upsert(*, organization: Organization, rows: Sequence) -> WriteCounts:
    """Create or update conversations on (provider, external id). Each row's contact (an ExternalIdentity or
    None) is matched to a Contact first (messaging.matching: a patient, or a lead of its own). Counters are
    left to the message writes; the contact of a conversation whose row names none is kept."""
    organization_id = _bound(organization)
    # In key order: the conflicting rows are locked as they are met, and the message writes lock theirs in
    # the same order, so two writers of the same conversations queue instead of deadlocking.
    rows = sorted(_unique_last(rows, lambda row: (row.provider, row.external_id)),
                  key=lambda row: (row.provider, row.external_id))
    counts = WriteCounts()
    if not rows:
        return counts
    by_provider: dict[str, list] = defaultdict(list)
    for row in rows:
        if row.contact is not None:
            by_provider[row.contact.provider].append(row.contact)
    contact_ids: dict[tuple[str, str], UUID] = {}
    with transaction.atomic():
        for provider, identities in by_provider.items():
            matched = contacts_for_identities(organization=organization, identities=identities)
            contact_ids.update({(provider, external_id): pk for external_id, pk in matched.items()})
        params: dict[str, Any] = {
            "organization_id": organization_id,
            "providers": [row.provider for row in rows],
            "external_ids": [row.external_id for row in rows],
            "contact_ids": [contact_ids.get((row.contact.provider, str(row.contact.external_id)))
                            if row.contact is not None else None for row in rows],
            "channels": [row.channel for row in rows],
            "inbox_names": [row.inbox_name for row in rows],
            "statuses": [row.status for row in rows],
            "assignees": [row.assignee_name for row in rows],
        }
        with connection.cursor() as cursor:
            cursor.execute(CONVERSATIONS_UPSERT, params)
            for _, inserted in cursor.fetchall():
                counts.created += inserted
                counts.updated += not inserted
    return counts


# -- messages ------------------------------------------------------------------------------------------
# The conflict target is the partitioned table's unique key: every unique index of a table partitioned by
# month must contain the partition column (sent_at). A message's time never changes at the vendor, and the
# records module truncates it to the second, so the API's and the webhook's copies of one message agree.
MESSAGES_CONFLICT_TARGET = "(provider, external_id, sent_at)"
# Which returned rows were inserted: a partitioned table cannot return xmax (the usual test), and a snapshot
# of the keys taken beforehand would call a row inserted that another transaction committed in between (the
# insert then takes the update path). So the row version itself says it: an insert sets created_at and
# updated_at to the same now(); the update path sets updated_at to clock_timestamp(), which is later than any
# now() of a transaction that already wrote the row (even this one, earlier), so never equal to created_at.
MESSAGES_UPSERT = f"""
INSERT INTO messages AS m (
    organization_id, conversation_id, provider, external_id, direction, private, sender_name, content,
    content_type, attachments, sent_at, created_at, updated_at)
SELECT %(organization_id)s, c.id, r.provider, r.external_id, r.direction, r.private, r.sender_name, r.content,
       r.content_type, r.attachments::jsonb, r.sent_at, now(), now()
FROM unnest(%(providers)s::text[], %(conversation_ids)s::text[], %(external_ids)s::text[], %(directions)s::text[],
            %(privates)s::boolean[], %(senders)s::text[], %(contents)s::text[], %(content_types)s::text[],
            %(attachments)s::text[], %(sent)s::timestamptz[])
     AS r(provider, conversation_external_id, external_id, direction, private, sender_name, content, content_type,
          attachments, sent_at)
JOIN conversations c ON c.organization_id = %(organization_id)s AND c.provider = r.provider
                    AND c.external_id = r.conversation_external_id
ON CONFLICT {MESSAGES_CONFLICT_TARGET} DO UPDATE SET
    direction = EXCLUDED.direction, private = EXCLUDED.private, sender_name = EXCLUDED.sender_name,
    content = EXCLUDED.content, content_type = EXCLUDED.content_type, attachments = EXCLUDED.attachments,
    updated_at = clock_timestamp()
WHERE (m.direction, m.private, m.sender_name, m.content, m.content_type, m.attachments)
      IS DISTINCT FROM (EXCLUDED.direction, EXCLUDED.private, EXCLUDED.sender_name, EXCLUDED.content,
       EXCLUDED.content_type, EXCLUDED.attachments)
RETURNING m.conversation_id, m.id, m.sent_at, m.direction, m.private, m.content, m.created_at = m.updated_at
"""

# The touched conversations, locked in (provider, external id) order, as conversations_upsert meets them
# (two writers of the same conversations queue rather than deadlock), before their counters are read: what
# is read below is then the last committed state, and a concurrent writer's messages are either in it or
# still to be added by that writer. NO KEY UPDATE does not block the foreign-key checks of messages being
# written elsewhere.
CONVERSATIONS_LOCK = """
SELECT id, message_count, last_message_at, unanswered_since FROM conversations
WHERE organization_id = %(organization_id)s AND id = ANY(%(conversation_ids)s::uuid[])
ORDER BY provider, external_id FOR NO KEY UPDATE
"""

# The counters, from the conversation's current values and the rows this statement wrote, never by counting
# its messages (at a 10,000-message thread spread over two years of monthly partitions, recounting cost more
# than the write): message_count plus the rows inserted; last_message_at the later of the two. The preview
# (the latest message that is not a private note) and unanswered since (the first inbound message after the
# last outbound reply that is not a private note; NULL when nothing waits) come from the page too when every
# row of it is new and later than everything the conversation held (a live conversation, a sync walking
# forwards): CONVERSATION_COUNTERS. Otherwise (an edit, older history, a tie in time) they are read back from
# the conversation's messages by a few short probes of the (conversation_id, sent_at) index, still no count:
# CONVERSATION_COUNTERS_RECOUNT, a separate statement because planning its probes over every monthly
# partition costs more than the plain update's whole run. A NULL preview keeps the stored one. A conversation
# is rewritten only when one of them changed.
_COUNTERS_UPDATE = """
UPDATE conversations c SET
    message_count = v.total, last_message_at = v.last_at,
    last_message_preview = coalesce(left(regexp_replace(v.preview, '\\s+', ' ', 'g'), 200), c.last_message_preview),
    unanswered_since = v.unanswered, updated_at = now()
FROM v
WHERE c.id = v.id AND c.organization_id = %(organization_id)s AND c.id = ANY(%(conversation_ids)s::uuid[])
  AND (c.message_count, c.last_message_at, c.last_message_preview, c.unanswered_since)
      IS DISTINCT FROM (v.total, v.last_at,
       coalesce(left(regexp_replace(v.preview, '\\s+', ' ', 'g'), 200), c.last_message_preview), v.unanswered)
"""
CONVERSATION_COUNTERS = """
WITH v AS (
    SELECT * FROM unnest(%(conversation_ids)s::uuid[], %(totals)s::integer[], %(last_ats)s::timestamptz[],
                         %(previews)s::text[], %(unanswered)s::timestamptz[])
         AS v(id, total, last_at, preview, unanswered)
)""" + _COUNTERS_UPDATE
CONVERSATION_COUNTERS_RECOUNT = """
WITH v AS MATERIALIZED (
    SELECT d.id, d.total, d.last_at,
           coalesce((SELECT m.content FROM messages m WHERE m.conversation_id = d.id AND NOT m.private
                     ORDER BY m.sent_at DESC, m.id DESC LIMIT 1), '') AS preview,
           (SELECT min(m.sent_at) FROM messages m WHERE m.conversation_id = d.id AND m.direction = 'inbound'
              AND m.sent_at > coalesce((SELECT max(a.sent_at) FROM messages a WHERE a.conversation_id = d.id
                                          AND a.direction = 'outbound' AND NOT a.private), '-infinity')) AS unanswered
    FROM unnest(%(conversation_ids)s::uuid[], %(totals)s::integer[], %(last_ats)s::timestamptz[])
         AS d(id, total, last_at)
)""" + _COUNTERS_UPDATE


@dataclass(frozen=True)
class _Written:
    """One message row the upsert inserted or changed, as RETURNING gave it."""

    conversation_id: UUID
    id: int
    sent_at: datetime
    direction: str
    private: bool
    content: str
    inserted: bool


def _counter_values(written: list[_Written], count: int, last_at: datetime | None,
                    unanswered: datetime | None) -> tuple:
    """(total, last_at, preview or None to keep it, unanswered) for one conversation; (total, last_at) alone
    when the preview and unanswered since must be read back from its messages."""
    written = sorted(written, key=lambda row: (row.sent_at, row.id))
    inserted = sum(row.inserted for row in written)
    newest = written[-1].sent_at
    total, latest = count + inserted, newest if last_at is None else max(last_at, newest)
    if inserted < len(written) or (last_at is not None and written[0].sent_at <= last_at):
        return total, latest
    public = [row for row in written if not row.private]
    preview = public[-1].content if public else None
    answers = [row.sent_at for row in public if row.direction == "outbound"]
    if answers:
        answered = max(answers)
        unanswered = min((row.sent_at for row in written if row.direction == "inbound" and row.sent_at > answered),
                         default=None)
    elif unanswered is None:
        unanswered = min((row.sent_at for row in written if row.direction == "inbound"), default=None)
    return total, latest, preview, unanswered


def _counters_update(cursor, organization_id: str, written: list[_Written]) -> None:
    by_conversation: dict[UUID, list[_Written]] = defaultdict(list)
    for row in written:
        by_conversation[row.conversation_id].append(row)
    cursor.execute(CONVERSATIONS_LOCK, {"organization_id": organization_id,
                                        "conversation_ids": sorted(by_conversation)})
    values = {pk: _counter_values(by_conversation[pk], count, last_at, unanswered)
              for pk, count, last_at, unanswered in cursor.fetchall()}
    for statement, width in ((CONVERSATION_COUNTERS, 4), (CONVERSATION_COUNTERS_RECOUNT, 2)):
        group = {pk: value for pk, value in values.items() if len(value) == width}
        if group:
            columns = [list(column) for column in zip(*group.values(), strict=True)]
            names = ("totals", "last_ats", "previews", "unanswered")[:width]
            cursor.execute(statement, {"organization_id": organization_id, "conversation_ids": list(group),
                                       **dict(zip(names, columns, strict=True))})


def messages_upsert(*, organization: Organization, rows: Sequence) -> WriteCounts:
    """Create or update messages on (provider, external id, time) and keep their conversations' counters.

    Idempotent: a message synced, sent from the reply box and echoed by a webhook is one row. A row whose
    conversation is not known yet brings it along when it carries one (``row.conversation``: webhooks and the
    sync both do), so a message never waits for the conversation sync; a row with neither is dropped (and
    counted nowhere). ``None`` rows (activity messages) are skipped."""
    organization_id = _bound(organization)
    rows = _unique_last(rows, lambda row: (row.provider, row.external_id, row.sent_at))
    counts = WriteCounts()
    if not rows:
        return counts
    with transaction.atomic():
        conversations = [row.conversation for row in rows if getattr(row, "conversation", None) is not None]
        if conversations:
            conversations_upsert(organization=organization, rows=conversations)
        params: dict[str, Any] = {
            "organization_id": organization_id,
            "providers": [row.provider for row in rows],
            "conversation_ids": [row.conversation_external_id for row in rows],
            "external_ids": [row.external_id for row in rows],
            "directions": [row.direction for row in rows],
            "privates": [row.private for row in rows],
            "senders": [row.sender_name for row in rows],
            "contents": [row.content for row in rows],
            "content_types": [row.content_type for row in rows],
            "attachments": [json.dumps(row.attachments) for row in rows],
            "sent": [row.sent_at for row in rows],
        }
        with connection.cursor() as cursor:
            cursor.execute(MESSAGES_UPSERT, params)
            written = [_Written(*row) for row in cursor.fetchall()]
            for row in written:
                counts.created += row.inserted
                counts.updated += not row.inserted
            if written:
                _counters_update(cursor, organization_id, written)
    return counts


# -- replies -----------------------------------------------------------------------------------------
class ReplyNotPossible(ValueError):
    """The conversation cannot be answered from here (not a Chatwoot one, no credential, empty text)."""


def reply_send(*, organization: Organization, conversation: Conversation, content: str, private: bool = False,
               actor: User | None) -> Message:
    """Send ``content`` into a Chatwoot conversation (an outgoing message, or a private note) and record it.

    The vendor call happens outside any transaction (no row locked while Chatwoot answers); the message is
    then written with the id and time Chatwoot returned, through the same upsert as the sync and the webhook,
    so the ``message_created`` echo of this very message finds it and adds nothing, whichever comes first.
    A vendor failure raises routiq.http.VendorError and records nothing: Chatwoot did not take the message,
    or (a timeout) may have, and then the echo or the next sync brings it in — never a second copy.
    """
    from messaging.sync import chatwoot_client  # the sync owns "the organization's client"; imported late

    _bound(organization)
    if conversation.organization_id != organization.pk or conversation.provider != "chatwoot":
        raise ReplyNotPossible("Only Chatwoot conversations can be answered here.")
    content = (content or "").strip()
    if not content:
        raise ReplyNotPossible("The message is empty.")
    # A person is waiting on the reply box: a short read timeout, and one short wait on a 429 at most.
    client = chatwoot_client(organization, timeout=(5, 15), max_rate_limit_retries=1, max_rate_limit_wait=5)
    if client is None:
        raise ReplyNotPossible("Chatwoot is not connected for this clinic.")
    sent = client.send_message(int(conversation.external_id), content, private=private)
    row = message_row({**sent, "conversation_id": conversation.external_id})
    if row is None:  # Chatwoot answered with something other than a message we can store
        raise ReplyNotPossible("Chatwoot did not return a message.")
    with transaction.atomic():
        messages_upsert(organization=organization, rows=[row])
        message = Message.objects.get(provider=row.provider, external_id=row.external_id, sent_at=row.sent_at)
        audit_record(action="message.private_note" if private else "message.sent", organization=organization,
                     actor=actor, object_type="conversation", object_id=conversation.pk,
                     changes={"message_id": message.pk, "length": len(content)})
    return message


__all__ = ["MESSAGES_CONFLICT_TARGET", "ReplyNotPossible", "conversations_upsert", "messages_upsert", "reply_send"]
