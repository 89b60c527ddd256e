"""A real portal for browser tests: committed data seeded by a subprocess, the portal as a runserver process.

The portal runs exactly as `make run` serves it — its own process, the DEBUG dev sign-in, connected as the app
role — against the session's test database. The data is committed by a subprocess as the owner role (the
test's own transaction would be invisible to another process); it stays in the test database, which is dropped
at the end of the session, so each seed script makes its clerk ids unique per run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from playwright.sync_api import expect

from routiq.testing.processes import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from dev import DEV_ROLES, role_url  # noqa: E402

CHROMIUM = "/usr/bin/chromium"  # Debian's build; Playwright never downloads one here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]
CHROMIUM_MISSING = f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"


@dataclass(frozen=True)
class Portal:
    base: str
    facts: dict  # what the seed script printed (its last line, JSON)
    env: dict[str, str]  # the owner-role environment the seed ran with, for more committed data mid-test
    log: Path
    server_env: dict[str, str]  # the portal's own (the app role), for a worker beside it


def database_url(user: str, password: str) -> str:
    db = settings.DATABASES["default"]  # NAME is the test database (the django_db mark has it set up)
    # Without the mark pytest-django sets up no test database and NAME is the real one: never seed that.
    test_name = (db.get("TEST") or {}).get("NAME")
    assert db["NAME"] == test_name if test_name else db["NAME"].startswith("test_"), f"not a test database: {db}"
    # The server the suite runs on (TCP or an embedded server's socket directory), as scripts/dev.py names it.
    server = os.environ.get("DATABASE_ADMIN_URL") or f"postgresql://{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return role_url(server, user, password, db["NAME"])


@contextlib.contextmanager
def served_portal(seed_script: str, tmp_path: Path, server_settings: dict[str, str] | None = None) -> Iterator[Portal]:
    """Run ``seed_script`` (argv[1]: a unique run id), serve the portal (with ``server_settings`` in its
    environment), yield it, and always stop it."""
    db = settings.DATABASES["default"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DATABASE_URL": database_url(db["USER"], db["PASSWORD"])}
    seeded = subprocess.run([sys.executable, "-c", seed_script, uuid.uuid4().hex[:10]], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert seeded.returncode == 0, seeded.stderr
    facts = json.loads(seeded.stdout.strip().splitlines()[-1])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = dict(env)
    for name in ("CLERK_JWT_KEY", "CLERK_JWKS_URL", "CLERK_PUBLISHABLE_KEY", "CLERK_FRONTEND_API_URL"):
        server_env.pop(name, None)  # the dev sign-in exists only with DEBUG on and no Clerk key
    server_env.update(DEBUG="1", DATABASE_URL=database_url(*DEV_ROLES["app"]), CLERK_AUTHORIZED_PARTIES=base,
                      DEV_SIGNING_KEY_PATH=str(tmp_path / "dev-key.pem"), **(server_settings or {}))
    log = tmp_path / "portal.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                                  env=server_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
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
        yield Portal(base, facts, env, log, server_env)
    finally:
        stop(server)


def run_jobs(portal: Portal, *queues: str) -> None:
    """Run what the portal queued on ``queues`` to the end, as `make run`'s worker would (the app role, the
    portal's settings), then return."""
    worker = subprocess.run([sys.executable, "manage.py", "rqworker", *queues, "--burst"], env=portal.server_env,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stdout + worker.stderr


def sign_in(page, base: str, organization: str, user: str = "Robin Browser") -> None:
    """The dev sign-in's plain POST form (works with JavaScript off too), as the seeded ``user``."""
    if not page.url.startswith(f"{base}/dev/sign-in/"):
        page.goto(f"{base}/dev/sign-in/")
    row = page.locator("tr", has_text=organization).filter(has_text=user)
    row.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/patients/")


def console_errors(page) -> list[str]:
    """A list that collects the page's script errors and console errors (a CSP violation is one); there is no
    favicon, so its 404 is not one."""
    errors: list[str] = []

    def on_console(message) -> None:
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors
