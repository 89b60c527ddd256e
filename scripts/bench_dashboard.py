#!/usr/bin/env python
"""Benchmark the clinic dashboard at clinic scale: the refresh of each materialized view, and the page's
server time, as the app role with RLS on.

    .venv/bin/python scripts/bench_dashboard.py [--contacts 1000000] [--appointments 5000000]
        [--messages 5000000] [--conversations 500000] [--repeat 100] [--keep] [--skip-seed] [--database NAME]

1. A scratch database (`routiq_bench_dashboard`) set up like the other benchmarks (bench_patients'
   ScratchDatabase): contacts and appointments are seeded by bench_patients' own seeding; conversations by
   bench_messaging's SQL, over the same contacts; messages by INSERT … SELECT generate_series over the last
   MONTHS months (the search-document trigger off during the load: the dashboard does not search), then
   bench_messaging's conversation counters (unanswered_since among them) and VACUUM ANALYZE.
2. As the owner with the organization bound, times ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` of each view
   (the first refresh fills them), then the schema functions the refresh job calls.
3. Re-runs itself as the app role (--measure-only): checks the role is bound by RLS, checks the plans of the
   page's queries (no sequential scan of a big table, the index each is written for), and times the dashboard
   view (patients.views.home: the queries and the rendered page) and ``GET /`` through Django's test client
   (URL resolving and every middleware, on a signed-in session) — median and p95 over --repeat calls each;
   target p95 < 100 ms.

A measurement, not a test (patients/tests/test_bench_smoke.py runs it tiny).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench_messaging import CONVERSATIONS_SQL, COUNTERS_SQL, MONTHS  # scripts/ is sys.path[0] as a script
from bench_patients import ScratchDatabase, check_role, django_setup, parse_scratch_arguments, timed
from bench_patients import seed as seed_patients

DATABASE = "routiq_bench_dashboard"
TARGET_MS = 100.0
BATCH = 500_000
MESSAGES_SQL = """
INSERT INTO messages (organization_id, conversation_id, provider, external_id, direction, private, sender_name,
    content, content_type, attachments, sent_at, created_at, updated_at)
SELECT %(organization_id)s, md5('bench-conversation-' || (1 + floor(%(conversations)s * power(random(), 1.5))))::uuid,
       'chatwoot', 'd' || g, CASE WHEN random() < 0.55 THEN 'inbound' ELSE 'outbound' END, g %% 50 = 0, '',
       'Message ' || g, 'text', '[]', now() - random() * %(span)s::interval, now(), now()
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
"""
VIEWS = ("mv_active_patients_summary", "mv_active_patients_monthly", "mv_conversation_metrics_daily")
FUNCTIONS = ("refresh_patient_metrics", "refresh_conversation_metrics")


def seed_messages(args, organization_id: str) -> None:
    from django.db import connection

    from messaging.partitions import ensure_message_partitions
    from tenants.models import Organization
    from tenants.rls.binding import bind_organization
    from tenants.rls.partitions import first_of_month

    organization = Organization.objects.get(pk=organization_id)
    with bind_organization(organization), connection.cursor() as cursor:
        cursor.execute("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM conversations)")
        if args.skip_seed or cursor.fetchone() == (args.messages, args.conversations):
            print("reusing the messages and conversations")
            return
        started = time.perf_counter()
        cursor.execute("TRUNCATE messages, conversations, message_search_documents CASCADE")
        today = datetime.datetime.now(datetime.UTC).date()
        ensure_message_partitions(organization=organization, months_ahead=MONTHS + 1,
                                  today=first_of_month(today, -MONTHS))
        params = {"organization_id": organization_id, "contacts": args.contacts, "conversations": args.conversations,
                  "span": f"{MONTHS * 30} days"}
        for lo in range(1, args.conversations + 1, 100_000):
            cursor.execute(CONVERSATIONS_SQL, {**params, "lo": lo, "hi": min(args.conversations, lo + 99_999)})
        cursor.execute("ALTER TABLE messages DISABLE TRIGGER messages_search_insert")
        for lo in range(1, args.messages + 1, BATCH):
            cursor.execute(MESSAGES_SQL, {**params, "lo": lo, "hi": min(args.messages, lo + BATCH - 1)})
        cursor.execute("ALTER TABLE messages ENABLE TRIGGER messages_search_insert")
        for statement in COUNTERS_SQL:
            cursor.execute(statement)
        for table in ("conversations", "messages"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
        print(f"  seeded {args.conversations:,} conversations and {args.messages:,} messages: "
              f"{time.perf_counter() - started:.1f} s", flush=True)


def time_refreshes(organization_id: str) -> dict[str, float]:
    """Seconds per materialized view (REFRESH … CONCURRENTLY as the owner, bound), then per refresh function."""
    from django.db import connection
    from psycopg import sql

    from tenants.models import Organization
    from tenants.rls.binding import bind_organization

    organization = Organization.objects.get(pk=organization_id)
    seconds = {}
    with bind_organization(organization), connection.cursor() as cursor:
        for view in VIEWS:
            for concurrently in ("", " CONCURRENTLY"):  # the first fills it; the second is what the job does
                started = time.perf_counter()
                cursor.execute(sql.SQL("REFRESH MATERIALIZED VIEW" + concurrently + " {}").format(
                    sql.Identifier(organization.schema_name, view)))
            seconds[f"REFRESH CONCURRENTLY {view}"] = time.perf_counter() - started
        for function in FUNCTIONS:
            started = time.perf_counter()
            cursor.execute(sql.SQL("SELECT {}()").format(sql.Identifier(organization.schema_name, function)))
            seconds[f"{function}() (the job)"] = time.perf_counter() - started
    for name, value in seconds.items():
        print(f"  {name:<58} {value:8.2f} s", flush=True)
    return seconds


def full_stack_page(organization):
    """``GET /`` through Django's test client: URL resolving and the whole middleware chain (security headers,
    session, Clerk sign-in, organization binding, billing banner) as a signed-in member's session would."""
    from django.conf import settings
    from django.test import Client

    from tenants.clerk.authentication import verifier
    from tenants.clerk.dev_tokens import SigningKey, mint_session_token

    key = SigningKey.generate(kid="bench-dashboard")
    settings.CLERK_JWT_KEY, settings.CLERK_AUTHORIZED_PARTIES = key.public_pem(), ["http://testserver"]
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    verifier.cache_clear()
    client = Client()
    client.cookies["__session"] = mint_session_token(  # the first request signs in and opens a session
        key, user_id="user_bench_dashboard", organization_id=organization.clerk_org_id, organization_role="member",
        azp="http://testserver")

    def page() -> int:
        response = client.get("/")
        assert response.status_code == 200, response.status_code
        client.cookies.pop("__session", None)  # from here on the session alone
        return len(response.content)

    return page


def measure(args) -> int:
    django_setup()
    from django.test import RequestFactory

    from patients.dashboard import page_queries
    from patients.views import home
    from routiq.testing.plans import plan_problems
    from tenants.models import Organization
    from tenants.rls.binding import bind_organization

    organization = Organization.objects.get(pk=args.organization)
    role = check_role(organization)
    with bind_organization(organization):
        plans = {name: plan_problems(*query) for name, query in page_queries(organization).items()}
        for name, problems in plans.items():
            print(f"  plan of {name:<40} {'OK' if not problems else '; '.join(problems)}")
        request: Any = RequestFactory().get("/")  # with what the middleware would add
        request.organization = organization
        request.user = SimpleNamespace(get_full_name="Bench", username="bench")
        request.identity = SimpleNamespace(organization=organization, is_admin=False,
                                           membership=SimpleNamespace(get_role_display="Member"))
        request.htmx = False

        def page() -> int:
            response = home(request)
            assert response.status_code == 200
            return len(response.content)

        print(f"\n{'operation':<48} {'median ms':>10} {'p95 ms':>10} {'bytes':>6} {'runs':>5}")
        timing = timed("dashboard page (queries + rendering)", page, args.repeat, target=False)
    full_page = full_stack_page(organization)
    full = timed("GET / through every middleware (session)", full_page, args.repeat, target=False)
    Path(args.results).write_text(json.dumps({"role": role, "timing": asdict(timing), "full": asdict(full),
                                              "plans": plans}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--appointments", type=int, default=5_000_000)
    parser.add_argument("--messages", type=int, default=5_000_000)
    parser.add_argument("--conversations", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=100, help="Timed page views (after a warm-up).")
    args, keep = parse_scratch_arguments(parser, DATABASE)
    if args.measure_only:
        return measure(args)

    scratch = ScratchDatabase.prepare(args, keep=keep)
    from django.db import connections

    organization_id, _ = seed_patients(args)
    seed_messages(args, organization_id)
    refreshes = time_refreshes(organization_id)
    connections.close_all()

    report = scratch.measure_as_app_role(__file__, organization_id, "--repeat", str(args.repeat))
    if not keep:
        scratch.drop()

    page, full = report["timing"], report["full"]
    bad_plans = {name: problems for name, problems in report["plans"].items() if problems}
    verdict = "PASS" if page["p95_ms"] < TARGET_MS and not bad_plans else "FAIL"
    slowest = max(refreshes.items(), key=lambda item: item[1])
    summary = (f"{args.contacts:,} contacts / {args.appointments:,} appointments / {args.messages:,} messages as "
               f"{report['role']} (RLS forced): dashboard p95 {page['p95_ms']:.1f} ms (median {page['median_ms']:.1f}) "
               f"{verdict} < {TARGET_MS:.0f} ms, through every middleware p95 {full['p95_ms']:.1f} ms; "
               f"plans {'OK' if not bad_plans else bad_plans}; refresh "
               + ", ".join(f"{name.split()[-1] if name.startswith('REFRESH') else name} {value:.1f} s"
                           for name, value in refreshes.items())
               + f" (slowest: {slowest[0]})")
    print(f"\nCommand: {shlex.join(sys.orig_argv)}")
    print(f"Summary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
