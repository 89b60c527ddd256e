#!/usr/bin/env python
"""Benchmark the inbox, threads, the unified timeline, message search and the message upsert at clinic scale,
as the app role with FORCE RLS.

    .venv/bin/python scripts/bench_messaging.py [--messages 5000000] [--conversations 500000]
        [--thread-messages 10000] [--patient-messages 10000] [--patient-appointments 500]
        [--upsert-rows 20000] [--webhooks 2000] [--repeat 100] [--keep] [--skip-seed] [--database NAME] [--app-url URL]

Works like scripts/bench_patients.py (same roles, scratch database `routiq_bench_messaging` on the server of
DATABASE_ADMIN_URL, dropped afterwards unless --keep):

1. As the owner with the organization bound: contacts (a quarter of the conversation count), conversations,
   then the messages, generated here (Zipf-distributed words of a clinic's vocabulary plus a few rare words)
   and COPYed in batches of 500k into a staging table, then INSERT … SELECT into the partitioned messages
   (COPY FROM is refused on a table with RLS). Partitions for the 24 months they span are made first with
   the job's own entry point. One conversation holds --thread-messages (the thread benchmark), and one
   patient has --patient-messages over three conversations and --patient-appointments appointments. The
   search documents are filled once after the load (trigger off, GIN index built at the end, as a restore
   would), conversation counters are computed set-based, then VACUUM ANALYZE.
2. Re-runs itself with --measure-only as the app role (checked: not superuser, not BYPASSRLS, not the
   owner, FORCE RLS on messages) and prints median and p95 of: inbox pages (page 1, a deep keyset page,
   unanswered, open), thread pages (newest, a deep page), the patient's timeline (page 1, a deep page,
   messages only) — all through messaging.selectors as the pages call them — and message search
   (messaging.search) for common, medium and rare words and a phrase, on the inbox, in the thread and in the
   timeline, next to the same search written as a plain `@@` over messages (what RLS leaves of it).
3. Still as the app role: messaging.services.messages_upsert in pages of 100 (new rows in 1% new
   conversations, then the same pages again unchanged), in rows/s.
4. Webhook deliveries processed per second end to end: --webhooks signed Chatwoot ``message_created``
   deliveries POSTed one after another to /webhooks/chatwoot/<token>/ through django.test.Client in the
   app-role process (verify, record the delivery, match the contact, upsert conversation and message with
   their counters and search documents, commit), with p50/p95 latency.

Targets: inbox, thread and timeline p95 < 50 ms; search p95 < 100 ms. messaging/tests/test_bench_smoke.py runs
it tiny.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_patients import (  # scripts/ is sys.path[0] when run as a script
    ScratchDatabase,
    check_role,
    django_setup,
    p95,
    parse_scratch_arguments,
)

DATABASE = "routiq_bench_messaging"
CLERK_ORG_ID = "org_bench_messaging"
BATCH = 500_000
PAGE = 100
WEBHOOK_SECRET = "bench-chatwoot-webhook-secret"
WEBHOOK_ID_BASE = 900_000_000  # Chatwoot contact and conversation ids of the webhook phase start above this
MONTHS = 24
TARGETS = {"page": 50.0, "search": 100.0}
# A clinic's words, most frequent first (drawn Zipf-like), and rare ones with fixed odds per message.
VOCABULARY = """
hi thanks appointment please yes can you the booking tomorrow today time see morning afternoon pain back
great ok sure when available next week reschedule cancel confirm physio session treatment clinic monday
tuesday wednesday thursday friday saturday hello good sorry running late parking address invoice payment
receipt health fund claim referral doctor exercises stretch knee shoulder neck hip ankle wrist injury sore
better worse massage dry needling follow up initial consult review x-ray scan results form new patient details
email phone number message reply call later soon wait minutes hour early cost price medicare gap rebate
insurance extras private card cash transfer link portal online reminder sms whatsapp instagram facebook
question help need want would like could book change move earlier later last first thank lovely awesome cheers
perfect noted received sent attached photo video document plan program home gym running sport football netball
tennis golf swimming cycling work desk posture headache migraine jaw back-pain lower upper left right both
""".split()
RARE = {"sciatica": 1 / 5_000, "orthotics": 1 / 50_000, "plantar": 1 / 500_000}
SEARCHES = (("common", "appointment"), ("common", "thanks tomorrow"), ("medium", "invoice"),
            ("medium", "dry needling"), ("rare", "sciatica"), ("rare", "orthotics"), ("rare", "plantar"),
            ("phrase", '"knee pain"'), ("none", "xylophone"))


def zipf_cumulative(count: int) -> list[float]:
    total, cumulative = 0.0, []
    for rank in range(1, count + 1):
        total += 1 / rank ** 1.05
        cumulative.append(total)
    return cumulative


def message_texts(count: int, rng: random.Random) -> list[str]:
    cumulative = zipf_cumulative(len(VOCABULARY))
    texts = []
    for _ in range(count):
        words = rng.choices(VOCABULARY, cum_weights=cumulative, k=rng.randint(3, 22))
        for word, odds in RARE.items():
            if rng.random() < odds:
                words.insert(rng.randrange(len(words) + 1), word)
        texts.append(" ".join(words))
    return texts


# --- owner process: organization and seed ---------------------------------------------------------

@dataclass
class Shape:
    messages: int
    conversations: int
    thread_messages: int
    patient_messages: int
    patient_appointments: int

    @property
    def contacts(self) -> int:
        return max(2, self.conversations // 4)

    @property
    def patient_threads(self) -> list[int]:  # the patient's three conversations' sizes
        first = self.patient_messages * 7 // 10
        second = self.patient_messages * 2 // 10
        return [first, second, self.patient_messages - first - second]


# Conversation numbers: 1 = the thread benchmark's, 2..4 = the patient's, 5.. = everyone else's.
# Contact numbers: 1 = the patient, 2 = the thread's contact, 3.. = everyone else.
CONTACTS_SQL = """
INSERT INTO contacts (id, organization_id, cliniko_patient_id, first_name, last_name, email, phone_raw, phone_e164,
    date_of_birth, source_created_at, source_updated_at, archived_at, deleted_at, is_active, created_at, updated_at)
SELECT md5('bench-contact-' || g)::uuid, %(organization_id)s,
       CASE WHEN g %% 3 <> 0 THEN 7000000000 + g END,  -- two in three are patients, the rest leads
       'Pat' || g, 'Example', 'pat' || g || '@example.com', '', NULL, NULL, now(), now(), NULL, NULL, true, now(), now()
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
"""
CONVERSATIONS_SQL = """
INSERT INTO conversations (id, organization_id, contact_id, provider, external_id, channel, inbox_name, status,
    assignee_name, last_message_at, last_message_preview, message_count, unanswered_since, deleted_at, created_at,
    updated_at)
SELECT md5('bench-conversation-' || g)::uuid, %(organization_id)s,
       md5('bench-contact-' || CASE WHEN g = 1 THEN 2 WHEN g <= 4 THEN 1
                                   ELSE 3 + (g %% (%(contacts)s - 2)) END)::uuid,
       'chatwoot', g::text, (ARRAY['Channel::Whatsapp', 'Channel::Api', 'Channel::WebWidget', 'instagram'])[1 + g %% 4],
       'Front desk', (ARRAY['open', 'pending', 'resolved', 'resolved', 'resolved'])[1 + g %% 5],
       (ARRAY['', 'Sam', 'Alex', 'Jo'])[1 + g %% 4], NULL, '', 0, NULL, NULL, now(), now()
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
"""
APPOINTMENTS_SQL = """
INSERT INTO appointments (organization_id, contact_id, cliniko_appointment_id, cliniko_patient_id, starts_at, ends_at,
    cancelled_at, cancellation_reason, did_not_arrive, patient_arrived, notes, source_created_at, source_updated_at,
    archived_at, deleted_at, created_at, updated_at)
SELECT %(organization_id)s, md5('bench-contact-1')::uuid, 8000000000 + g, 7000000001,
       now() - interval '730 days' + g * (interval '790 days' / %(count)s), NULL,
       CASE WHEN g %% 12 = 0 THEN now() END, NULL, g %% 25 = 0, g %% 12 <> 0, '', now(), now(), NULL, NULL, now(), now()
FROM generate_series(1, %(count)s) g
"""
MESSAGES_SQL = """
INSERT INTO messages (organization_id, conversation_id, provider, external_id, direction, private, sender_name,
    content, content_type, attachments, sent_at, created_at, updated_at)
SELECT %(organization_id)s, md5('bench-conversation-' || s.conversation)::uuid, 'chatwoot', 'b' || s.number,
       s.direction, s.number %% 50 = 0, '', s.content, 'text', '[]', s.sent_at, now(), now()
FROM bench_staging s
"""
COUNTERS_SQL = [
    """
    CREATE TEMP TABLE bench_counters AS
    SELECT DISTINCT ON (conversation_id) conversation_id, count(*) OVER w AS total, sent_at AS last_at,
           content AS last_content, direction AS last_direction
    FROM messages WINDOW w AS (PARTITION BY conversation_id)
    ORDER BY conversation_id, sent_at DESC, id DESC
    """,
    "CREATE UNIQUE INDEX ON bench_counters (conversation_id)",
    "ANALYZE bench_counters",
    """
    UPDATE conversations c SET message_count = v.total, last_message_at = v.last_at,
           last_message_preview = left(v.last_content, 200),
           unanswered_since = CASE WHEN v.last_direction = 'inbound' THEN v.last_at END
    FROM bench_counters v WHERE c.id = v.conversation_id
    """,
]


def conversation_numbers(shape: Shape, rng: random.Random) -> list[int]:
    """Which conversation each message belongs to: the benchmark threads get their sizes exactly; the rest
    spread over the other conversations with a skew (a few long threads, a long tail of short ones)."""
    numbers = [1] * shape.thread_messages
    for offset, size in enumerate(shape.patient_threads):
        numbers += [2 + offset] * size
    others = max(1, shape.conversations - 4)
    rest = shape.messages - len(numbers)
    # every conversation at least one message when there are enough, then skewed
    base = [5 + n for n in range(min(others, rest))]
    numbers += base
    numbers += [5 + int(others * rng.random() ** 1.5) for _ in range(rest - len(base))]
    rng.shuffle(numbers)
    return numbers


def seed(args, shape: Shape) -> tuple[str, float | None]:
    from django.db import connection

    from messaging.partitions import ensure_message_partitions
    from tenants.models import Organization
    from tenants.rls.binding import bind_organization
    from tenants.rls.partitions import first_of_month
    from tenants.services import organization_create

    organization = Organization.objects.filter(clerk_org_id=CLERK_ORG_ID).first() or organization_create(
        name="Bench Messaging Clinic", clerk_org_id=CLERK_ORG_ID, country="AU")
    with bind_organization(organization), connection.cursor() as cursor:
        cursor.execute("DELETE FROM messages WHERE external_id NOT LIKE 'b%%'")  # a previous run's upserts
        cursor.execute("DELETE FROM conversations WHERE external_id LIKE 'u%%' OR external_id ~ '^9[0-9]{8}$'")
        cursor.execute("DELETE FROM contacts WHERE chatwoot_contact_id >= %s", [WEBHOOK_ID_BASE])
        cursor.execute("DELETE FROM webhook_deliveries")
        cursor.execute("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM conversations)")
        counts = cursor.fetchone()
        if args.skip_seed or counts == (shape.messages, shape.conversations):
            print(f"reusing {counts[0]:,} messages in {counts[1]:,} conversations in {args.database}")
            return str(organization.pk), None
        started = time.perf_counter()
        if any(counts):
            cursor.execute("TRUNCATE messages, conversations, appointments, contacts, contact_search_terms, "
                           "message_search_documents CASCADE")
        today = datetime.datetime.now(datetime.UTC).date()
        ensure_message_partitions(organization=organization, months_ahead=MONTHS + 1,
                                  today=first_of_month(today, -MONTHS))
        params: dict[str, Any] = {"organization_id": str(organization.pk), "contacts": shape.contacts}
        for statement, total in ((CONTACTS_SQL, shape.contacts), (CONVERSATIONS_SQL, shape.conversations)):
            for lo in range(1, total + 1, 100_000):
                cursor.execute(statement, {**params, "lo": lo, "hi": min(total, lo + 99_999)})
        cursor.execute(APPOINTMENTS_SQL, {**params, "count": shape.patient_appointments})
        print(f"  seeded {shape.contacts:,} contacts, {shape.conversations:,} conversations, "
              f"{shape.patient_appointments:,} appointments: {time.perf_counter() - started:.1f} s", flush=True)

        # The search documents are built once after the load, and their GIN index after them (a bulk load
        # through the per-statement trigger would maintain the index row by row).
        cursor.execute("ALTER TABLE messages DISABLE TRIGGER messages_search_insert")
        cursor.execute("DROP INDEX message_search_documents_document_idx")
        cursor.execute("CREATE TEMP TABLE bench_staging (number bigint, conversation bigint, direction text, "
                       "content text, sent_at timestamptz)")
        rng = random.Random(42)
        numbers = conversation_numbers(shape, rng)
        now = datetime.datetime.now(datetime.UTC)
        span = datetime.timedelta(days=30.4 * MONTHS).total_seconds()
        step = time.perf_counter()
        for lo in range(0, shape.messages, BATCH):
            hi = min(shape.messages, lo + BATCH)
            texts = message_texts(hi - lo, rng)
            with cursor.copy("COPY bench_staging FROM STDIN") as copy:
                for offset, text in enumerate(texts):
                    number = lo + offset + 1
                    copy.write_row((number, numbers[number - 1], "inbound" if rng.random() < 0.55 else "outbound",
                                    text, now - datetime.timedelta(seconds=rng.random() * span)))
            cursor.execute(MESSAGES_SQL, params)
            cursor.execute("TRUNCATE bench_staging")
            print(f"  messages {hi:,}/{shape.messages:,}: {time.perf_counter() - step:.1f} s", flush=True)
        cursor.execute("ALTER TABLE messages ENABLE TRIGGER messages_search_insert")
        step = time.perf_counter()
        cursor.execute("ALTER TABLE messages NO FORCE ROW LEVEL SECURITY")  # owner: read every row once
        cursor.execute("INSERT INTO message_search_documents (message_id, sent_at, conversation_id, document) "
                       "SELECT id, sent_at, conversation_id, to_tsvector(message_search_config(), content) "
                       "FROM messages")
        cursor.execute("ALTER TABLE messages FORCE ROW LEVEL SECURITY")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("CREATE INDEX message_search_documents_document_idx ON message_search_documents "
                       "USING gin (document)")
        print(f"  search documents and their GIN index: {time.perf_counter() - step:.1f} s", flush=True)
        step = time.perf_counter()
        for statement in COUNTERS_SQL:
            cursor.execute(statement)
        print(f"  conversation counters: {time.perf_counter() - step:.1f} s", flush=True)
        for table in ("contacts", "contact_search_terms", "conversations", "appointments", "messages",
                      "message_search_documents"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
        cursor.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_inherits i "
                       "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass")
        messages_size = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('message_search_documents'))")
        documents_size = cursor.fetchone()[0]
        seconds = time.perf_counter() - started
        print(f"seeding: {seconds:.1f} s; messages {messages_size}, search documents {documents_size}")
    return str(organization.pk), seconds


# --- app-role process ------------------------------------------------------------------------------

@dataclass
class Timing:
    operation: str
    median_ms: float
    p95_ms: float
    rows: int
    runs: int
    target_ms: float | None

    def line(self) -> str:
        mark = ("PASS" if self.p95_ms < self.target_ms else "FAIL") if self.target_ms else ""
        target = f"< {self.target_ms:.0f}" if self.target_ms else ""
        return (f"{self.operation:<58} {self.median_ms:10.2f} {self.p95_ms:10.2f} {self.rows:6d} {self.runs:5d}  "
                f"{target:>5} {mark}")


def timed(operation: str, call, repeat: int, target_ms: float | None, budget: float = 20.0) -> Timing | None:
    try:
        for _ in range(3):
            started = time.perf_counter()
            call()
            warm = time.perf_counter() - started
            if warm > 1:
                break
        samples, rows = [], 0
        for _ in range(max(3, min(repeat, int(budget / max(warm, 1e-6))))):
            started = time.perf_counter()
            rows = call()
            samples.append((time.perf_counter() - started) * 1000)
    except Exception as exc:  # a page's selector changed shape: say so, keep measuring the rest
        print(f"{operation:<58} skipped: {exc!r}", flush=True)
        return None
    timing = Timing(operation, statistics.median(samples), p95(samples), rows, len(samples), target_ms)
    print(timing.line(), flush=True)
    return timing


def time_reads(organization, repeat: int) -> list[Timing]:
    from django.db import connection
    from django.utils import timezone

    from messaging import selectors
    from messaging.models import Conversation
    from messaging.search import message_search
    from patients.cursors import encode_cursor
    from patients.models import Contact

    thread = Conversation.objects.get(external_id="1")
    patient = Contact.objects.get(cliniko_patient_id=7000000001)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM conversations WHERE last_message_at IS NOT NULL")
        (live,) = cursor.fetchone()
        cursor.execute("SELECT last_message_at, id FROM conversations WHERE last_message_at IS NOT NULL "
                       "ORDER BY last_message_at DESC, id DESC OFFSET %s LIMIT 1", [int(live * 0.9)])
        deep_at, deep_id = cursor.fetchone()
        cursor.execute("SELECT sent_at, id FROM messages WHERE conversation_id = %s ORDER BY sent_at DESC, id DESC "
                       "OFFSET %s LIMIT 1", [thread.pk, thread.message_count * 9 // 10])
        thread_at, thread_id = cursor.fetchone()
    deep_inbox = encode_cursor(organization_id=organization.pk, sort=selectors.INBOX_SORT,
                               values=[deep_at.isoformat(), deep_id])
    deep_thread = encode_cursor(organization_id=organization.pk, sort=selectors.thread_sort(thread, "newest"),
                                values=[thread_at, thread_id])

    def inbox(**query):
        return lambda: len(selectors.inbox_page(organization=organization,
                                                query=selectors.InboxQuery(**query)).conversations)

    def thread_page(after=None):
        return lambda: len(selectors.thread_messages(organization=organization, conversation=thread,
                                                     after=after).messages)

    def timeline(kind="all", after=None):
        return lambda: len(selectors.timeline_page(organization=organization, contact=patient, kind=kind,
                                                   after=after, now=now).entries)

    deep_timeline = None
    page = selectors.timeline_page(organization=organization, contact=patient, now=now)
    for _ in range(20):  # 20 pages in: a patient's history a year or so back
        if not page.next_cursor:
            break
        deep_timeline = page.next_cursor
        page = selectors.timeline_page(organization=organization, contact=patient, after=deep_timeline, now=now)

    print(f"\n{'operation':<58} {'median ms':>10} {'p95 ms':>10} {'rows':>6} {'runs':>5}  target")
    page_ms = TARGETS["page"]
    timings = [
        timed("inbox page 1", inbox(), repeat, page_ms),
        timed(f"inbox deep page (#{int(live * 0.9):,} by last message)", inbox(after=deep_inbox), repeat, page_ms),
        timed("inbox page 1, unanswered", inbox(unanswered=True), repeat, page_ms),
        timed("inbox page 1, open", inbox(status="open"), repeat, page_ms),
        timed(f"thread page 1 ({thread.message_count:,} messages)", thread_page(), repeat, page_ms),
        timed("thread deep page (90% back)", thread_page(deep_thread), repeat, page_ms),
        timed("timeline page 1 (messages + appointments)", timeline(), repeat, page_ms),
        timed("timeline page 21", timeline(after=deep_timeline), repeat, page_ms) if deep_timeline else None,
        timed("timeline page 1, messages only", timeline(kind="messages"), repeat, page_ms),
    ]
    search_ms = TARGETS["search"]
    for label, text in SEARCHES:
        timings.append(timed(f"search {label} {text!r} (inbox)",
                             lambda text=text: len(message_search(organization=organization, query=text)),
                             repeat, search_ms))
    for label, text in SEARCHES[:1] + SEARCHES[4:5]:
        timings.append(timed(f"search {label} {text!r} (thread)",
                             lambda text=text: len(message_search(organization=organization, query=text,
                                                                  conversation_id=thread.pk)), repeat, search_ms))
        timings.append(timed(f"search {label} {text!r} (timeline)",
                             lambda text=text: len(message_search(organization=organization, query=text,
                                                                  contact_id=patient.pk)), repeat, search_ms))

    for label, text in (SEARCHES[0], SEARCHES[4]):
        contrast(f"for contrast: plain @@ over messages, {label} {text!r}", text)
    return [timing for timing in timings if timing is not None]


def contrast(operation: str, text: str, timeout_s: int = 10) -> None:
    """The same search as the app role's own full-text query over messages, once: under FORCE RLS no GIN index
    on messages could serve it (``@@`` is not leakproof), so it computes every row's tsvector until it has a
    page; cancelled after ``timeout_s``."""
    from django.db import OperationalError, connection, transaction

    started = time.perf_counter()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = '{timeout_s}s'")
            cursor.execute("SELECT id FROM messages WHERE to_tsvector('english', content) @@ "
                           "websearch_to_tsquery('english', %s) ORDER BY sent_at DESC, id DESC LIMIT 50", [text])
            rows = len(cursor.fetchall())
        print(f"{operation:<58} {(time.perf_counter() - started) * 1000:10.2f} {'(once)':>10} {rows:6d}", flush=True)
    except OperationalError:
        print(f"{operation:<58} cancelled after {timeout_s} s", flush=True)


def upsert_pages(organization, pages, budget_s: float) -> tuple[float, int, int]:
    """(seconds, rows written, pages done): stops after ``budget_s`` so a slow write path still reports."""
    from django.db import transaction

    from messaging.services import messages_upsert

    written, done, started = 0, 0, time.perf_counter()
    for rows in pages:
        with transaction.atomic():
            counts = messages_upsert(organization=organization, rows=rows)
        written += counts.created + counts.updated
        done += 1
        if time.perf_counter() - started > budget_s:
            break
    return time.perf_counter() - started, written, done


def time_sync(organization, count: int, budget_s: float = 120.0) -> dict:
    from messaging.chatwoot_records import ConversationRow, MessageRow

    rng = random.Random(7)
    texts = message_texts(count, rng)
    conversations = max(1, count // 100)
    start = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(days=3)
    threads = [ConversationRow(external_id=f"u{n}", contact=None, channel="Channel::Whatsapp", inbox_name="Front desk",
                               status="open", assignee_name="", last_activity_at=None) for n in range(conversations)]
    rows = [MessageRow(conversation_external_id=f"u{n % conversations}", external_id=f"u{n}",
                       direction="inbound" if n % 3 else "outbound", private=False, sender_name="Pat",
                       content=texts[n], content_type="text", attachments=[],
                       sent_at=start + datetime.timedelta(seconds=n), conversation=threads[n % conversations])
            for n in range(count)]
    pages = [rows[i:i + PAGE] for i in range(0, count, PAGE)]
    new_s, created, done = upsert_pages(organization, pages, budget_s)
    same_s, rewritten, _ = upsert_pages(organization, pages[:done], budget_s * 2)
    rows_done = sum(len(page) for page in pages[:done])
    rate = {"new": rows_done / new_s, "unchanged": rows_done / same_s}
    print(f"\nsync write path, {rows_done:,} Chatwoot messages in pages of {PAGE} (messages_upsert, a transaction per "
          f"page, {conversations:,} conversations with their counters):")
    print(f"  upsert, new rows                  {new_s:7.2f} s  {rate['new']:10,.0f} rows/s  (written {created:,})")
    print(f"  upsert, same rows again           {same_s:7.2f} s  {rate['unchanged']:10,.0f} rows/s  "
          f"(written {rewritten:,})")
    return {"rates": rate, "written": created, "written_unchanged": rewritten}


def webhook_deliveries(organization, count: int) -> list[tuple[str, bytes, dict]]:
    """``count`` signed ``message_created`` deliveries as Chatwoot sends them (routiq.testing.chatwoot_stub
    builds and signs them; its server is never started): ten messages per conversation, each conversation and
    its contact new to the clinic on its first message (a lead is made for it), inbound and outbound
    alternating. (url, body, headers) each, signed now: the timestamp must stay within five minutes."""
    from routiq.testing.chatwoot_stub import ChatwootStub, signed_webhook_headers

    stub = ChatwootStub(account_id=1, clock=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    stub.stop()  # only its records and payload builders are used: release the port it bound
    # Chatwoot ids far above the seeded conversations' (1..--conversations), so no delivery lands in one of them.
    for kind in ("contact", "conversation"):
        stub._next[kind] = WEBHOOK_ID_BASE
    rng = random.Random(11)
    texts = message_texts(count, rng)
    url = f"/webhooks/chatwoot/{organization.webhook_token}/"
    deliveries, display_id = [], 0  # a conversation is added at n == 0
    for n in range(count):
        if n % 10 == 0:
            contact = stub.add_contact(f"Webhook Person {n}", email=f"webhook{n}@example.com",
                                       phone_number=f"+6149{n:07d}")
            display_id = stub.add_conversation(contact["id"])["id"]
        message = stub.add_message(display_id, texts[n], message_type="incoming" if n % 2 == 0 else "outgoing")
        body = json.dumps(stub.message_webhook_payload(message["id"])).encode()
        headers = signed_webhook_headers(WEBHOOK_SECRET, body)
        headers.pop("Content-Type")
        deliveries.append((url, body, headers))
    return deliveries


def time_webhooks(organization, count: int) -> dict:
    """Deliveries processed per second end to end, one after another through the real view in this process
    (django.test.Client: the whole middleware stack, the throttle in Redis, the token, the HMAC and timestamp,
    the delivery row, contact matching, the conversation and message upserts with their counters and search
    documents, all committed before the answer; the view applies a delivery in the request rather than
    enqueueing it, see messaging/webhooks.py). Signing is done before the clock starts, as Chatwoot does it."""
    from django.conf import settings
    from django.test import Client

    from tenants.credentials import credential_set
    from tenants.rls.binding import bind_organization
    from tenants.webhook_endpoints import credential_webhook_secret_set

    with bind_organization(organization):
        credential_set(organization=organization, provider="chatwoot", secret="bench-api-token",
                       base_url="https://chatwoot.example.com", account_id="1")
        credential_webhook_secret_set(organization=organization, provider="chatwoot", secret=WEBHOOK_SECRET)
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 10 * count + 1000  # one client address sends them all here
    deliveries = webhook_deliveries(organization, count)
    client = Client()
    samples: list[float] = []
    statuses: dict[str, int] = {}
    started = time.perf_counter()
    for url, body, headers in deliveries:
        begun = time.perf_counter()
        response = client.post(url, body, content_type="application/json", headers=headers)
        samples.append((time.perf_counter() - begun) * 1000)
        answer = response.json().get("status") if response.status_code == 200 else response.status_code
        statuses[str(answer)] = statuses.get(str(answer), 0) + 1
    seconds = time.perf_counter() - started
    rate = count / seconds
    print(f"\nwebhook deliveries, {count:,} signed Chatwoot message_created through POST "
          f"/webhooks/chatwoot/<token>/ (verify + record + apply, in-process client, one at a time):")
    print(f"  webhook deliveries processed      {seconds:7.2f} s  {rate:10,.1f} deliveries/s  "
          f"p50 {statistics.median(samples):.1f} ms  p95 {p95(samples):.1f} ms  answers {statuses}")
    return {"deliveries_per_s": rate, "p50_ms": statistics.median(samples), "p95_ms": p95(samples),
            "statuses": statuses}


def measure(args) -> int:
    django_setup()
    from tenants.models import Organization
    from tenants.rls.binding import bind_organization

    organization = Organization.objects.get(pk=args.organization)
    role = check_role(organization, "messages")
    with bind_organization(organization):
        timings = time_reads(organization, args.repeat)
        sync = None
        if args.upsert_rows:
            try:
                sync = time_sync(organization, args.upsert_rows)
            except ImportError as exc:
                print(f"sync write path skipped: {exc!r}")
    webhooks = time_webhooks(organization, args.webhooks) if args.webhooks else None  # the frame binds itself
    Path(args.results).write_text(json.dumps({"role": role, "timings": [asdict(t) for t in timings],
                                              "sync": sync, "webhooks": webhooks}, default=str))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5_000_000)
    parser.add_argument("--conversations", type=int, default=500_000)
    parser.add_argument("--thread-messages", type=int, default=10_000)
    parser.add_argument("--patient-messages", type=int, default=10_000)
    parser.add_argument("--patient-appointments", type=int, default=500)
    parser.add_argument("--upsert-rows", type=int, default=20_000, help="Messages to upsert (0: skip).")
    parser.add_argument("--webhooks", type=int, default=2_000, help="Webhook deliveries to post (0: skip).")
    parser.add_argument("--repeat", type=int, default=100, help="Timed calls per operation (after a warm-up).")
    args, keep = parse_scratch_arguments(parser, DATABASE)
    if args.measure_only:
        return measure(args)
    shape = Shape(args.messages, args.conversations, args.thread_messages, args.patient_messages,
                  args.patient_appointments)
    if shape.conversations < 5 or shape.thread_messages + shape.patient_messages > shape.messages:
        parser.error("need at least 5 conversations and more messages than the thread and the patient hold")

    scratch = ScratchDatabase.prepare(args, keep=keep)
    from django.db import connections

    organization_id, seed_seconds = seed(args, shape)
    connections.close_all()

    report = scratch.measure_as_app_role(__file__, organization_id, "--repeat", str(args.repeat),
                                         "--upsert-rows", str(args.upsert_rows), "--webhooks", str(args.webhooks))
    if not keep:
        scratch.drop()

    parts = []
    for kind, words in (("page", ("inbox", "thread", "timeline")), ("search", ("search",))):
        held = [t for t in report["timings"] if t["target_ms"] and t["operation"].split()[0] in words]
        if held:
            worst = max(held, key=lambda t: t["p95_ms"])
            verdict = "PASS" if worst["p95_ms"] < TARGETS[kind] else "FAIL"
            parts.append(f"{kind}s worst p95 {worst['p95_ms']:.1f} ms ({worst['operation']}) {verdict} "
                         f"< {TARGETS[kind]:.0f} ms")
    summary = (f"{args.messages:,} messages / {args.conversations:,} conversations as {report['role']} "
               f"(RLS forced): " + "; ".join(parts))
    if report["sync"]:
        summary += (f"; upsert {report['sync']['rates']['new']:,.0f} rows/s new, "
                    f"{report['sync']['rates']['unchanged']:,.0f} unchanged")
    if report.get("webhooks"):
        summary += (f"; webhooks {report['webhooks']['deliveries_per_s']:,.1f} deliveries/s, "
                    f"p95 {report['webhooks']['p95_ms']:.1f} ms")
    if seed_seconds is not None:
        summary += f"; seeding {seed_seconds:.0f} s"
    print(f"\nCommand: {shlex.join(sys.orig_argv)}")
    print(f"Summary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
