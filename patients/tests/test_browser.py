"""End to end in a real browser: dev sign-in, the patient list, htmx search, a patient, another clinic's 404,
and the same list with JavaScript off.

live_server cannot be used: it needs transactional tests, whose flush TRUNCATEs the append-only audit_logs.
So the data is committed to the session's test database by a subprocess (as the owner role), and the portal
runs as a subprocess (runserver, DEBUG dev sign-in, as the app role) against that database. Committed rows
stay in the test database, which is dropped at the end of the session; clerk ids are unique per run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from dev import DEV_ROLES, role_url  # noqa: E402

CHROMIUM = "/usr/bin/chromium"  # Debian's build; Playwright never downloads one here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]
SEED = """
import json, sys, django
django.setup()
from patients.models import Contact
from tenants.rls.binding import bind_organization
from tenants.services import membership_upsert, organization_create, user_upsert_from_clerk
run = sys.argv[1]
def clinic(label, people):
    org = organization_create(name=f"Browser {label} {run}", clerk_org_id=f"org_browser_{label}_{run}")
    with bind_organization(org):
        ids = [Contact.objects.create(organization=org, first_name=f, last_name=l, email=f"{f}@example.com").pk
               for f, l in people]
    return org, ids
org, _ = clinic("Home", [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")])
user = user_upsert_from_clerk(clerk_user_id=f"user_browser_{run}", first_name="Robin", last_name="Browser")
membership_upsert(organization=org, user=user, role="member")
_, (other,) = clinic("Other", [("Mallory", "Intruder")])
print(json.dumps({"organization": org.name, "other_patient": str(other)}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(user: str, password: str) -> str:
    db = settings.DATABASES["default"]  # NAME is the test database (the django_db mark has it set up)
    # Without the mark pytest-django sets up no test database and NAME is the real one: never seed that.
    test_name = (db.get("TEST") or {}).get("NAME")
    assert db["NAME"] == test_name if test_name else db["NAME"].startswith("test_"), f"not a test database: {db}"
    # The server the suite runs on (TCP or an embedded server's socket directory), as scripts/dev.py names it.
    server = os.environ.get("DATABASE_ADMIN_URL") or f"postgresql://{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return role_url(server, user, password, db["NAME"])


@pytest.fixture
def portal(django_db_setup, tmp_path):
    """Seed committed data, serve the portal as the app role; yield (base URL, seed facts, log); always stop it."""
    db = settings.DATABASES["default"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DATABASE_URL": database_url(db["USER"], db["PASSWORD"])}
    seeded = subprocess.run([sys.executable, "-c", SEED, uuid.uuid4().hex[:10]], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert seeded.returncode == 0, seeded.stderr
    facts = json.loads(seeded.stdout.strip().splitlines()[-1])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    for name in ("CLERK_JWT_KEY", "CLERK_JWKS_URL", "CLERK_PUBLISHABLE_KEY", "CLERK_FRONTEND_API_URL"):
        env.pop(name, None)  # the dev sign-in exists only with DEBUG on and no Clerk key
    env.update(DEBUG="1", DATABASE_URL=database_url(*DEV_ROLES["app"]), CLERK_AUTHORIZED_PARTIES=base,
               DEV_SIGNING_KEY_PATH=str(tmp_path / "dev-key.pem"))
    log = tmp_path / "portal.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                                  env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None and time.monotonic() < deadline, f"portal did not start:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield base, facts, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def sign_in(page, base: str, organization: str) -> None:
    page.goto(f"{base}/dev/sign-in/")
    row = page.locator("tr", has_text=organization).filter(has_text="Robin Browser")
    row.get_by_role("button", name="Sign in").click()  # a plain POST form: works with JavaScript off too
    expect(page).to_have_url(f"{base}/patients/")


def patient_names(page):
    return page.locator("#results tbody tr td:first-child")


# The mark makes pytest-django create the test database even when this test runs alone; the test's own
# transaction is unused (the data is committed by the subprocesses).
@pytest.mark.django_db
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)")
def test_clinic_thin_slice_in_a_browser(portal):
    base, facts, log = portal
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            drive(browser, base, facts)
        except BaseException:
            print(f"--- portal output ---\n{log.read_text()}")  # pytest shows it with the failure
            raise
        finally:
            browser.close()


def drive(browser, base: str, facts: dict) -> None:
    page = browser.new_page()
    page.set_default_timeout(10_000)
    errors = []  # a CSP violation or a script error shows up as a console error (there is no favicon: skip it)
    page.on("console", lambda message: message.type == "error"
            and not message.location["url"].endswith("/favicon.ico") and errors.append(message.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, base, facts["organization"])
    expect(patient_names(page)).to_have_text(["Hopper, Grace", "Lovelace, Ada", "Turing, Alan"])

    # Search as you type: htmx swaps #results in place; a full page load would drop the marker.
    page.evaluate("window.__noReload = true")
    page.fill("#search", "hop")
    expect(patient_names(page)).to_have_text(["Hopper, Grace"])
    expect(page).to_have_url(re.compile(r"/patients/\?.*q=hop"))  # hx-push-url
    assert page.evaluate("window.__noReload") is True, "the search reloaded the page"

    page.get_by_role("link", name="Hopper, Grace").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Grace Hopper")
    assert errors == [], errors  # checked before the 404: DEBUG's 404 page has an inline style CSP blocks

    response = page.goto(f"{base}/patients/{facts['other_patient']}/")
    assert response.status == 404
    assert "Mallory" not in page.content() and "Intruder" not in page.content()
    page.context.close()

    # Without JavaScript the search form is a plain GET form (Enter submits it).
    page = browser.new_context(java_script_enabled=False).new_page()
    page.set_default_timeout(10_000)
    sign_in(page, base, facts["organization"])
    page.fill("#search", "love")
    page.press("#search", "Enter")
    expect(page).to_have_url(re.compile(r"/patients/\?.*q=love"))
    expect(patient_names(page)).to_have_text(["Lovelace, Ada"])
    page.context.close()
