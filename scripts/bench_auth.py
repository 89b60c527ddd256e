#!/usr/bin/env python
"""What the Clerk sign-in middleware adds to a request, with the verification key cached, with and without
the Redis cache of its lookups (routiq/cache.py, tenants/cache.py).

    .venv/bin/python scripts/bench_auth.py [--requests 2000]

Scratch database `routiq_bench_auth` (dropped at the end) on DATABASE_ADMIN_URL's server; one organization.
Each request goes through the session, authentication and Clerk middlewares to a view that returns an empty
response; the baseline is the same chain without the Clerk middleware. Printed: median and p95 of the whole
chain for (a) a fresh Bearer token (RS256 verify + organization, user and membership lookups; stateless),
(a') one Bearer token sent again and again, as a client does for its minute of life, and (b) a request riding
on the Django session a cookie token opened (no token), and the difference to the baseline — the
middleware's added time per request, in wall time and in this thread's CPU time (waits on PostgreSQL and
Redis are wall time only). Each is measured with CACHE_ENABLED off (every lookup
from PostgreSQL) and on (organization and identity from Redis, warm); last, the dashboard page (its three
figure queries cached, the action lists live) behind a Bearer token, off and on; and
ClerkOrganizationMiddleware.authenticate alone for the repeated token, warm. Server time in-process;
PostgreSQL and Redis on this machine (REDIS_URL or CACHE_URL; keys under the prefix routiq-bench-auth).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench_tenancy import admin_execute, manage
from dev import DEV_ROLES, ROOT, role_url
from psycopg import sql

DATABASE = "routiq_bench_auth"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(handler, make_request, count: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each request."""
    for _ in range(50):  # warm caches and the connection
        handler(make_request())
    wall, cpu = [], []
    for _ in range(count):
        request = make_request()
        started, started_cpu = time.perf_counter(), time.thread_time()
        response = handler(request)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        assert response.status_code == 200, response.status_code
    return wall, cpu


def measure(count: int) -> list[tuple[str, tuple[list[float], list[float]]]]:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory

    from patients.views import home
    from routiq import cache
    from tenants.clerk.authentication import verifier
    from tenants.clerk.dev_tokens import SigningKey, mint_session_token
    from tenants.clerk.middleware import ClerkOrganizationMiddleware
    from tenants.middleware import PublicSchemaMiddleware
    from tenants.services import organization_create

    key = SigningKey.generate(kid="bench")
    settings.CLERK_JWT_KEY, settings.CLERK_AUTHORIZED_PARTIES = key.public_pem(), ["http://testserver"]
    verifier.cache_clear()
    organization = organization_create(name="Bench Clinic", clerk_org_id="org_bench_auth")

    def view(request):
        # Touch the user, as any page does: the baseline then includes Django's own session and user load.
        return HttpResponse(b"yes" if request.user.is_authenticated else b"no")

    def chain(with_clerk: bool, page=view):
        handler = page
        if with_clerk:
            handler = ClerkOrganizationMiddleware(handler)
        return PublicSchemaMiddleware(SessionMiddleware(AuthenticationMiddleware(handler)))

    factory = RequestFactory()

    def token(lifetime_seconds: int = 60) -> str:
        return mint_session_token(key, user_id="user_bench", organization_id=organization.clerk_org_id,
                                  organization_role="admin", azp="http://testserver", lifetime_seconds=lifetime_seconds)

    def bearer_request(path: str = "/patients/"):
        return lambda: factory.get(path, HTTP_AUTHORIZATION=f"Bearer {token()}")

    # A client sends one token until Clerk refreshes it (about a minute): what the load test does too.
    repeated = token(lifetime_seconds=3600)

    def repeated_bearer_request():
        return factory.get("/patients/", HTTP_AUTHORIZATION=f"Bearer {repeated}")

    # A session opened by a token in Clerk's __session cookie, then requests that carry only the session.
    first = factory.get("/patients/")
    first.COOKIES["__session"] = token()
    response = chain(True)(first)  # also creates the user and the membership, just in time
    cookie = response.cookies[settings.SESSION_COOKIE_NAME].value

    def with_cookie():
        request = factory.get("/patients/")
        request.COOKIES[settings.SESSION_COOKIE_NAME] = cookie
        return request

    results = [("baseline chain (no Clerk middleware)", timed(chain(False), with_cookie, count))]
    for label, handler, make_request in (
        ("fresh Bearer token", chain(True), bearer_request()),
        ("repeated Bearer token", chain(True), repeated_bearer_request),
        ("session cookie only", chain(True), with_cookie),
        ("dashboard page, Bearer token", chain(True, home), bearer_request("/")),
    ):
        for enabled in (False, True):
            settings.CACHE_ENABLED = enabled
            cache.clear()  # the membership's creation left an invalidation hold; the cache starts empty
            results.append((f"{label}, cache {'on' if enabled else 'off'}", timed(handler, make_request, count)))
    # The sign-in path alone (verify, session state, organization, identity), without the chain around it.
    settings.CACHE_ENABLED = True
    middleware, answered = ClerkOrganizationMiddleware(view), HttpResponse()

    def authenticate_only(request):
        middleware.authenticate(request)
        return answered

    results.append(("authenticate() alone, repeated Bearer, cache on",
                    timed(authenticate_only, repeated_bearer_request, count)))
    cache.clear()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--database", default=DATABASE, help="scratch database name (dropped at the end)")
    args = parser.parse_args()
    admin_url = os.environ.get("DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    owner_url = role_url(admin_url, *DEV_ROLES["owner"], args.database)
    app_url = role_url(admin_url, *DEV_ROLES["app"], args.database)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database))
    admin_execute(admin_url, drop)
    env = {**os.environ, "LOG_LEVEL": "WARNING",
           "DJANGO_SECRET_KEY": "bench-only-secret-key-5e1a9c3f7b2d4086-not-for-production",
           "ROUTIQ_ENCRYPTION_KEYS": "YmVuY2gtb25seS1lbmNyeXB0aW9uLWtleS0zMmJ5dGU=",
           "DJANGO_SETTINGS_MODULE": "routiq.settings", "DATABASE_URL": owner_url,
           "CACHE_KEY_PREFIX": "routiq-bench-auth",
           "STATIC_MANIFEST": "0"}  # the dashboard case renders static names as they are: nothing is collected
    manage(env, "setup_database", "--admin-url", admin_url, "--owner-url", owner_url, "--app-url", app_url,
           "--platform-url", role_url(admin_url, *DEV_ROLES["platform"], args.database), "--allow-test-databases")
    manage(env, "migrate_schemas", "--shared")
    os.environ.update(env)
    try:
        results = measure(args.requests)
    finally:
        from django.db import connections

        connections.close_all()
        admin_execute(admin_url, drop)
    baseline, baseline_cpu = (statistics.median(samples) for samples in results[0][1])
    print(f"\n{args.requests} requests each, milliseconds (server time in-process):")
    for label, (wall, cpu) in results:
        median, median_cpu = statistics.median(wall), statistics.median(cpu)
        print(f"  {label:<48} median {median:6.3f}  p95 {percentile(wall, 0.95):6.3f}  "
              f"added {median - baseline:+6.3f}  |  cpu {median_cpu:6.3f}  added {median_cpu - baseline_cpu:+6.3f}")
    print(f"\nCommand: {' '.join(sys.orig_argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
