#!/usr/bin/env python
"""Developer entry points behind `make run` and `make test`.

Both use the PostgreSQL and Redis named by DATABASE_ADMIN_URL / REDIS_URL, or start embedded ones in
.devdata/ when those are unset (scripts/devservices.py). From the admin URL they derive the two roles'
URLs (owner and app, on the same server) unless DATABASE_OWNER_URL / DATABASE_URL are set, create the
roles and the database (`manage.py setup_database`), and then run. With DATABASE_URL and
DATABASE_OWNER_URL but no admin URL, that server's existing roles are used and nothing is set up.

  run   migrate, load the demo organizations, serve the portal, and run the RQ workers and the scheduler
        until Ctrl-C;
  migrate  the public schema, then every organization's schema (migrate_organizations), as the owner role;
  test  run the test suite (extra arguments go to pytest);
  backup [FILE] / restore FILE NEW_DATABASE  pg_dump the whole database / restore a dump into a new one.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from devservices import ensure_services  # noqa: E402

PYTHON = sys.executable
MANAGE = [PYTHON, str(ROOT / "manage.py")]
DATABASE_NAME = "routiq"
DEMO_STRIPE_KEY = "sk_test_demo"
DEMO_STRIPE_WEBHOOK_SECRET = "whsec_demo"
DEMO_PRICES = ["price_demo_basic=4900:aud:month", "price_demo_pro=9900:aud:month"]  # routiq/demo.py's plans
DEV_ROLES = {
    "owner": ("routiq_owner", "routiq_owner_dev"),
    "app": ("routiq_app", "routiq_app_dev"),
    "platform": ("routiq_platform", "routiq_platform_dev"),
}


def role_url(admin_url: str, user: str, password: str, database: str) -> str:
    parts = urlsplit(admin_url)
    host = parts.hostname or ""
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


def database_environment(services: dict[str, str]) -> dict[str, str]:
    admin_url = services["DATABASE_ADMIN_URL"]
    env = {
        "DATABASE_ADMIN_URL": admin_url,
        "REDIS_URL": services["REDIS_URL"],
        "DATABASE_OWNER_URL": os.environ.get("DATABASE_OWNER_URL")
        or role_url(admin_url, *DEV_ROLES["owner"], DATABASE_NAME),
        "DATABASE_URL": os.environ.get("DATABASE_URL") or role_url(admin_url, *DEV_ROLES["app"], DATABASE_NAME),
        "DATABASE_PLATFORM_URL": os.environ.get("DATABASE_PLATFORM_URL")
        or role_url(admin_url, *DEV_ROLES["platform"], DATABASE_NAME),
    }
    return {**os.environ, **env}


def uses_given_roles() -> bool:
    """DATABASE_URL (and DATABASE_OWNER_URL) given without an admin URL: roles exist, nothing to set up."""
    return bool(os.environ.get("DATABASE_URL")) and not os.environ.get("DATABASE_ADMIN_URL")


GIVEN_ROLES = uses_given_roles()  # decided before main() points DATABASE_ADMIN_URL at the owner


def setup_database(env: dict[str, str]) -> None:
    if GIVEN_ROLES:
        return
    manage(env, "setup_database", "--allow-test-databases")  # dev and CI share the roles


def manage(env: dict[str, str], *args: str, as_owner: bool = False) -> None:
    if as_owner:
        env = {**env, "DATABASE_URL": env["DATABASE_OWNER_URL"]}
    subprocess.run([*MANAGE, *args], env=env, cwd=ROOT, check=True)


def run_tests(env: dict[str, str], pytest_args: list[str]) -> int:
    env = {
        # The suite runs with DEBUG off, where settings refuse a weak key (under 50 characters).
        "DJANGO_SECRET_KEY": "test-only-secret-key-0f9c2b7e4a1d6358-not-for-production-use",
        "ROUTIQ_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWVuY3J5cHRpb24ta2V5LTMyYnl0ZXM=",
        # Static names as they are: nothing is collected for the suite (routiq/tests/test_serving.py collects).
        "STATIC_MANIFEST": "0",
        **env,
    }
    setup_database(env)
    # pytest-django builds test_<name> as the owner (CREATEDB); the tests then SET ROLE to the app role, and
    # to the platform role inside platform_access() on that same connection (conftest.py), so no platform alias.
    test_env = {key: value for key, value in env.items() if key != "DATABASE_PLATFORM_URL"}
    test_env["DATABASE_URL"] = env["DATABASE_OWNER_URL"]
    # For the one test that logs in as production does: each role on a connection of its own.
    test_env["ROUTIQ_TEST_APP_URL"] = env["DATABASE_URL"]
    test_env["ROUTIQ_TEST_PLATFORM_URL"] = env["DATABASE_PLATFORM_URL"]
    return subprocess.run([PYTHON, "-m", "pytest", *pytest_args], env=test_env, cwd=ROOT).returncode


def run_portal(env: dict[str, str], port: int) -> int:
    env = {
        "DEBUG": "1",
        "CLERK_AUTHORIZED_PARTIES": f"http://127.0.0.1:{port},http://localhost:{port}",
        # The demo's Chatwoot stand-ins listen on 127.0.0.1, which a clinic-chosen URL may not name otherwise.
        "VENDOR_ALLOW_PRIVATE_NETWORKS": "1",
        # A Stripe stand-in (unless a real test key is given): Subscribe, its "Pay" page, and the signed events.
        "STRIPE_SECRET_KEY": DEMO_STRIPE_KEY,
        "STRIPE_API_URL": f"http://127.0.0.1:{port + 785}",
        "STRIPE_WEBHOOK_SECRET": DEMO_STRIPE_WEBHOOK_SECRET,
        # The demo's first syncs end seconds after start: show their figures on the dashboard soon after.
        "DASHBOARD_REFRESH_DEBOUNCE_SECONDS": "15",
        **env,
    }
    migrate(env)
    # One Cliniko stand-in per demo clinic: the demo's patients arrive through a real sync. And one Chatwoot
    # stand-in, whose conversations are mostly with those same patients, so the timeline shows both.
    stubs = {"org_demo_harbour": (port + 765, 420, 11), "org_demo_summit": (port + 766, 260, 12)}
    chatwoot_stubs = {"org_demo_harbour": (port + 775, 45, 21), "org_demo_summit": (port + 776, 30, 22)}
    owner_env = {**env, "DATABASE_URL": env["DATABASE_OWNER_URL"]}
    processes: list[subprocess.Popen] = []
    try:
        for stub_port, patients, seed in stubs.values():
            processes.append(subprocess.Popen(
                [PYTHON, "-m", "routiq.testing.cliniko_stub", "--port", str(stub_port), "--api-key", "demo-key",
                 "--seed-patients", str(patients), "--seed", str(seed)], env=env, cwd=ROOT))
        for org, (stub_port, conversations, seed) in chatwoot_stubs.items():
            processes.append(subprocess.Popen(
                [PYTHON, "-m", "routiq.testing.chatwoot_stub", "--port", str(stub_port), "--api-token",
                 "demo-chatwoot-token", "--account-id", "1", "--seed-conversations", str(conversations),
                 "--seed", str(seed), "--cliniko-url", f"http://127.0.0.1:{stubs[org][0]}/v1"], env=env, cwd=ROOT))
        if env["STRIPE_SECRET_KEY"] == DEMO_STRIPE_KEY:
            processes.append(subprocess.Popen(
                [PYTHON, "-m", "routiq.testing.stripe_stub", "--port", str(port + 785), "--secret-key", DEMO_STRIPE_KEY,
                 "--webhook-url", f"http://127.0.0.1:{port}/webhooks/stripe/", "--webhook-secret",
                 DEMO_STRIPE_WEBHOOK_SECRET, *[arg for price in DEMO_PRICES for arg in ("--price", price)]],
                env=env, cwd=ROOT))
        manage(env, "load_demo", *[f"--cliniko={org}=http://127.0.0.1:{p}/v1" for org, (p, _, _) in stubs.items()],
               *[f"--chatwoot={org}=http://127.0.0.1:{p}" for org, (p, _, _) in chatwoot_stubs.items()],
               as_owner=True)
        for command, process_env in (
            (["runserver", f"127.0.0.1:{port}", "--noreload"], env),
            (["rqworker", "default", "sync", "--with-scheduler", "--worker-ttl", "60"], env),
            # Provisioning (CREATE SCHEMA for a new organization) is the only work that needs the owner role.
            (["rqworker", "provisioning", "--worker-ttl", "60"], owner_env),
            (["run_scheduler"], env),
        ):
            processes.append(subprocess.Popen([*MANAGE, *command], env=process_env, cwd=ROOT))
        print(f"\n  RoutIQ is running: http://127.0.0.1:{port}/  (dev sign-in: http://127.0.0.1:{port}/dev/sign-in/)")
        print("  Ctrl-C stops the portal, the workers, the scheduler and any embedded servers.\n", flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)


def migrate(env: dict[str, str]) -> int:
    """As in production: the shared apps in the public schema, then the organizations' schemas in parallel
    (those already at the target skipped; a failed one listed and retried by running this again)."""
    setup_database(env)
    manage(env, "migrate_schemas", "--shared", as_owner=True)
    manage(env, "migrate_organizations", as_owner=True)
    return 0


def run_backup(env: dict[str, str], command: str, args: list[str]) -> int:
    """backup [FILE] (default backups/routiq-<time>.dump); restore FILE NEW_DATABASE. Development settings, as
    `make run` uses them; in production run manage.py backup_database / restore_database (README)."""
    env = {"DEBUG": "1", **env}
    if command == "backup":
        output = Path(args[0]) if args else ROOT / "backups" / f"routiq-{time.strftime('%Y%m%d-%H%M%S')}.dump"
        output.parent.mkdir(parents=True, exist_ok=True)
        manage(env, "backup_database", str(output), as_owner=True)
        return 0
    if len(args) != 2:
        sys.exit("usage: make restore FILE=backups/….dump INTO=routiq_restored")
    manage(env, "restore_database", args[0], "--into", args[1], as_owner=True)
    return 0


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C, or a SIGTERM from a process manager, stops everything we started. A shell that starts us in
    # the background sets SIGINT to "ignore"; restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "test", "migrate", "backup", "restore"])
    parser.add_argument("--data-dir", default=str(ROOT / ".devdata"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args, rest = parser.parse_known_args()
    if GIVEN_ROLES:
        if not os.environ.get("DATABASE_OWNER_URL"):
            sys.exit("DATABASE_URL is set: also set DATABASE_OWNER_URL (migrations), or DATABASE_ADMIN_URL instead.")
        # No embedded PostgreSQL: the given server is used as is (its roles were set up by setup_database).
        os.environ["DATABASE_ADMIN_URL"] = os.environ["DATABASE_OWNER_URL"]
    with ensure_services(Path(args.data_dir)) as services:
        env = database_environment(services)
        if args.command == "test":
            return run_tests(env, rest)
        if args.command == "migrate":
            return migrate(env)
        if args.command in ("backup", "restore"):
            return run_backup(env, args.command, rest)
        return run_portal(env, args.port)


if __name__ == "__main__":
    sys.exit(main())
