"""gunicorn's settings for the portal: `gunicorn routiq.wsgi` from the repository root reads this file.

Every value can be changed by environment variable (README, Production). Sync workers: a request holds one
worker and that worker's one persistent database connection, which is what the organization binding is
proven safe on (routiq/tests/test_connection_safety.py).
"""

from __future__ import annotations

import multiprocessing
import os
import sys

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# The usual 2 x cores + 1: a sync worker waits on PostgreSQL and Redis for part of each request.
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * multiprocessing.cpu_count() + 1)))
worker_class = "sync"
# A worker is replaced after this many requests (spread by the jitter, so they do not all restart at once): it
# bounds the worker's Python memory. Not lower: a restart costs a second or two of CPU (imports, URL conf,
# templates, the verified-token memo refilled), and at 5,000 a loaded worker restarted every minute or so, which
# the load test saw as p99 spikes. The database connection's life is bounded on its own (DATABASE_CONN_MAX_AGE,
# DATABASE_MAX_SCHEMAS_PER_CONNECTION; README, Connection pooling).
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "50000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "5000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # a request running longer is killed and logged
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))  # behind a load balancer that reuses connections
# The addresses whose X-Forwarded-For/-Proto are believed: the proxy in front (REMOTE_ADDR feeds rate limits).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
# The path without its query string (%(U)s, not %(r)s or %(q)s) and no Referer: query strings carry patient
# search terms. routiq.security.AccessLogRedaction also strips them from any format an operator sets.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


def on_starting(server) -> None:
    """Run Django's system checks before any worker starts: among them the pooler check, which refuses
    PgBouncer in transaction pooling (tenants/rls/pooler.py). A failed check stops gunicorn here."""
    import django
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routiq.settings")
    django.setup()
    try:
        call_command("check")
    except SystemCheckError as exc:
        server.log.error("refusing to start:\n%s", exc)
        sys.exit(1)


def post_worker_init(worker) -> None:
    """Move everything loaded at start-up (Django, the URL conf, templates: about 100,000 objects) out of the
    garbage collector's reach: a full collection then scans only what requests made, and stops a worker for a
    few milliseconds, not the 25-90 ms measured before, which landed on whichever requests queued behind it."""
    import gc

    gc.freeze()
