"""RoutIQ settings: every value comes from the environment, with safe development defaults.

Production (DEBUG off) refuses to start with the development secret key. Every setting is listed in the
README's "Settings" table; keep the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DEV_SECRET_KEY = "dev-insecure-routiq-secret-key-change-me"
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DEBUG is off.")


def secret_key_is_weak(key: str) -> bool:
    """Django's own deploy check (security.W009): short, repetitive or a startproject placeholder.

    Sessions and password-reset tokens are signed with this key, so a guessable one is refused at start-up
    in production rather than left to a warning nobody reads."""
    return len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure")


if not DEBUG and secret_key_is_weak(SECRET_KEY):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is too weak for production: use at least 50 random characters, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# --- Database -------------------------------------------------------------------------------------
# DATABASE_URL is the role this process connects as. The web app and the sync workers use the app role
# (routiq_app: not superuser, not BYPASSRLS, not owner), so Row Level Security binds them. Migrations and
# schema provisioning run with DATABASE_URL set to the owner role (see README, "Database roles").
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", "postgresql://routiq_app:routiq_app@127.0.0.1:5432/routiq"),
        conn_max_age=int(env("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
# Lets parallel test runs on one server use separate test databases (default: test_<name>).
if env("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME")}
# Our backend re-sends the bound organization with every cursor (tenants/pgbackend).
DATABASES["default"]["ENGINE"] = "tenants.rls.pgbackend"
DATABASE_APP_ROLE = env("DATABASE_APP_ROLE", "routiq_app")
# The platform role: the only role the public tables' policies admit across organizations. Only code inside
# tenants.rls.binding.platform_access() uses it (the admin, the scheduler's fan-out): the web app and the
# workers get its URL, but the app role itself can never switch into it.
DATABASE_PLATFORM_ROLE = env("DATABASE_PLATFORM_ROLE", "routiq_platform")
if env("DATABASE_PLATFORM_URL"):
    DATABASES["platform"] = dj_database_url.parse(
        env("DATABASE_PLATFORM_URL"),
        conn_max_age=int(env("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
    DATABASES["platform"]["ENGINE"] = "tenants.rls.pgbackend"
    DATABASES["platform"]["TEST"] = {"MIRROR": "default"}  # never a test database of its own
# PgBouncer in session pooling only: the organization is bound per database session (tenants/rls/pooler.py).
# With "pgbouncer-session" every start (manage.py commands, gunicorn's on_starting) reads the pool mode from
# PgBouncer's admin console and refuses transaction or statement pooling.
DATABASE_POOLER = env("DATABASE_POOLER", "none")
DATABASE_PGBOUNCER_ADMIN_URL = env("DATABASE_PGBOUNCER_ADMIN_URL")
# A backend caches the catalog of every schema it touches: a persistent connection is closed at the end of the
# request in which it has touched this many schemas (0: no limit). README, Connection pooling.
DATABASE_MAX_SCHEMAS_PER_CONNECTION = int(env("DATABASE_MAX_SCHEMAS_PER_CONNECTION", "200"))
# scripts/loadtest.py's comparison view (routiq/loadtest.py): never on in production.
ROUTIQ_LOADTEST_BARE_VIEW = env_bool("ROUTIQ_LOADTEST_BARE_VIEW", False)
ROUTIQ_LOADTEST_BARE_ORGANIZATION = env("ROUTIQ_LOADTEST_BARE_ORGANIZATION")
if ROUTIQ_LOADTEST_BARE_VIEW:
    from routiq.loadtest import BARE_ALIAS, bare_database

    DATABASES[BARE_ALIAS] = bare_database(  # type: ignore[assignment]  # a DBConfig with our OPTIONS
        env("ROUTIQ_LOADTEST_BARE_DATABASE_URL"), schema=env("ROUTIQ_LOADTEST_BARE_SCHEMA"),
        organization_id=ROUTIQ_LOADTEST_BARE_ORGANIZATION, conn_max_age=DATABASES["default"]["CONN_MAX_AGE"],
    )
DATABASE_ROUTERS = ("tenants.rls.router.PlatformAccessRouter", "django_tenants.routers.TenantSyncRouter")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Tenancy --------------------------------------------------------------------------------------
TENANT_MODEL = "tenants.Organization"
TENANT_DOMAIN_MODEL = "tenants.Domain"
# Issue SET search_path once per set_tenant, not on every cursor: our backend re-sends the organization itself,
# and the tests of reused connections (tenants/tests/test_row_level_security.py) hold with this on.
TENANT_LIMIT_SET_CALLS = True
SHARED_APPS = [
    "django_tenants",
    "tenants",
    "billing",
    "routiq.admin.RoutIQAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_rq",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "patients",
    "messaging",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]
# Processes that migrate organizations' schemas (manage.py migrate_organizations) and clone demo ones
# (create_demo_organizations). Each holds one database connection; default: one per core.
MIGRATION_WORKERS = max(1, int(env("MIGRATION_WORKERS", str(os.cpu_count() or 1))))
AUTH_USER_MODEL = "tenants.User"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "routiq.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Cache-Control: no-store on every page (they show patient data); static files are left cacheable.
    "routiq.security.NoStoreMiddleware",
    # Resets the connection to the public schema around every request before anything touches the DB.
    "tenants.middleware.PublicSchemaMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Verifies the Clerk session token, opens/refreshes the Django session, binds the organization.
    "tenants.clerk.middleware.ClerkOrganizationMiddleware",
    "tenants.middleware.PlatformAdminMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "routiq.urls"
WSGI_APPLICATION = "routiq.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context_processors.clerk",
                "billing.context_processors.billing_banner",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-au"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves static files from gunicorn through WhiteNoise, under content-hashed, compressed names that
# collectstatic writes with their manifest: a hashed file never changes, so WhiteNoise sends it with a
# one-year immutable Cache-Control. Without the manifest (the test suite, make run: STATIC_MANIFEST=0) names
# stay as they are and nothing needs collecting.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security -------------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
# Off unless asked for: behind a TLS proxy without BEHIND_TLS_PROXY every request looks like plain HTTP, and
# redirecting it would loop. Production sets SECURE_SSL_REDIRECT=1 (and BEHIND_TLS_PROXY=1 behind a proxy).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load balancers probe /healthz over plain HTTP on the private network; a redirect would fail the probe.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# HSTS is only ever sent on HTTPS responses, so a production default of one year cannot lock out a site that
# is not on TLS yet; development sends none. includeSubDomains covers the portal host's own subdomains, and
# "preload" only makes the host eligible for browser preload lists (nothing is submitted on our behalf).
SECURE_HSTS_SECONDS = int(env("SECURE_HSTS_SECONDS", "0" if DEBUG else str(365 * 24 * 3600)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
# /healthz answers anonymous callers with the status only; the per-check details (database role, pending
# migrations, error classes) need a staff session or this token in the X-Healthz-Token header.
HEALTHZ_TOKEN = env("HEALTHZ_TOKEN")
# Admin password sign-in: this many failed attempts per user name and client address lock that pair out
# for the rest of the window (routiq/admin_login.py).
ADMIN_LOGIN_MAX_FAILURES = int(env("ADMIN_LOGIN_MAX_FAILURES", "10"))
ADMIN_LOGIN_WINDOW_SECONDS = int(env("ADMIN_LOGIN_WINDOW_SECONDS", str(15 * 60)))

# --- Redis / RQ -----------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": timeout}
    for name, timeout in (("default", 300), ("sync", 3600), ("provisioning", 600))
}
# A job whose worker stops renewing it for RQ_HEARTBEAT_SECONDS + RQ_HEARTBEAT_GRACE_SECONDS (SIGKILLed, machine
# lost) is abandoned, and retried by the scheduler's next tick (routiq/worker.py).
RQ = {"WORKER_CLASS": "routiq.worker.Worker"}
RQ_HEARTBEAT_SECONDS = int(env("RQ_HEARTBEAT_SECONDS", "10"))
RQ_HEARTBEAT_GRACE_SECONDS = int(env("RQ_HEARTBEAT_GRACE_SECONDS", "20"))

# --- Cache (routiq/cache.py) ----------------------------------------------------------------------
# Django's cache on Redis: organization and membership lookups of the sign-in middleware, dashboard figures,
# Clerk's JWKS. Never patient rows or secrets. Its own Redis (or at least its own DB) is best: RQ's Redis must
# not evict, a cache's should (allkeys-lru); every cache key has a TTL, so volatile-lru works on a shared one.
CACHE_URL = env("CACHE_URL", REDIS_URL)
CACHE_ENABLED = env_bool("CACHE_ENABLED", True)
# Every key starts "<prefix>:<version>:"; bumping CACHE_KEY_VERSION on a deploy orphans every old value.
CACHE_KEY_PREFIX = env("CACHE_KEY_PREFIX", "routiq-cache")
if not CACHE_KEY_PREFIX:
    raise ImproperlyConfigured("CACHE_KEY_PREFIX must not be empty (it keeps cache keys apart from RQ's).")
CACHE_KEY_VERSION = int(env("CACHE_KEY_VERSION", "1"))
# A slow or unreachable Redis must not slow requests down: short socket timeouts, then the database.
CACHE_SOCKET_TIMEOUT_SECONDS = float(env("CACHE_SOCKET_TIMEOUT_SECONDS", "0.25"))
CACHE_IDENTITY_TTL_SECONDS = int(env("CACHE_IDENTITY_TTL_SECONDS", "60"))
CACHE_DASHBOARD_TTL_SECONDS = int(env("CACHE_DASHBOARD_TTL_SECONDS", "300"))
CACHE_JWKS_TTL_SECONDS = int(env("CACHE_JWKS_TTL_SECONDS", "900"))
CACHES = {
    "default": {
        "BACKEND": "routiq.cache_backend.RedisCache",  # Django's, reusing its redis clients
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "VERSION": CACHE_KEY_VERSION,
        "TIMEOUT": CACHE_IDENTITY_TTL_SECONDS,
        "OPTIONS": {"socket_connect_timeout": CACHE_SOCKET_TIMEOUT_SECONDS,
                    "socket_timeout": CACHE_SOCKET_TIMEOUT_SECONDS},
    }
}

# --- Logging --------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Schedule (manage.py run_scheduler) ----------------------------------------------------------
SCHEDULER_TICK_SECONDS = int(env("SCHEDULER_TICK_SECONDS", "10"))

# --- Clerk ----------------------------------------------------------------------------------------
CLERK_JWT_KEY = env("CLERK_JWT_KEY").replace("\\n", "\n")  # PEM; networkless verification
CLERK_JWKS_URL = env("CLERK_JWKS_URL")  # or the JWKS URL, fetched once and cached by kid
CLERK_AUTHORIZED_PARTIES = env_list("CLERK_AUTHORIZED_PARTIES", "http://localhost:8000,http://127.0.0.1:8000")
CLERK_LEEWAY_SECONDS = int(env("CLERK_LEEWAY_SECONDS", "5"))
CLERK_JWKS_REFETCH_SECONDS = float(env("CLERK_JWKS_REFETCH_SECONDS", "300"))
CLERK_PUBLISHABLE_KEY = env("CLERK_PUBLISHABLE_KEY")
CLERK_FRONTEND_API_URL = env("CLERK_FRONTEND_API_URL")  # serves Clerk's browser script
CLERK_SIGN_IN_URL = env("CLERK_SIGN_IN_URL")
CLERK_WEBHOOK_SECRET = env("CLERK_WEBHOOK_SECRET")
SESSION_IDLE_TIMEOUT_SECONDS = int(env("SESSION_IDLE_TIMEOUT_SECONDS", "900"))
SESSION_COOKIE_AGE = int(env("SESSION_COOKIE_AGE", str(12 * 3600)))
# A portal session ends this long after sign-in whatever its activity (each session's expiry is fixed at
# sign-in; it never slides). A fresh Clerk token after that opens a new session.
SESSION_ABSOLUTE_TIMEOUT_SECONDS = int(env("SESSION_ABSOLUTE_TIMEOUT_SECONDS", str(12 * 3600)))
# POST /webhooks/clerk/ per client IP and minute (Redis); over it: 429 with Retry-After (Svix retries).
WEBHOOK_RATE_LIMIT_PER_MINUTE = int(env("WEBHOOK_RATE_LIMIT_PER_MINUTE", "600"))
# The dev sign-in exists only with DEBUG on and no Clerk key configured.
DEV_SIGN_IN_ENABLED = DEBUG and not (CLERK_JWT_KEY or CLERK_JWKS_URL)
DEV_SIGNING_KEY_PATH = Path(env("DEV_SIGNING_KEY_PATH", str(BASE_DIR / ".devdata" / "dev-clerk-signing-key.pem")))
LOGIN_URL = "/sign-in/"

# --- Credentials encryption -----------------------------------------------------------------------
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation: prepend a new key, run
# `manage.py rotate_credentials`, then drop the old one).
DEV_ENCRYPTION_KEY = "8vJ3n4m1K9Yw2t0Qy7sHf5Lr6pXc3Zb1Ud4Ea2Gi0Ho="
ROUTIQ_ENCRYPTION_KEYS = env_list("ROUTIQ_ENCRYPTION_KEYS", DEV_ENCRYPTION_KEY if DEBUG else "")
if not DEBUG and (not ROUTIQ_ENCRYPTION_KEYS or DEV_ENCRYPTION_KEY in ROUTIQ_ENCRYPTION_KEYS):
    raise ImproperlyConfigured("ROUTIQ_ENCRYPTION_KEYS must be set (and not the development key) when DEBUG is off.")

# --- Cliniko sync ---------------------------------------------------------------------------------
CLINIKO_API_URL = env("CLINIKO_API_URL")  # overrides the shard URL for every key (a stand-in server)
CLINIKO_CONTACT_EMAIL = env("CLINIKO_CONTACT_EMAIL", "support@routiq.example")  # in the mandatory User-Agent
CLINIKO_RATE_LIMIT_PER_MINUTE = int(env("CLINIKO_RATE_LIMIT_PER_MINUTE", "200"))
CLINIKO_SYNC_INTERVAL_SECONDS = int(env("CLINIKO_SYNC_INTERVAL_SECONDS", "900"))
CLINIKO_FULL_SYNC_INTERVAL_SECONDS = int(env("CLINIKO_FULL_SYNC_INTERVAL_SECONDS", str(7 * 24 * 3600)))
MANYCHAT_API_URL = env("MANYCHAT_API_URL", "https://api.manychat.com")
# Chatwoot: webhooks bring changes at once; the incremental sync catches what they missed (an outage, an
# old server without signed webhooks); the weekly full sync also picks up edited contacts.
CHATWOOT_SYNC_INTERVAL_SECONDS = int(env("CHATWOOT_SYNC_INTERVAL_SECONDS", "600"))
CHATWOOT_FULL_SYNC_INTERVAL_SECONDS = int(env("CHATWOOT_FULL_SYNC_INTERVAL_SECONDS", str(7 * 24 * 3600)))
# Vendor URLs a clinic chooses (a self-hosted Chatwoot) must be public https addresses, checked when each
# request is made. On only for development and tests, whose stand-in servers listen on 127.0.0.1.
VENDOR_ALLOW_PRIVATE_NETWORKS = env_bool("VENDOR_ALLOW_PRIVATE_NETWORKS", False)
SYNC_OVERLAP_SECONDS = int(env("SYNC_OVERLAP_SECONDS", "120"))

# --- Billing (Stripe) -----------------------------------------------------------------------------
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY")  # sk_live_… / sk_test_…; unset: the billing page says so
STRIPE_API_URL = env("STRIPE_API_URL", "https://api.stripe.com")  # any server that speaks Stripe's API
# whsec_… of the endpoint; during a rotation both the new and the old secret (comma-separated) verify.
STRIPE_WEBHOOK_SECRETS = env_list("STRIPE_WEBHOOK_SECRET")
STRIPE_WEBHOOK_TOLERANCE_SECONDS = int(env("STRIPE_WEBHOOK_TOLERANCE_SECONDS", "300"))
STRIPE_TIMEOUT_SECONDS = float(env("STRIPE_TIMEOUT_SECONDS", "15"))
STRIPE_MAX_NETWORK_RETRIES = int(env("STRIPE_MAX_NETWORK_RETRIES", "2"))
BILLING_TRIAL_DAYS = int(env("BILLING_TRIAL_DAYS", "14"))  # an organization with no subscription yet
BILLING_GRACE_DAYS = int(env("BILLING_GRACE_DAYS", "7"))  # past due/canceled: syncs pause after this
ACTIVE_PATIENT_WINDOW_DAYS = int(env("ACTIVE_PATIENT_WINDOW_DAYS", "90"))
SYNC_LOG_RETENTION_DAYS = int(env("SYNC_LOG_RETENTION_DAYS", "180"))
# Dashboard figures are refreshed at most once per this many seconds per organization after syncs (patients/jobs.py).
DASHBOARD_REFRESH_DEBOUNCE_SECONDS = int(env("DASHBOARD_REFRESH_DEBOUNCE_SECONDS", "300"))
# Months of messages kept in the database (an organization's message_retention_months overrides it); older
# months are archived to gzip files under MESSAGE_ARCHIVE_DIR (messaging/retention.py). 0 keeps everything.
MESSAGE_RETENTION_MONTHS = int(env("MESSAGE_RETENTION_MONTHS", "0"))
MESSAGE_ARCHIVE_DIR = Path(env("MESSAGE_ARCHIVE_DIR", str(BASE_DIR / ".devdata" / "archive")))
# Years audit logs stay in the database before their months are archived to AUDIT_ARCHIVE_DIR
# (tenants/audit_archive.py). 7 is the legal minimum, and the database refuses to drop anything younger.
AUDIT_LOG_RETENTION_YEARS = int(env("AUDIT_LOG_RETENTION_YEARS", "7"))
if AUDIT_LOG_RETENTION_YEARS < 7:
    raise ImproperlyConfigured("AUDIT_LOG_RETENTION_YEARS cannot be below the legal minimum of 7 years.")
AUDIT_ARCHIVE_DIR = Path(env("AUDIT_ARCHIVE_DIR", str(BASE_DIR / ".devdata" / "archive" / "audit")))
ROUTIQ_SCHEDULE: list[dict[str, Any]] = [
    {"name": "cliniko-incremental", "func": "patients.jobs.enqueue_incremental_syncs",
     "every_seconds": CLINIKO_SYNC_INTERVAL_SECONDS},
    {"name": "cliniko-full", "func": "patients.jobs.enqueue_full_syncs",
     "every_seconds": CLINIKO_FULL_SYNC_INTERVAL_SECONDS},
    {"name": "chatwoot-incremental", "func": "messaging.jobs.enqueue_incremental_syncs",
     "every_seconds": CHATWOOT_SYNC_INTERVAL_SECONDS},
    {"name": "chatwoot-full", "func": "messaging.jobs.enqueue_full_syncs",
     "every_seconds": CHATWOOT_FULL_SYNC_INTERVAL_SECONDS},
    {"name": "active-patients-nightly", "func": "patients.jobs.enqueue_active_patient_refreshes",
     "every_seconds": 24 * 3600},
    {"name": "dashboard-nightly", "func": "patients.jobs.enqueue_dashboard_refreshes", "every_seconds": 24 * 3600},
    {"name": "audit-partitions", "func": "tenants.maintenance_jobs.create_audit_log_partitions",
     "every_seconds": 24 * 3600},
    {"name": "message-partitions", "func": "messaging.partitions.create_message_partitions",
     "every_seconds": 24 * 3600},
    {"name": "message-archival", "func": "messaging.retention.archive_old_messages_everywhere",
     "every_seconds": 24 * 3600},
    {"name": "audit-archival", "func": "tenants.maintenance_jobs.archive_old_audit_logs", "every_seconds": 24 * 3600},
    {"name": "sync-log-pruning", "func": "tenants.maintenance_jobs.prune_sync_logs", "every_seconds": 24 * 3600},
    {"name": "session-record-pruning", "func": "tenants.maintenance_jobs.prune_session_records",
     "every_seconds": 24 * 3600},
    # The owner-role worker's: the first hour of a month, the template new clinics are cloned from is rebuilt.
    {"name": "schema-template", "func": "tenants.jobs.refresh_schema_template", "every_seconds": 3600,
     "queue": "provisioning"},
]
