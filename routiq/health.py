"""/healthz: database, Redis and migration state as JSON, for load balancers and on-call engineers.

Anyone gets the overall status (200 "ok" / 503 "unavailable"), which is all a load balancer needs. The
details (the connected database role, pending migration names, error classes) help an attacker map the
system, so they are shown only to a signed-in staff user or to a caller sending ``X-Healthz-Token`` equal to
the ``HEALTHZ_TOKEN`` setting (for monitoring; unset means no token is accepted).
"""

from __future__ import annotations

import hmac
import logging

import django_rq
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


def database_status() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
            )
            role, bypasses_rls = cursor.fetchone()
        return {"ok": True, "role": role, "rls_enforced": not bypasses_rls}
    except DatabaseError as exc:
        logger.warning("healthz: database unavailable: %s", exc)
        return {"ok": False, "error": exc.__class__.__name__}


def migration_status() -> dict:
    """Unapplied migrations of the public schema (tenant schemas are migrated by migrate_schemas)."""
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        pending = [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
        return {"ok": not pending, "pending": pending}
    except DatabaseError as exc:
        return {"ok": False, "error": exc.__class__.__name__}


def redis_status() -> dict:
    try:
        django_rq.get_connection("default").ping()
        return {"ok": True}
    except (RedisError, OSError) as exc:
        logger.warning("healthz: redis unavailable: %s", exc)
        return {"ok": False, "error": exc.__class__.__name__}


def may_see_details(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token, sent = settings.HEALTHZ_TOKEN, request.headers.get("X-Healthz-Token", "")
    return bool(token) and hmac.compare_digest(sent.encode(), token.encode())


@never_cache
@require_GET
def healthz(request):
    checks = {"database": database_status(), "redis": redis_status()}
    checks["migrations"] = migration_status() if checks["database"]["ok"] else {"ok": False}
    healthy = all(check["ok"] for check in checks.values())
    body: dict[str, object] = {"status": "ok" if healthy else "unavailable"}
    if may_see_details(request):
        body.update(checks)
    return JsonResponse(body, status=200 if healthy else 503)
