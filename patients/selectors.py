"""Reads of patient data. Every function takes the organization first and builds its query from it.

Lists page by keyset (the sort key of the last row shown, carried encrypted: patients/cursors.py), never by
OFFSET and never with a COUNT(*) over the table. Search goes through contact_search_terms (see
patients/migrations/0004) because Row Level Security rules out trigram and full-text indexes; its candidate
set is capped so a one-letter search costs the same as a precise one.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta

import phonenumbers
from django.db import connection
from django.http import Http404
from django.utils import timezone

from patients.cursors import decode_cursor, encode_cursor
from patients.models import Contact
from tenants.models import Organization

PAGE_SIZE = 50
SEARCH_CANDIDATE_CAP = 1000
MAX_SEARCH_TOKENS = 4
MAX_SEARCH_LENGTH = 100

STATUSES = {
    "current": "All current patients",
    "active": "Active",
    "inactive": "Inactive",
    "no_upcoming": "No upcoming appointment",
    "lapsing": "Active, no upcoming appointment",
    "not_seen": "Not seen for N days",
    "archived": "Archived",
    "leads": "Leads (messaging contacts not matched to a patient)",
}
NEVER = "'1900-01-01T00:00:00Z'::timestamptz"  # stands for "no appointment" in sort keys and comparisons
STATUS_SQL = {
    "current": "c.archived_at IS NULL",
    "active": "c.archived_at IS NULL AND ap.is_active",
    "inactive": "c.archived_at IS NULL AND NOT coalesce(ap.is_active, false)",
    "no_upcoming": "c.archived_at IS NULL AND ap.next_appointment_at IS NULL",
    # The dashboard's "due for a rebooking" (patients/dashboard.py LAPSING_SQL): seen lately, nothing booked.
    "lapsing": "c.archived_at IS NULL AND ap.is_active AND ap.next_appointment_at IS NULL",
    "not_seen": f"c.archived_at IS NULL AND coalesce(ap.last_appointment_at, {NEVER}) < %(seen_before)s",
    "archived": "c.archived_at IS NOT NULL",
    # A Chatwoot or ManyChat contact that matched no Cliniko patient is kept as a contact of its own.
    "leads": "c.cliniko_patient_id IS NULL AND c.archived_at IS NULL",
}


@dataclass(frozen=True)
class SortOrder:
    label: str
    key_sql: tuple[str, ...]  # expressions compared as one row value
    key_types: tuple[str, ...]  # how the cursor's values are read back (patients.cursors.PARSERS)
    descending: bool


SORTS = {
    "name": SortOrder("Name", ("c.last_name", "c.first_name", "c.id"), ("text", "text", "uuid"), descending=False),
    "last_seen": SortOrder(
        "Last seen", (f"coalesce(ap.last_appointment_at, {NEVER})", "c.id"), ("timestamp", "uuid"), descending=True
    ),
    "recent": SortOrder("Recently added", ("c.created_at", "c.id"), ("timestamp", "uuid"), descending=True),
}


@dataclass(frozen=True)
class PatientQuery:
    search: str = ""
    status: str = "current"
    not_seen_days: int = 90
    sort: str = "name"
    after: str | None = None
    limit: int = PAGE_SIZE

    @classmethod
    def from_params(cls, params) -> PatientQuery:
        """Build from request GET parameters; unknown values fall back to defaults instead of erroring."""
        status = params.get("status", "current")
        sort = params.get("sort", "name")
        try:
            days = min(max(int(params.get("days", 90)), 1), 3650)
        except (TypeError, ValueError):
            days = 90
        return cls(
            search=clean_search(params.get("q", "")),
            status=status if status in STATUSES else "current",
            not_seen_days=days,
            sort=sort if sort in SORTS else "name",
            after=params.get("after") or None,
        )


@dataclass(frozen=True, slots=True)
class PatientRow:
    """A patient as the list and the CSV export show them: only the columns they need, read straight from the
    cursor. The list is the portal's busiest page, and a Contact instance per row (every column, a dozen
    timestamps parsed, the model's __init__) cost more than the rest of the query."""

    pk: uuid.UUID
    first_name: str
    last_name: str
    email: str
    phone_e164: str | None
    phone_raw: str
    date_of_birth: date | None
    cliniko_patient_id: int | None
    archived_at: datetime | None
    last_appointment_at: datetime | None
    next_appointment_at: datetime | None
    is_current: bool


ROW_COLUMNS = ("c.id, c.first_name, c.last_name, c.email, c.phone_e164, c.phone_raw, c.date_of_birth, "
               "c.cliniko_patient_id, c.archived_at, ap.last_appointment_at, ap.next_appointment_at, "
               "coalesce(ap.is_active, false)")
ROW_WIDTH = len(fields(PatientRow))


@dataclass(frozen=True)
class PatientPage:
    patients: list[PatientRow]
    next_cursor: str | None
    search_truncated: bool = False
    query: PatientQuery = field(default_factory=PatientQuery)


def patient_list(*, organization: Organization, query: PatientQuery, report_truncation: bool = True) -> PatientPage:
    """One page. ``report_truncation`` costs one more (capped) query per search; the export does not need it."""
    sort = SORTS[query.sort]
    params: dict = {
        "organization_id": organization.pk,
        "limit": query.limit + 1,
        "seen_before": timezone.now() - timedelta(days=query.not_seen_days),
    }
    where = ["c.organization_id = %(organization_id)s", "c.deleted_at IS NULL", STATUS_SQL[query.status]]
    search_cte = ""
    tokens = search_tokens(query.search)
    if tokens:
        search_cte = search_sql(tokens, organization.country, params)
    cursor_values = decode_cursor(query.after, organization_id=organization.pk, sort=query.sort,
                                  types=sort.key_types)
    if cursor_values is not None:
        placeholders = []
        for index, value in enumerate(cursor_values):
            params[f"cursor{index}"] = value
            placeholders.append(f"%(cursor{index})s")
        comparison = "<" if sort.descending else ">"
        where.append(f"({', '.join(sort.key_sql)}) {comparison} ({', '.join(placeholders)})")
    direction = " DESC" if sort.descending else ""
    sql = f"""
        {search_cte}
        SELECT {ROW_COLUMNS}, {", ".join(sort.key_sql)}
        FROM contacts c
        LEFT JOIN active_patients ap ON ap.contact_id = c.id AND ap.organization_id = c.organization_id
        {"JOIN candidates m ON m.contact_id = c.id" if tokens else ""}
        WHERE {" AND ".join(f"({clause})" for clause in where)}
        ORDER BY {", ".join(expr + direction for expr in sort.key_sql)}
        LIMIT %(limit)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    next_cursor = None
    if len(rows) > query.limit:
        next_cursor = encode_cursor(organization_id=organization.pk, sort=query.sort,
                                    values=list(rows[query.limit - 1][ROW_WIDTH:]))
    patients = [PatientRow(*row[:ROW_WIDTH]) for row in rows[: query.limit]]
    truncated = bool(tokens) and report_truncation and candidates_capped(organization, tokens)
    return PatientPage(patients=patients, next_cursor=next_cursor, search_truncated=truncated, query=query)


def patient_list_all(*, organization: Organization, query: PatientQuery, batch_size: int = 1000):
    """Every patient matching the query, in keyset batches (for the CSV export)."""
    query = replace(query, after=None, limit=batch_size)
    while True:
        page = patient_list(organization=organization, query=query, report_truncation=False)
        yield from page.patients
        if page.next_cursor is None:
            return
        query = replace(query, after=page.next_cursor)


# --- search ------------------------------------------------------------------------------------------

def clean_search(text: str) -> str:
    """The typed search as it is shown, audited and searched: control and other unprintable characters (a NUL
    cannot be stored in the audit log's jsonb) become spaces, and it is cut to MAX_SEARCH_LENGTH."""
    text = text[: MAX_SEARCH_LENGTH * 4]  # bounded work before the character-by-character pass
    printable = "".join(" " if unicodedata.category(char).startswith("C") else char for char in text)
    return " ".join(printable.split())[:MAX_SEARCH_LENGTH]


def search_tokens(text: str) -> list[str]:
    """Lower-cased words; a query of only digits and phone punctuation becomes one digits token."""
    text = text.strip().lower()
    if not text:
        return []
    if re.fullmatch(r"[\d\s+()\-.]+", text):
        digits = re.sub(r"\D", "", text)
        return [f"#{digits}"] if len(digits) >= 2 else []
    words = [word for word in re.split(r"[\W_]+", text) if word]
    # The longest word first: it picks the (capped) candidates, the others only filter them.
    return sorted(words, key=len, reverse=True)[:MAX_SEARCH_TOKENS]


def prefix_range(prefix: str) -> tuple[str, str]:
    """[prefix, upper) such that term >= prefix AND term < upper <=> term starts with prefix (C collation)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def token_ranges(token: str, country: str) -> list[str]:
    """The term prefixes a token matches: itself; for digits also "ends with" (the reversed digits) and, for
    a national number typed with its trunk prefix (0412…), the international form (#61412…)."""
    if not token.startswith("#"):
        return [token]
    digits = token[1:]
    ranges = [token, "~" + digits[::-1]]
    calling_code = phonenumbers.country_code_for_region(country)
    if digits.startswith("0") and len(digits) > 1 and calling_code:
        ranges.append(f"#{calling_code}{digits[1:]}")
    return ranges


def range_condition(prefix: str, params: dict, name: str, column: str = "term") -> str:
    """A leakproof btree range — usable by the index under RLS, unlike LIKE or pg_trgm."""
    params[f"{name}_lo"], params[f"{name}_hi"] = prefix_range(prefix)
    return f"{column} >= %({name}_lo)s AND {column} < %({name}_hi)s"


def capped_candidates_sql(token: str, country: str, params: dict) -> str:
    """Up to SEARCH_CANDIDATE_CAP contact ids for the first token: one ordered index-only range scan per
    prefix, glued with UNION ALL (an OR of two ranges made PostgreSQL visit the heap: 27 ms vs ~1 ms)."""
    params["search_cap"] = SEARCH_CANDIDATE_CAP
    scans = [
        f"(SELECT contact_id, term FROM contact_search_terms WHERE organization_id = %(organization_id)s "
        f"AND {range_condition(prefix, params, f't0_{index}')} ORDER BY term LIMIT %(search_cap)s)"
        for index, prefix in enumerate(token_ranges(token, country))
    ]
    return f"SELECT contact_id, term FROM ({' UNION ALL '.join(scans)}) scans ORDER BY term LIMIT %(search_cap)s"


def search_sql(tokens: list[str], country: str, params: dict) -> str:
    """A ``candidates`` CTE: the first token's capped contact ids, narrowed by the other tokens.

    Both steps are MATERIALIZED, which fences them off from the outer query: the other tokens are then
    checked once per candidate (at most SEARCH_CANDIDATE_CAP index probes on (contact_id, term)) whatever
    plan the outer query gets. Left to the planner, a common second word was hashed over its whole range
    (60 ms at 1M contacts) or probed for far more rows than the candidates (120 ms).
    """
    checks = []
    for index, token in enumerate(tokens[1:], start=1):
        conditions = " OR ".join(
            f"({range_condition(prefix, params, f't{index}_{n}', column='t.term')})"
            for n, prefix in enumerate(token_ranges(token, country))
        )
        checks.append(
            "EXISTS (SELECT 1 FROM contact_search_terms t WHERE t.organization_id = %(organization_id)s "
            f"AND t.contact_id = first_token.contact_id AND ({conditions}))"
        )
    cte = f"""
        WITH first_token AS MATERIALIZED (
            SELECT DISTINCT contact_id FROM ({capped_candidates_sql(tokens[0], country, params)}) capped
        ), candidates AS MATERIALIZED (
            SELECT contact_id FROM first_token {"WHERE " + " AND ".join(checks) if checks else ""}
        )
    """
    return cte


def candidates_capped(organization: Organization, tokens: list[str]) -> bool:
    """Whether the first token has more candidates than the cap (the page then asks for more letters)."""
    params: dict = {"organization_id": organization.pk}
    sql = f"SELECT count(*) FROM ({capped_candidates_sql(tokens[0], organization.country, params)}) capped"
    params["search_cap"] = SEARCH_CANDIDATE_CAP + 1
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0] > SEARCH_CANDIDATE_CAP


def patient_get(*, organization: Organization, patient_id) -> Contact:
    """The patient, or 404 — the same 404 whether it does not exist or belongs to another clinic."""
    contact = Contact.objects.filter(organization=organization, pk=patient_id, deleted_at__isnull=True).first()
    if contact is None:
        raise Http404("No such patient.")
    return contact

