"""Full-text message search under Row Level Security, with highlighted snippets.

Why a SECURITY DEFINER function over a side table. With FORCE ROW LEVEL SECURITY and the app role,
PostgreSQL evaluates the policy before any non-leakproof condition, and full-text ``@@`` is not leakproof,
so a GIN index on ``messages`` is never used for the app role (nor for the owner: FORCE binds it too).
Measured as the app role with FORCE RLS (scripts/bench_messaging.py: 5M messages in 500k conversations, one
organization), a plain ``@@`` over ``messages`` took 6.7 s for a rare word (it computes every row's tsvector)
and 7 ms for a common one. The two ways out the brief weighed:

(a) chosen — ``message_search_documents`` (message_id, sent_at, conversation_id, tsvector; no
    organization_id) in each organization's schema, GIN-indexed and kept in step by statement triggers on
    ``messages``; Row Level Security enabled on it with *no* policy and not forced, so only its owner reads it
    and every other role sees nothing whatever grants it holds. The one door is the schema's
    ``message_search()`` function (messaging/migrations/0008), SECURITY DEFINER as the owner, fixed to its
    schema, which *reads the bound organization itself* (``app.current_organization``) and answers only when
    that is the schema's own active organization. No argument names an organization, so neither a caller's
    bug nor an injected ``set_config`` of another schema's search_path reaches another clinic: wall 1 (the
    schema: the function only reads its own schema's tables) and wall 2 (the binding: checked inside the
    function, and again by ``messages``' forced policy when the snippet is read) both still stand.
(b) a leakproof term table like ``contact_search_terms`` (prefix range scans on a btree): index-usable under
    RLS without any definer function. Not built, by estimate: ~12 distinct words per message make ~60M term
    rows for 5M messages (the tsvector side table is 1.6 GB for the same data), every message write becomes a
    dozen index inserts, there is no stemming or phrase support, and a common word's newest-first page still
    needs a sort over all its postings.

Plans (messaging/migrations/0008): the hits come from the documents alone, by plans bounded whatever the
planner estimates. Over the whole inbox the newest 20,000 documents are tried first (a common word fills its
page there); otherwise the GIN index, by bitmap only, fetches the (few) matches and they are sorted. Within a
thread or a contact's threads, bitmap scans only. Then each hit's content is read by its key (id, sent_at)
for the snippet. Same benchmark, p95: common words 5-8 ms, medium 13-51 ms, rare 29-32 ms, no match 30 ms,
in a thread or a timeline 8-30 ms; a phrase of two common words ('"knee pain"') 204 ms (its candidates are
every message holding both words, each rechecked for the phrase).

The language is the organization's: 'english' (stemming, stop words) for AU/NZ/GB/US/CA/IE, 'simple'
elsewhere; a document is built with the configuration of its write, so after a country change older messages
keep their old one until rewritten.

Snippets: ``ts_headline`` marks the matches with two private-use characters (stripped from the content
first, so a message cannot fake a mark); here everything is HTML-escaped and only those become
``<mark>``/``</mark>``.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

from django.db import connection
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from psycopg import sql

from tenants.models import Organization
from tenants.rls.binding import NoOrganizationBound, bound_organization_id

ENGLISH_COUNTRIES = frozenset({"AU", "NZ", "GB", "US", "CA", "IE"})  # also in messaging/migrations/0008
START_MARK, STOP_MARK = "\ue000", "\ue001"
MAX_LIMIT = 200  # the function caps it too
MAX_QUERY_LENGTH = 200


@dataclass(frozen=True)
class SearchHit:
    message_id: int
    conversation_id: uuid.UUID
    sent_at: datetime.datetime
    snippet_html: SafeString


def search_config_for(country: str) -> str:
    """The text search configuration an organization's messages are indexed and searched with."""
    return "english" if (country or "").upper() in ENGLISH_COUNTRIES else "simple"


def snippet_html(snippet: str) -> SafeString:
    """Escape everything, then turn the function's match markers into <mark> elements."""
    text = escape(snippet or "")
    return mark_safe(text.replace(START_MARK, "<mark>").replace(STOP_MARK, "</mark>"))  # noqa: S308 (escaped above)


def message_search(
    *, organization: Organization, query: str, conversation_id=None, contact_id=None, limit: int = 50
) -> list[SearchHit]:
    """The bound organization's messages matching ``query`` (websearch syntax: words, "phrases", -not, or),
    newest first, optionally within one conversation or one contact's conversations."""
    if bound_organization_id() != str(organization.pk):
        raise NoOrganizationBound("message_search needs the organization bound")
    text = (query or "").strip()[:MAX_QUERY_LENGTH]
    if not text:
        return []
    limit = max(1, min(int(limit), MAX_LIMIT))
    statement = sql.SQL("SELECT message_id, conversation_id, sent_at, snippet FROM {}(%s, %s, %s, %s)").format(
        sql.Identifier(organization.schema_name, "message_search")
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [text, conversation_id, contact_id, limit])
        rows = cursor.fetchall()
    return [SearchHit(message_id, conversation, sent_at, snippet_html(snippet))
            for message_id, conversation, sent_at, snippet in rows]
