"""Patient data kept out of URLs, access logs and caches; hostile query strings never cause a 500."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet
from django.utils.crypto import salted_hmac

from patients.cursors import KEY_SALT
from patients.tests.test_views import make_contacts, names
from patients.views import safe_cell
from routiq.testing.clerk_fixtures import bearer
from tenants.models import AuditLog
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
ENDPOINTS = ["/patients/", "/patients/export.csv"]


@pytest.fixture
def sixty(org_a):
    """More than one page (50), with surnames that must never show up in a cursor."""
    return make_contacts(org_a, [(f"Given{n:02}", f"Surname{n:02}", f"p{n}@example.com", "", None) for n in range(60)])


def body(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def first_cursor(client, token, **params) -> str:
    cursor = client.get("/patients/", params, **bearer(token)).context["page"].next_cursor
    assert cursor is not None
    return cursor


# --- the cursor ---------------------------------------------------------------------------------------

def test_the_cursor_is_opaque(client, mint, org_a, sixty):
    response = client.get("/patients/", **bearer(mint(org_a)))
    cursor = response.context["page"].next_cursor

    assert names(response)[-1] == "Surname49, Given49"
    decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    for text in (cursor, decoded.decode("latin-1")):
        assert "Surname" not in text and "Given" not in text and str(sixty[49].pk) not in text
    assert f"after={quote(cursor, safe='')}" in body(response)  # the Next link carries it, URL-encoded


def test_the_cursor_pages_on(client, mint, org_a, sixty):
    token = mint(org_a)
    second = client.get("/patients/", {"after": first_cursor(client, token)}, **bearer(token))

    assert names(second)[0] == "Surname50, Given50" and len(names(second)) == 10


def test_a_cursor_of_another_clinic_or_sort_restarts_at_the_first_page(client, mint, org_a, org_b, sixty):
    make_contacts(org_b, [("Sam", "Smith", "sam@example.com", "", None)])
    cursor = first_cursor(client, mint(org_a))  # after "Surname49": Smith would be skipped if it were used

    other_clinic = client.get("/patients/", {"after": cursor}, **bearer(mint(org_b)))
    other_sort = client.get("/patients/", {"after": cursor, "sort": "recent"}, **bearer(mint(org_a)))

    assert names(other_clinic) == ["Smith, Sam"]
    assert other_sort.status_code == 200 and len(names(other_sort)) == 50


def test_a_cursor_signed_with_another_key_is_refused(client, mint, org_a, sixty):
    # The right payload, encrypted under another SECRET_KEY: what a forger without the key could make.
    key = base64.urlsafe_b64encode(salted_hmac(KEY_SALT, "fernet", secret="not-our-key", algorithm="sha256").digest())
    payload = json.dumps({"o": str(org_a.pk), "s": "name", "v": ["Surname55", "Given55", str(sixty[55].pk)]})
    forged = Fernet(key).encrypt(payload.encode()).decode()

    response = client.get("/patients/", {"after": forged}, **bearer(mint(org_a)))

    assert names(response)[0] == "Surname00, Given00"


def tampered(cursor: str) -> str:
    middle = len(cursor) // 2
    return cursor[:middle] + ("A" if cursor[middle] != "A" else "B") + cursor[middle + 1:]


BAD_CURSORS = {
    "not base64": "not-base64!!",
    "NUL": "\x00",
    "NUL inside": "gAAAAA\x00BBBB",
    "control characters": "\x01\x1b[31m\x7f",
    "non-ASCII": "gAAAAAB€",
    "old format, wrong shape": b64(json.dumps({"a": 1}).encode()),
    "old format, NUL in a value": b64(json.dumps(["Smith\x00", "Ava", "00000000-0000-0000-0000-000000000000"])
                                      .encode()),
    "old format, not a uuid": b64(json.dumps(["Smith", "Ava", "not-a-uuid"]).encode()),
    "deep nesting": b64(b"[" * 50_000 + b"]" * 50_000),
    "huge": "A" * 200_000,
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("after", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_a_bad_cursor_is_never_a_500(client, mint, org_a, sixty, endpoint, after):
    response = client.get(endpoint, {"after": after}, **bearer(mint(org_a)))

    assert response.status_code == 200
    assert "Surname00" in body(response)  # the first page (or the whole export)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_tampered_cursor_is_never_a_500(client, mint, org_a, sixty, endpoint):
    token = mint(org_a)

    response = client.get(endpoint, {"after": tampered(first_cursor(client, token))}, **bearer(token))

    assert response.status_code == 200 and "Surname00" in body(response)


# --- the search text ----------------------------------------------------------------------------------

BAD_SEARCHES = {
    "NUL": "Surname0\x00",
    "only NUL": "\x00",
    "control characters": "Sur\x01name\x1b0\x7f",
    "bidi override": "\u202eSurname01",
    "very long": "Surname01 " + "x" * 100_000,
    "long emoji": "😀" * 5_000,
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("query", BAD_SEARCHES.values(), ids=BAD_SEARCHES.keys())
def test_a_hostile_search_is_never_a_500(client, mint, org_a, sixty, endpoint, query):
    response = client.get(endpoint, {"q": query}, **bearer(mint(org_a)))

    assert response.status_code == 200
    body(response)


def test_control_characters_are_dropped_from_the_search(client, mint, org_a, sixty):
    response = client.get("/patients/export.csv", {"q": "Surname01\x00"}, **bearer(mint(org_a)))

    rows = list(csv.reader(io.StringIO(body(response))))
    assert [row[1] for row in rows[1:]] == ["Surname01"]
    with bind_organization(org_a):
        assert AuditLog.objects.get(action="patients.exported").changes["search"] == "Surname01"


# --- CSV formulas -------------------------------------------------------------------------------------

FORMULAS = ["=1+1", " =3+3", "\n=4+4", "\r\n=5+5", "  +6+6", "\t-7", "\u00a0@SUM(A1)", "\t", "\rplain",
            "-", "+61 400 000 000"]
HARMLESS = ["Ann", " Bob", "O'Neil", "Smith-Jones", "a=b", "", "   "]


@pytest.mark.parametrize("value", FORMULAS)
def test_formulas_are_neutralised_after_leading_whitespace(value):
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", HARMLESS)
def test_harmless_cells_are_left_alone(value):
    assert safe_cell(value) == value


def test_the_export_neutralises_formulas_behind_whitespace(client, mint, org_a):
    cells = [" =3+3", "\n=4+4", "\t=1", "Ann"]
    make_contacts(org_a, [(value, f"Row{n}", "", "", None) for n, value in enumerate(cells)])

    rows = list(csv.reader(io.StringIO(body(client.get("/patients/export.csv", **bearer(mint(org_a)))))))

    assert {row[1]: row[0] for row in rows[1:]} == {"Row0": "' =3+3", "Row1": "'\n=4+4", "Row2": "'\t=1", "Row3": "Ann"}


# --- caches -------------------------------------------------------------------------------------------

def cache_directives(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",") if part.strip()}


def test_every_portal_page_says_no_store(client, mint, org_a, org_b, sixty):
    token = mint(org_a, role="admin")
    other = make_contacts(org_b, [("Sam", "Smith", "", "", None)])[0]
    pages = {
        "list": client.get("/patients/", {"q": "surname"}, **bearer(token)),
        "htmx partial": client.get("/patients/", {"q": "surname"}, HTTP_HX_REQUEST="true", **bearer(token)),
        "export": client.get("/patients/export.csv", **bearer(token)),
        "detail": client.get(f"/patients/{sixty[0].pk}/", **bearer(token)),
        "another clinic's patient (404)": client.get(f"/patients/{other.pk}/", **bearer(token)),
        "integrations": client.get("/settings/integrations/", **bearer(token)),
        "home": client.get("/", **bearer(token)),
        "signed out": client.get("/patients/"),
    }

    assert pages["list"].status_code == 200 and pages["detail"].status_code == 200
    for name, response in pages.items():
        assert "no-store" in cache_directives(response), name
        assert "public" not in cache_directives(response), name


def test_static_files_stay_cacheable(client):
    response = client.get("/static/favicon.svg")

    assert "no-store" not in cache_directives(response)


# --- access logs --------------------------------------------------------------------------------------

class Capture(logging.Handler):
    def __init__(self, formatter: logging.Formatter | None = None):
        super().__init__()
        self.lines: list[str] = []
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record):
        self.lines.append(self.format(record))


def test_the_development_server_logs_paths_without_query_strings():
    logger = logging.getLogger("django.server")
    capture = Capture()
    logger.addHandler(capture)
    try:
        # What django.core.servers.basehttp.WSGIRequestHandler.log_message sends.
        logger.info('"%s" %s %s', "GET /patients/?q=Surname01&after=abc HTTP/1.1", "200", "1234")
        logger.warning('"%s" %s %s', "GET /patients/export.csv?q=smith%20ava HTTP/1.1", "404", "10")
    finally:
        logger.removeHandler(capture)

    assert capture.lines == ['"GET /patients/ HTTP/1.1" 200 1234', '"GET /patients/export.csv HTTP/1.1" 404 10']


def test_gunicorns_access_log_has_no_query_strings(tmp_path):
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    config = Config()
    config.set("accesslog", str(tmp_path / "access.log"))
    access_log = Logger(config)  # gunicorn's own logger and file handler, as in a worker
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/patients/?q=Surname01", "PATH_INFO": "/patients/",
               "QUERY_STRING": "q=Surname01", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.1",
               "HTTP_REFERER": "https://portal.example/patients/?q=Given02", "HTTP_USER_AGENT": "Mozilla/5.0"}
    response = SimpleNamespace(status="200 OK", sent=512, headers=[("Content-Type", "text/html")])
    request = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])])
    try:
        access_log.access(response, request, environ, timedelta(milliseconds=12))
        config.set("access_log_format", '%(q)s %({query_string}e)s %({raw_uri}e)s %({referer}i)s')
        access_log.access(response, request, environ, timedelta(milliseconds=12))
    finally:
        for handler in list(access_log.access_log.handlers):
            handler.close()
            access_log.access_log.removeHandler(handler)

    lines = (tmp_path / "access.log").read_text().splitlines()
    assert '"GET /patients/ HTTP/1.1" 200 512 "https://portal.example/patients/"' in lines[0]
    assert lines[1] == "- - /patients/ https://portal.example/patients/"
    assert "Surname" not in "".join(lines) and "Given" not in "".join(lines)
