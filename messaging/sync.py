"""Chatwoot's sync: three resources, each one stream on the shared engine (routiq/sync.py).

**contacts** — numbered pages of 15, oldest first (``sort=created_at``), so a new contact lands on the last
page. The checkpoint's cursor is the next page to read: an incremental run starts at the last page it read
(which may have grown) and reads on; a full run (weekly) starts at page 1 and picks up edits. Contacts go
through messaging.matching (a patient by phone or email, else a lead).

**conversations** — every status (``status=all``), latest activity first, 25 a page. Chatwoot has no
"changed since" filter, but it sorts by ``last_activity_at``: an incremental run reads pages until the first
conversation older than the last run's mark (minus SYNC_OVERLAP_SECONDS), then moves the mark to the newest
activity it saw on its first page. The cursor holds {"page", "mark"} while a run is under way, so a killed
run resumes at its page; a conversation that gains activity during the run moves above the mark and is read
by the next run.

**messages** — the same conversation walk (only conversations active since the mark), and for each one the
messages after an id, 100 at a time, oldest first (``after=``). Where to start in a conversation: where an
interrupted run stopped (the cursor's {"conv", "after"}), else after the newest message we hold from before the
mark (all of those were synced by earlier complete runs; later ones may have come by webhook, possibly with
gaps, so they do not count), else from the start. The cursor also records the last finished conversation
({"pos": [activity, id]}), so a resumed run skips what is done; the run's mark becomes the high-water mark when
the walk ends. No per-conversation state is stored.

Each message record is given its conversation (as a webhook carries it), so the messages write creates a
conversation the conversations sync has not seen yet, and the same mapping serves webhooks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from messaging import services
from messaging.chatwoot_records import (
    PROVIDER,
    chatwoot_id,
    contact_identity,
    conversation_row,
    message_row,
    moment,
)
from messaging.clients.chatwoot import CONTACTS_PER_PAGE, MESSAGES_AFTER_LIMIT, ChatwootClient, ChatwootPage
from messaging.matching import contacts_for_identities
from messaging.models import Message
from patients.models import Contact
from routiq.http import VendorNotFound
from routiq.sync import MalformedRecord, PageProgress, Stream, WriteCounts, run_sync
from tenants.credentials import credential_get
from tenants.models import Organization, SyncCheckpoint, SyncLog

RESOURCES = ("contacts", "conversations", "messages")  # the order a full refresh runs them in


def chatwoot_client(organization: Organization, **http_options) -> ChatwootClient | None:
    """The organization's Chatwoot client, or None when it has no (complete) Chatwoot credential."""
    from tenants.connections import ConnectionUnavailable, vendor_client

    credential = credential_get(organization=organization, provider=PROVIDER)
    if credential is None:
        return None
    try:
        return vendor_client(credential, **http_options)
    except ConnectionUnavailable:
        return None


@dataclass
class Page:
    records: list[dict]
    state: dict = field(default_factory=dict)  # the checkpoint cursor after this page
    done: bool = False  # the walk is over: the run's mark becomes the high-water mark
    mark: datetime | None = None
    total_entries: int | None = None


def _state(checkpoint: SyncCheckpoint) -> dict:
    try:
        state = json.loads(checkpoint.cursor) if checkpoint.cursor else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _since(checkpoint: SyncCheckpoint, full: bool) -> datetime | None:
    if full or checkpoint.high_water_mark is None:
        return None
    return checkpoint.high_water_mark - timedelta(seconds=settings.SYNC_OVERLAP_SECONDS)


def _activity(record: dict) -> datetime | None:
    try:
        return moment(record.get("last_activity_at") or record.get("timestamp"))
    except MalformedRecord:
        return None


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _from_epoch(value) -> datetime | None:
    return moment(value) if isinstance(value, int) else None


def advance(checkpoint: SyncCheckpoint, page: Page) -> None:
    """Save where the walk is; at its end, the run's mark becomes the high-water mark and the cursor clears."""
    if page.done:
        if page.mark is not None and (checkpoint.high_water_mark is None or page.mark > checkpoint.high_water_mark):
            checkpoint.high_water_mark = page.mark
        checkpoint.cursor = ""
    else:
        checkpoint.cursor = json.dumps(page.state, separators=(",", ":"))


# -- contacts ------------------------------------------------------------------------------------------
def contact_stream(organization: Organization, client: ChatwootClient) -> Stream:
    def pages(checkpoint: SyncCheckpoint, full: bool) -> Iterator[Page]:
        start = 1 if full else max(1, int(_state(checkpoint).get("page", 1)))
        for page in client.contact_pages(start):
            # A full page is done with; a short one is the end, and grows: read it again next time.
            next_page = page.number + 1 if len(page.records) >= CONTACTS_PER_PAGE else page.number
            yield Page(page.records, {"page": next_page}, total_entries=page.total_entries)

    def write(organization: Organization, rows: list) -> WriteCounts:
        if not rows:
            return WriteCounts()
        ids = [int(row.external_id) for row in rows]
        known = Contact.objects.filter(organization=organization, chatwoot_contact_id__in=ids).count()
        contacts_for_identities(organization=organization, identities=rows)
        return WriteCounts(created=len(set(ids)) - known, updated=known)

    def advance_contacts(checkpoint: SyncCheckpoint, page: Page) -> None:
        checkpoint.cursor = json.dumps(page.state)

    return Stream(name="contacts", pages=pages, read=contact_identity, write=write, advance=advance_contacts)


# -- conversations -------------------------------------------------------------------------------------
def _with_inboxes(client: ChatwootClient) -> Callable[[dict], dict]:
    """Conversations name only their inbox id: add {"inbox": {id, name}} (as webhooks carry it)."""
    try:
        inboxes: dict[Any, dict] = client.inboxes()  # looked up by whatever the record says
    except VendorNotFound:  # an older or restricted server: names stay empty
        inboxes = {}

    def named(record: dict) -> dict:
        inbox = inboxes.get(record.get("inbox_id"))
        return {**record, "inbox": {"id": inbox["id"], "name": inbox.get("name")}} if inbox else record

    return named


def _conversation_walk(client: ChatwootClient, checkpoint: SyncCheckpoint, full: bool
                       ) -> Iterator[tuple[ChatwootPage, datetime | None, bool, dict]]:
    """The conversation list pages a run reads: (page, run mark, last page?, state). Starts at the page an
    interrupted run stopped at; stops after the first page that reaches below the high-water mark."""
    state = {} if full else _state(checkpoint)
    since = _since(checkpoint, full)
    mark = _from_epoch(state.get("mark"))
    start = max(1, int(state.get("page", 1)))
    for page in client.conversation_pages(start):
        activities = [a for a in map(_activity, page.records) if a is not None]
        if mark is None and activities:
            mark = max(activities)
        older = since is not None and any(a < since for a in activities)
        last = older or not page.has_more
        yield page, mark, last, {"mark": _epoch(mark), "page": page.number + 1}
        if last:
            return


def conversation_stream(organization: Organization, client: ChatwootClient) -> Stream:
    def pages(checkpoint: SyncCheckpoint, full: bool) -> Iterator[Page]:
        named = _with_inboxes(client)
        for page, mark, last, state in _conversation_walk(client, checkpoint, full):
            yield Page([named(r) for r in page.records], state, done=last, mark=mark,
                       total_entries=page.total_entries)

    def write(organization: Organization, rows: list) -> WriteCounts:
        return services.conversations_upsert(organization=organization, rows=rows)

    return Stream(name="conversations", pages=pages, read=conversation_row, write=write, advance=advance)


# -- messages ------------------------------------------------------------------------------------------
def _resume_after(organization: Organization, display_id: int, since: datetime | None) -> int:
    """Where an incremental walk starts in a conversation: after the newest message from before the mark."""
    if since is None:
        return 0
    newest = (Message.objects.filter(organization=organization, provider=PROVIDER,
                                     conversation__provider=PROVIDER, conversation__external_id=str(display_id),
                                     sent_at__lt=since)
              .order_by("-sent_at", "-id").values_list("external_id", flat=True).first())
    return int(newest) if newest is not None and newest.isdigit() else 0


def message_stream(organization: Organization, client: ChatwootClient) -> Stream:
    def pages(checkpoint: SyncCheckpoint, full: bool) -> Iterator[Page]:
        named = _with_inboxes(client)
        resumed = {} if full else _state(checkpoint)
        since = _since(checkpoint, full)
        pos = tuple(resumed["pos"]) if isinstance(resumed.get("pos"), list) else None
        mark = None
        for page, page_mark, _last, list_state in _conversation_walk(client, checkpoint, full):
            mark = page_mark
            state = {"mark": list_state["mark"], "page": page.number, "pos": list(pos) if pos else None}
            for record in page.records:
                activity = _activity(record)
                try:
                    display_id = chatwoot_id(record.get("id"))
                except MalformedRecord:
                    continue  # counted by the conversations sync, which reads the same list
                if since is not None and activity is not None and activity < since:
                    break
                here = (_epoch(activity) or 0, display_id)
                if pos is not None and here >= pos:
                    continue  # finished by the interrupted run this one resumes
                conversation = named(record)
                if resumed.get("conv") == display_id and isinstance(resumed.get("after"), int):
                    after = resumed["after"]
                else:
                    after = _resume_after(organization, display_id, since)
                for batch in client.messages_after(display_id, after):
                    ids = [m["id"] for m in batch if isinstance(m.get("id"), int)]
                    # The same test messages_after stops on: a short batch, or one that does not move on.
                    finished = len(batch) < MESSAGES_AFTER_LIMIT or not ids or max(ids) <= after
                    after = max([after, *ids])
                    if finished:
                        pos = here
                    state = {**state, "pos": list(pos) if pos else None,
                             "conv": None if finished else display_id, "after": None if finished else after}
                    yield Page([{**m, "conversation": conversation} for m in batch], state)
        yield Page([], {}, done=True, mark=mark)

    def write(organization: Organization, rows: list) -> WriteCounts:
        return services.messages_upsert(organization=organization, rows=[row for row in rows if row is not None])

    return Stream(name="messages", pages=pages, read=message_row, write=write, advance=advance)


STREAMS: dict[str, Callable[[Organization, ChatwootClient], Stream]] = {
    "contacts": contact_stream, "conversations": conversation_stream, "messages": message_stream,
}


def sync_chatwoot(*, organization: Organization, resource: str, client: ChatwootClient, full: bool = False,
                  job_id: str = "", on_page: Callable[[PageProgress], None] | None = None) -> SyncLog:
    """One run of ``resource`` for the bound organization (see routiq.sync.run_sync)."""
    if resource not in STREAMS:
        raise ValueError(f"unknown Chatwoot resource {resource!r}; expected one of {RESOURCES}")
    return run_sync(organization=organization, provider=PROVIDER, resource=resource,
                    streams=[STREAMS[resource](organization, client)], full=full, job_id=job_id, on_page=on_page)
