"""Reads of conversations and messages. Every function takes the organization first and builds its query from it.

Lists page by keyset (the sort key of the last row shown, carried encrypted: patients/cursors.py), never by
OFFSET and never with a COUNT(*): the counters a page shows (message_count, last_message_at, unanswered_since)
are kept on the conversation by the services that write messages. Keys are compared as row values
(``(sent_at, id) < (%s, %s)``), which a btree walks as a range, unlike the equivalent OR of two conditions.
"Does not exist" and "belongs to another clinic" are the same 404.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.http import Http404

from messaging.models import Conversation, ConversationStatus, Message
from messaging.search import message_search
from patients.cursors import decode_cursor, encode_cursor
from patients.models import Appointment, Contact, ContactMatchCandidate
from patients.selectors import clean_search
from tenants.models import Organization

PAGE_SIZE = 50
SEARCH_LIMIT = 50
MATCH_LIMIT = 200
MAX_UNION_CONVERSATIONS = 100  # a patient's conversations read as one UNION ALL branch each (see _timeline_messages)
RECENT_FOR_CHOICES = 500  # how many recent conversations the channel/assignee pickers look at

STATUSES = {"": "Any status", **{key: label for key, label in ConversationStatus.choices}}
CONTACT_KINDS = {"": "Patients and leads", "patient": "Patients", "lead": "Leads"}
CHANNEL_LABELS = {
    "Channel::Whatsapp": "WhatsApp",
    "Channel::WebWidget": "Website chat",
    "Channel::Email": "Email",
    "Channel::FacebookPage": "Facebook",
    "Channel::Instagram": "Instagram",
    "Channel::Sms": "SMS",
    "Channel::TwilioSms": "SMS (Twilio)",
    "Channel::Telegram": "Telegram",
    "Channel::Line": "LINE",
    "Channel::Api": "API",
}


def channel_label(channel: str) -> str:
    if channel in CHANNEL_LABELS:
        return CHANNEL_LABELS[channel]
    return channel.removeprefix("Channel::").replace("_", " ").title() or "—"


def _bounded(text: str | None, length: int = 200) -> str:
    return clean_search(text or "")[:length]


# --- inbox -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InboxQuery:
    status: str = ""
    channel: str = ""
    contact_kind: str = ""
    unanswered: bool = False
    assignee: str = ""
    search: str = ""
    after: str | None = None
    limit: int = PAGE_SIZE

    @classmethod
    def from_params(cls, params) -> InboxQuery:
        """From request GET parameters; unknown values fall back to "any" instead of erroring."""
        status = params.get("status", "")
        kind = params.get("contact", "")
        return cls(
            status=status if status in STATUSES else "",
            channel=_bounded(params.get("channel"), 50),
            contact_kind=kind if kind in CONTACT_KINDS else "",
            unanswered=params.get("unanswered") in ("1", "on", "true"),
            assignee=_bounded(params.get("assignee")),
            search=clean_search(params.get("q", "")),
            after=params.get("after") or None,
            limit=PAGE_SIZE,
        )

    @property
    def filtered(self) -> bool:
        return bool(self.status or self.channel or self.contact_kind or self.unanswered or self.assignee
                    or self.search)


@dataclass
class InboxPage:
    conversations: list[Conversation]
    next_cursor: str | None
    query: InboxQuery = field(default_factory=InboxQuery)
    searched: bool = False
    search_capped: bool = False  # the search returned its limit of messages: more may match


INBOX_SORT = "inbox"
INBOX_COLUMNS = """
    cv.*, ct.first_name AS contact_first_name, ct.last_name AS contact_last_name,
    (ct.cliniko_patient_id IS NOT NULL AND ct.deleted_at IS NULL) AS contact_is_patient
"""


def _inbox_filters(organization: Organization, query: InboxQuery, params: dict) -> list[str]:
    params["organization_id"] = organization.pk
    where = ["cv.organization_id = %(organization_id)s", "cv.deleted_at IS NULL"]
    if query.status:
        params["status"] = query.status
        where.append("cv.status = %(status)s")
    if query.channel:
        params["channel"] = query.channel
        where.append("cv.channel = %(channel)s")
    if query.contact_kind == "patient":
        where.append("ct.cliniko_patient_id IS NOT NULL AND ct.deleted_at IS NULL")
    elif query.contact_kind == "lead":
        where.append("(ct.id IS NULL OR ct.cliniko_patient_id IS NULL OR ct.deleted_at IS NOT NULL)")
    if query.unanswered:
        where.append("cv.unanswered_since IS NOT NULL")
    if query.assignee:
        params["assignee"] = query.assignee
        where.append("lower(cv.assignee_name) = lower(%(assignee)s)")
    return where


def _inbox_sql(where: list[str]) -> str:
    return f"""
        SELECT {INBOX_COLUMNS}
        FROM conversations cv
        LEFT JOIN contacts ct ON ct.id = cv.contact_id AND ct.organization_id = cv.organization_id
        WHERE {" AND ".join(f"({clause})" for clause in where)}
    """


def inbox_page(*, organization: Organization, query: InboxQuery) -> InboxPage:
    """Conversations by latest message, newest first (ties by id). A conversation with no message yet has no
    time to sort by: those come after all the others, by id, read by a second query once the first runs dry
    (one ``NULLS LAST`` order with a keyset over NULLs would need an OR the index cannot walk)."""
    if query.search:
        return _inbox_search(organization=organization, query=query)
    values = decode_cursor(query.after, organization_id=organization.pk, sort=INBOX_SORT, types=("text", "uuid"))
    cursor_time: datetime | None = None
    if values is not None and values[0]:
        try:
            cursor_time = datetime.fromisoformat(values[0])
        except ValueError:
            values = None
    limit = query.limit + 1
    rows: list[Conversation] = []
    in_null_zone = values is not None and cursor_time is None
    if not in_null_zone:
        params: dict = {"limit": limit}
        where = _inbox_filters(organization, query, params) + ["cv.last_message_at IS NOT NULL"]
        if cursor_time is not None and values is not None:  # (a cursor time comes from values)
            params["cursor_time"], params["cursor_id"] = cursor_time, values[1]
            where.append("cv.last_message_at <= %(cursor_time)s")
            where.append("(cv.last_message_at, cv.id) < (%(cursor_time)s, %(cursor_id)s)")
        sql = _inbox_sql(where) + " ORDER BY cv.last_message_at DESC, cv.id DESC LIMIT %(limit)s"
        rows = list(Conversation.objects.raw(sql, params))
    if len(rows) < limit:
        params = {"limit": limit - len(rows)}
        where = _inbox_filters(organization, query, params) + ["cv.last_message_at IS NULL"]
        if in_null_zone and values is not None:  # (in_null_zone implies values)
            params["cursor_id"] = values[1]
            where.append("cv.id < %(cursor_id)s")
        sql = _inbox_sql(where) + " ORDER BY cv.id DESC LIMIT %(limit)s"
        rows += list(Conversation.objects.raw(sql, params))
    next_cursor = None
    if len(rows) > query.limit:
        last = rows[query.limit - 1]
        stamp = last.last_message_at.isoformat() if last.last_message_at else ""
        next_cursor = encode_cursor(organization_id=organization.pk, sort=INBOX_SORT, values=[stamp, last.pk])
    return InboxPage(conversations=rows[: query.limit], next_cursor=next_cursor, query=query)


def _inbox_search(*, organization: Organization, query: InboxQuery) -> InboxPage:
    """The conversations of the newest matching messages (one page: the search is capped, not paged), each with
    its matching snippets, newest hit first. The other filters apply to those conversations, so a filtered
    search can show fewer than the cap; the page then says more may match."""
    hits = message_search(organization=organization, query=query.search, limit=SEARCH_LIMIT)
    snippets: dict[str, list] = {}
    for hit in hits:
        snippets.setdefault(str(hit.conversation_id), []).append(hit)
    if not snippets:
        return InboxPage(conversations=[], next_cursor=None, query=query, searched=True)
    params: dict = {"ids": list(snippets)}
    where = _inbox_filters(organization, query, params) + ["cv.id = ANY(%(ids)s::uuid[])"]
    found = {str(row.pk): row for row in Conversation.objects.raw(_inbox_sql(where), params)}
    conversations = []
    for conversation_id, conversation_hits in snippets.items():
        if conversation_id in found:
            conversation = found[conversation_id]
            conversation.search_hits = conversation_hits
            conversations.append(conversation)
    return InboxPage(conversations=conversations, next_cursor=None, query=query, searched=True,
                     search_capped=len(hits) >= SEARCH_LIMIT)


@dataclass(frozen=True)
class InboxChoices:
    channels: list[tuple[str, str]]
    assignees: list[str]


def inbox_choices(*, organization: Organization) -> InboxChoices:
    """Channels and assignees seen in the most recent conversations, for the filter pickers: a DISTINCT over
    every conversation would read them all on each page view."""
    recent = list(
        Conversation.objects.filter(organization=organization, deleted_at__isnull=True, last_message_at__isnull=False)
        .order_by("-last_message_at")
        .values_list("channel", "assignee_name")[:RECENT_FOR_CHOICES]
    )
    channels = sorted({channel for channel, _ in recent if channel}, key=channel_label)
    return InboxChoices(
        channels=[(channel, channel_label(channel)) for channel in channels],
        assignees=sorted({name for _, name in recent if name}, key=str.lower),
    )


# --- one conversation --------------------------------------------------------------------------------

def conversation_get(*, organization: Organization, conversation_id) -> Conversation:
    """The conversation (with its contact), or the same 404 whether it is missing or another clinic's."""
    conversation = (
        Conversation.objects.filter(organization=organization, pk=conversation_id, deleted_at__isnull=True)
        .select_related("contact")
        .first()
    )
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def message_get(*, organization: Organization, message_id: int) -> Message:
    """One message of a live conversation, or 404 (missing or another clinic's alike)."""
    message = (
        Message.objects.filter(organization=organization, pk=message_id, conversation__deleted_at__isnull=True)
        .only("id", "conversation_id", "sent_at")
        .first()
    )
    if message is None:
        raise Http404("No such message.")
    return message


THREAD_ORDERS = {"newest": "Newest first", "oldest": "Oldest first"}


@dataclass
class ThreadPage:
    messages: list[Message]
    next_cursor: str | None
    order: str
    after: str | None


def thread_sort(conversation: Conversation, order: str) -> str:
    # A cursor names its conversation and order: one copied to another thread starts that thread afresh.
    return f"thread:{conversation.pk}:{order}"


def thread_messages(*, organization: Organization, conversation: Conversation, order: str = "newest",
                    after: str | None = None, limit: int | None = None) -> ThreadPage:
    """A page of the conversation's messages (private notes included, marked by ``private``), by (sent_at, id)."""
    order = order if order in THREAD_ORDERS else "newest"
    limit = limit or PAGE_SIZE
    descending = order == "newest"
    params: dict = {"organization_id": organization.pk, "conversation_id": conversation.pk, "limit": limit + 1}
    where = ["m.organization_id = %(organization_id)s", "m.conversation_id = %(conversation_id)s"]
    key = _message_key(decode_cursor(after, organization_id=organization.pk, sort=thread_sort(conversation, order),
                                     types=("timestamp", "text")))
    if key is not None:
        params["cursor_time"], params["cursor_id"] = key
        comparison = "<" if descending else ">"
        where.append(f"m.sent_at {comparison}= %(cursor_time)s")  # the part of the key the index can range over
        where.append(f"(m.sent_at, m.id) {comparison} (%(cursor_time)s, %(cursor_id)s)")
    direction = "DESC" if descending else "ASC"
    sql = f"""
        SELECT m.* FROM messages m WHERE {" AND ".join(where)}
        ORDER BY m.sent_at {direction}, m.id {direction} LIMIT %(limit)s
    """
    rows = list(Message.objects.raw(sql, params))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(organization_id=organization.pk, sort=thread_sort(conversation, order),
                                    values=[last.sent_at, last.pk])
    return ThreadPage(messages=rows[:limit], next_cursor=next_cursor, order=order,
                      after=after if key is not None else None)


def thread_cursor_at(*, organization: Organization, message: Message) -> str:
    """A newest-first cursor whose page starts with ``message`` (the key just above it), for links to one
    message such as a search hit."""
    conversation = Conversation(pk=message.conversation_id)
    return encode_cursor(organization_id=organization.pk, sort=thread_sort(conversation, "newest"),
                         values=[message.sent_at, message.pk + 1])


def _message_key(values: list | None) -> tuple[datetime, int] | None:
    if values is None:
        return None
    try:
        return values[0], int(values[1])
    except ValueError:
        return None


# --- a patient's timeline ----------------------------------------------------------------------------

TIMELINE_KINDS = {"all": "Everything", "appointments": "Appointments", "messages": "Messages", "notes": "Private notes"}


@dataclass(frozen=True)
class TimelineEntry:
    """One appointment or one message, for the interleaved timeline. ``kind`` is "appointment" or "message"."""

    kind: str
    at: datetime
    id: int
    appointment: Appointment | None = None
    message: Message | None = None
    now: datetime | None = None  # what "booked" (ahead) and "attended" (past) are measured against

    @property
    def key(self) -> tuple:
        return (self.at, self.kind, self.id)

    @property
    def appointment_status(self) -> str:
        """booked, attended, cancelled or no-show (Cliniko's did-not-arrive)."""
        appointment = self.appointment
        assert appointment is not None and self.now is not None  # an appointment entry is built with both
        if appointment.cancelled_at:
            return "cancelled"
        if appointment.did_not_arrive:
            return "no-show"
        if appointment.patient_arrived:
            return "attended"
        return "booked" if appointment.starts_at > self.now else "attended"


@dataclass
class TimelinePage:
    entries: list[TimelineEntry]
    next_cursor: str | None
    kind: str
    after: str | None


def timeline_sort(contact: Contact, kind: str) -> str:
    return f"timeline:{contact.pk}:{kind}"


def _after_key(kind_of_table: str, cursor: tuple | None, column: str, id_column: str, params: dict) -> list[str]:
    """The rows of one table that come after the cursor in (time, kind, id) DESC order. The kind is constant per
    table, so the three-part comparison becomes a plain time bound or a (time, id) row comparison."""
    if cursor is None:
        return []
    at, kind, row_id = cursor
    params["cursor_time"], params["cursor_id"] = at, row_id
    if kind_of_table < kind:
        return [f"{column} <= %(cursor_time)s"]
    if kind_of_table > kind:
        return [f"{column} < %(cursor_time)s"]
    return [f"{column} <= %(cursor_time)s", f"({column}, {id_column}) < (%(cursor_time)s, %(cursor_id)s)"]


def timeline_page(*, organization: Organization, contact: Contact, kind: str = "all", after: str | None = None,
                  limit: int | None = None, now: datetime) -> TimelinePage:
    """The patient's appointments and messages (every channel, every conversation) interleaved by time, newest
    first, keyset-paged by (time, kind, id) across both tables: each table gives at most ``limit + 1`` rows past
    the cursor and the two short lists are merged. Messages are read per conversation (LATERAL, newest first on
    the (conversation, sent_at) index), so a patient with thousands of messages costs one short index walk
    per conversation instead of a sort of all of them."""
    kind = kind if kind in TIMELINE_KINDS else "all"
    limit = limit or PAGE_SIZE
    sort = timeline_sort(contact, kind)
    cursor = None
    values = decode_cursor(after, organization_id=organization.pk, sort=sort, types=("timestamp", "text", "text"))
    if values is not None and values[1] in ("appointment", "message"):
        try:
            cursor = (values[0], values[1], int(values[2]))
        except ValueError:
            cursor = None
    entries: list[TimelineEntry] = []
    if kind in ("all", "appointments"):
        entries += [
            TimelineEntry("appointment", appointment.starts_at, appointment.pk, appointment=appointment, now=now)
            for appointment in _timeline_appointments(organization, contact, cursor, limit + 1)
        ]
    if kind in ("all", "messages", "notes"):
        private = {"all": None, "messages": False, "notes": True}[kind]
        entries += [
            TimelineEntry("message", message.sent_at, message.pk, message=message)
            for message in _timeline_messages(organization, contact, cursor, limit + 1, private)
        ]
    entries.sort(key=lambda entry: entry.key, reverse=True)
    next_cursor = None
    if len(entries) > limit:
        last = entries[limit - 1]
        next_cursor = encode_cursor(organization_id=organization.pk, sort=sort, values=[last.at, last.kind, last.id])
    return TimelinePage(entries=entries[:limit], next_cursor=next_cursor, kind=kind,
                        after=after if cursor is not None else None)


def _timeline_appointments(organization, contact, cursor, limit) -> list[Appointment]:
    params: dict = {"organization_id": organization.pk, "contact_id": contact.pk, "limit": limit}
    where = ["a.organization_id = %(organization_id)s", "a.contact_id = %(contact_id)s", "a.deleted_at IS NULL"]
    where += _after_key("appointment", cursor, "a.starts_at", "a.id", params)
    sql = f"""
        SELECT a.* FROM appointments a WHERE {" AND ".join(where)}
        ORDER BY a.starts_at DESC, a.id DESC LIMIT %(limit)s
    """
    return list(Appointment.objects.raw(sql, params))


def _timeline_messages(organization, contact, cursor, limit, private: bool | None) -> list[Message]:
    """The newest ``limit`` of the patient's messages past the cursor, from all their conversations.

    One short branch per conversation, each with its conversation id as a constant, glued by UNION ALL: the
    planner then sees how big each conversation is (a 10,000-message thread walks its index backwards and
    stops after ``limit`` rows, 0.3 ms). A LATERAL join would plan every conversation as the average one,
    and sorted the whole of a big thread (30 ms). Patients with very many conversations take the LATERAL
    form rather than a statement with hundreds of branches."""
    conversations = dict(
        Conversation.objects.filter(organization=organization, contact=contact, deleted_at__isnull=True)
        .order_by("-last_message_at").values_list("id", "channel")[: MAX_UNION_CONVERSATIONS + 1]
    )
    if not conversations:
        return []
    params: dict = {"organization_id": organization.pk, "contact_id": contact.pk, "limit": limit}
    where = ["m.organization_id = %(organization_id)s"]
    where += _after_key("message", cursor, "m.sent_at", "m.id", params)
    if private is not None:
        params["private"] = private
        where.append("m.private = %(private)s")
    if len(conversations) > MAX_UNION_CONVERSATIONS:
        sql = f"""
            SELECT m.* FROM conversations cv
            CROSS JOIN LATERAL (
                SELECT m.* FROM messages m WHERE {" AND ".join(where)} AND m.conversation_id = cv.id
                ORDER BY m.sent_at DESC, m.id DESC LIMIT %(limit)s
            ) m
            WHERE cv.organization_id = %(organization_id)s AND cv.contact_id = %(contact_id)s
              AND cv.deleted_at IS NULL
            ORDER BY m.sent_at DESC, m.id DESC LIMIT %(limit)s
        """
        channels = dict(Conversation.objects.filter(organization=organization, contact=contact)
                        .values_list("id", "channel"))
    else:
        branches = []
        for index, conversation_id in enumerate(conversations):
            params[f"conversation_{index}"] = conversation_id
            branches.append(
                f"(SELECT m.* FROM messages m WHERE {' AND '.join(where)} "
                f"AND m.conversation_id = %(conversation_{index})s ORDER BY m.sent_at DESC, m.id DESC LIMIT %(limit)s)"
            )
        sql = f"SELECT * FROM ({' UNION ALL '.join(branches)}) m ORDER BY m.sent_at DESC, m.id DESC LIMIT %(limit)s"
        channels = conversations
    rows = list(Message.objects.raw(sql, params))
    for row in rows:
        row.conversation_channel = channels.get(row.conversation_id, "")
    return rows


def timeline_search(*, organization: Organization, contact: Contact, search: str) -> list:
    """The patient's messages matching ``search`` (highlighted snippets), newest first, capped."""
    return message_search(organization=organization, query=search, contact_id=contact.pk, limit=SEARCH_LIMIT)


def latest_conversation(*, organization: Organization, contact: Contact) -> Conversation | None:
    """The patient's most recently active conversation: where the timeline's reply box answers."""
    return (
        Conversation.objects.filter(organization=organization, contact=contact, deleted_at__isnull=True)
        .order_by("-last_message_at", "-created_at")
        .first()
    )


# --- matches -----------------------------------------------------------------------------------------

@dataclass
class LeadMatches:
    lead: Contact
    candidates: list[ContactMatchCandidate]


def match_list(*, organization: Organization, limit: int = MATCH_LIMIT) -> tuple[list[LeadMatches], bool]:
    """Leads waiting on an admin's pick, each with its candidate patients; and whether the list was capped."""
    rows = list(
        ContactMatchCandidate.objects.filter(organization=organization, lead__deleted_at__isnull=True,
                                             patient__deleted_at__isnull=True)
        .select_related("lead", "patient")
        .order_by("lead__last_name", "lead__first_name", "lead_id", "patient__last_name", "patient__first_name",
                  "id")[: limit + 1]
    )
    groups: dict[uuid.UUID, LeadMatches] = {}
    for row in rows[:limit]:
        groups.setdefault(row.lead_id, LeadMatches(lead=row.lead, candidates=[])).candidates.append(row)
    return list(groups.values()), len(rows) > limit


def match_candidate_get(*, organization: Organization, candidate_id: int) -> ContactMatchCandidate:
    candidate = (
        ContactMatchCandidate.objects.filter(organization=organization, pk=candidate_id)
        .select_related("lead", "patient")
        .first()
    )
    if candidate is None:
        raise Http404("No such match.")
    return candidate
