#!/usr/bin/env python
"""Load test: the signed-in patient list under gunicorn, against the same page with nothing around it.

    .venv/bin/python scripts/loadtest.py [--organizations 10] [--contacts 2000] [--users 10]
        [--connections 16] [--duration 10] [--rounds 3] [--workers N] [--through-pgbouncer] [--keep]

1. A scratch database (`routiq_loadtest`, as scripts/bench_patients.py makes one): N organizations created as
   the owner, each seeded with contacts and appointments by bench_patients' seeding.
2. gunicorn with the repository's gunicorn.conf.py and production settings (DEBUG off, the app role, a Clerk
   key of the script's own), and ROUTIQ_LOADTEST_BARE_VIEW=1: /loadtest/bare-patients/ is the same view,
   query and template on one schema as the owner, with no sign-in, binding or RLS identity per request.
3. wrk (16 connections, 2 threads) against each: the portal's /patients/ with a Lua script rotating signed
   Bearer tokens of --users users in every organization, and the bare view, alternating for --rounds rounds
   of --duration seconds (the machine's other load then falls on both alike). Every answer must be a 200.
   With --through-pgbouncer the app's connections, and the bare view's, go through a PgBouncer in session
   pooling (and gunicorn's start-up check verifies its mode from the admin console).

Prints requests/s, p50/p95/p99 and errors side by side. Targets: the portal at >= 90% of the bare view's
requests/s and p99 < 100 ms. The load generator shares the machine with gunicorn and PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bench_patients import ScratchDatabase, add_scratch_arguments, refresh_and_analyze, seed_rows
from dev import DEV_ROLES, ROOT, role_url

sys.path.insert(0, str(ROOT))
from routiq.testing.processes import free_port, stop, wait_for_port  # noqa: E402

DATABASE = "routiq_loadtest"
CLERK_PREFIX = "org_loadtest_"
AUTHORIZED_PARTY = "http://127.0.0.1"
TARGET_RATIO = 0.90
TARGET_P99_MS = 100.0
WRK_SCRIPT = """
local tokens = {%(tokens)s}
local index = 0
bad = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  index = math.random(#tokens)
end

function request()
  index = index %% #tokens + 1
  local headers = {["HX-Request"] = "true"}
  if #tokens[index] > 0 then headers["Authorization"] = "Bearer " .. tokens[index] end
  return wrk.format("GET", "%(path)s", headers)
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + thread:get("bad") end
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "seconds": %%f, "p50": %%f, "p95": %%f, "p99": %%f, ' ..
    '"non_200": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, failed, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


def prepare_organizations(args) -> list[tuple[str, str, str]]:
    """(id, clerk id, schema) of the N organizations, created and seeded as the owner (reused when kept)."""
    from django.db import connection

    from tenants.models import Organization
    from tenants.rls.binding import bind_organization
    from tenants.services import organization_create

    organizations = []
    for index in range(args.organizations):
        clerk_id = f"{CLERK_PREFIX}{index:03d}"
        organization = Organization.objects.filter(clerk_org_id=clerk_id).first() or organization_create(
            name=f"Load Test Clinic {index}", clerk_org_id=clerk_id)
        with bind_organization(organization), connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM contacts")
            if cursor.fetchone()[0] != args.contacts:
                cursor.execute("TRUNCATE contacts, appointments, active_patients, contact_search_terms CASCADE")
                seed_rows(cursor, organization, contacts=args.contacts, appointments=args.contacts * 5, quiet=True)
                refresh_and_analyze(cursor, organization, quiet=True)
        organizations.append((str(organization.pk), clerk_id, organization.schema_name))
    print(f"{len(organizations)} organizations with {args.contacts:,} contacts and {args.contacts * 5:,} "
          "appointments each", flush=True)
    return organizations


def mint_tokens(key, organizations, users: int, lifetime: int) -> list[str]:
    from tenants.clerk.dev_tokens import mint_session_token

    return [mint_session_token(key, user_id=f"user_loadtest_{clerk_id}_{n}", organization_id=clerk_id,
                               organization_role="member", azp=AUTHORIZED_PARTY, lifetime_seconds=lifetime)
            for _, clerk_id, _ in organizations for n in range(users)]


@contextlib.contextmanager
def pgbouncer_for(owner_url: str, app_url: str, platform_url: str):
    import dj_database_url

    from routiq.testing.pgbouncer import PGBOUNCER, start_pgbouncer

    if not os.access(PGBOUNCER, os.X_OK):
        sys.exit(f"--through-pgbouncer needs {PGBOUNCER} (apt-get install pgbouncer)")
    logins = {unquote(urlsplit(url).username or ""): unquote(urlsplit(url).password or "")
              for url in (app_url, platform_url)}
    app_role = unquote(urlsplit(app_url).username or "")
    with start_pgbouncer(dict(dj_database_url.parse(owner_url)), pool_mode="session", stats_user=app_role,
                         pool_size=20, logins=logins) as bouncer:
        yield bouncer


def through(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0]
    return parts._replace(netloc=f"{credentials}@{host}:{port}").geturl()


@contextlib.contextmanager
def gunicorn(env: dict[str, str], port: int, workers: int | None):
    command = [sys.executable, "-m", "gunicorn", "routiq.wsgi", "-c", str(ROOT / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", *(["--workers", str(workers)] if workers else [])]
    log = tempfile.NamedTemporaryFile(prefix="routiq-loadtest-gunicorn-", suffix=".log", delete=False)
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        try:
            wait_for_port(port, server, seconds=60, describe=lambda: Path(log.name).read_text()[-4000:])
        except RuntimeError as exc:
            sys.exit(f"gunicorn did not start: {exc}")
        yield log.name
    finally:
        stop(server, timeout=30, group=True)  # the master and its workers
        log.close()


CPU_GROUPS = {"app": "gunicorn", "postgres": "postgres", "redis": "redis-server"}


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) used so far by each group's processes on this machine, from /proc: where a
    request's cost goes. A process that ended between two readings is missed (workers restart rarely)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys(CPU_GROUPS, 0.0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = next((name for name, marker in CPU_GROUPS.items() if marker in command and "pgbouncer" not in command),
                     None)
        if group:
            totals[group] += (int(fields[11]) + int(fields[12])) / ticks
    return totals


def wrk(url: str, path: str, tokens: list[str], *, connections: int, duration: int) -> dict:
    lua = WRK_SCRIPT % {"tokens": ", ".join(json.dumps(t) for t in tokens), "path": path}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()
        command = ["wrk", "--threads", str(min(2, connections)), "--connections", str(connections),
                   "--duration", f"{duration}s", "--timeout", "10s", "--script", script.name, url]
        before = cpu_seconds()
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        after = cpu_seconds()
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    result["cpu"] = {group: max(after[group] - before[group], 0.0) for group in CPU_GROUPS}
    return result


def combined(runs: list[dict]) -> dict:
    """Rounds of one endpoint as one: requests/s over all of them, the median round's percentiles."""
    result = {key: statistics.median(run[key] for run in runs) for key in ("p50", "p95", "p99")}
    result["rps"] = sum(run["requests"] for run in runs) / sum(run["seconds"] for run in runs)
    result["non_200"] = sum(run["non_200"] for run in runs)
    result["socket_errors"] = sum(run["socket_errors"] for run in runs)
    requests = sum(run["requests"] for run in runs)
    result["cpu_ms"] = {group: 1000 * sum(run["cpu"][group] for run in runs) / requests for group in CPU_GROUPS}
    return result


def preflight(base: str, path: str, tokens: list[str]) -> None:
    """Every token once (users and memberships are created just in time on a first request) and the bare
    view once; any answer but 200 stops the run."""
    import urllib.request

    for token in tokens or [""]:
        headers = {"HX-Request": "true", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(base + path, headers=headers)  # noqa: S310 - our own local server
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own local server
            if response.status != 200 or b"<table>" not in response.read():
                sys.exit(f"{path} answered {response.status} without a patient table")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organizations", type=int, default=10)
    parser.add_argument("--contacts", type=int, default=2000, help="Contacts per organization.")
    parser.add_argument("--users", type=int, default=10, help="Signed-in users per organization.")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10, help="Seconds of each wrk run.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating runs of each endpoint.")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's 2 x cores + 1).")
    parser.add_argument("--through-pgbouncer", action="store_true", help="The app's connections via PgBouncer.")
    add_scratch_arguments(parser, DATABASE)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")

    scratch = ScratchDatabase.prepare(args, keep=args.keep)
    from django.db import connections

    from tenants.clerk.dev_tokens import SigningKey

    organizations = prepare_organizations(args)
    connections.close_all()
    key = SigningKey.generate(kid="loadtest")
    tokens = mint_tokens(key, organizations, args.users, lifetime=args.duration * args.rounds * 2 + 600)
    owner_url = scratch.env["DATABASE_URL"]
    platform_url = role_url(scratch.admin_url, *DEV_ROLES["platform"], args.database)
    port = free_port()
    bare_id, _, bare_schema = organizations[0]
    env = {**scratch.env, "DEBUG": "0", "DATABASE_URL": scratch.app_url, "DATABASE_PLATFORM_URL": platform_url,
           "STATIC_MANIFEST": "0", "ALLOWED_HOSTS": "127.0.0.1", "CLERK_JWT_KEY": key.public_pem(),
           "CLERK_JWKS_URL": "", "CLERK_AUTHORIZED_PARTIES": AUTHORIZED_PARTY, "GUNICORN_ACCESS_LOG": "/dev/null",
           "ROUTIQ_LOADTEST_BARE_VIEW": "1", "ROUTIQ_LOADTEST_BARE_DATABASE_URL": owner_url,
           "ROUTIQ_LOADTEST_BARE_SCHEMA": bare_schema, "ROUTIQ_LOADTEST_BARE_ORGANIZATION": bare_id}
    with contextlib.ExitStack() as stack:
        if args.through_pgbouncer:
            bouncer = stack.enter_context(pgbouncer_for(owner_url, scratch.app_url, platform_url))
            env |= {"DATABASE_URL": through(scratch.app_url, bouncer.host, bouncer.port),
                    "DATABASE_PLATFORM_URL": through(platform_url, bouncer.host, bouncer.port),
                    # Like for like: the bare view's connection takes the same hop.
                    "ROUTIQ_LOADTEST_BARE_DATABASE_URL": through(owner_url, bouncer.host, bouncer.port),
                    "DATABASE_POOLER": "pgbouncer-session", "DATABASE_PGBOUNCER_ADMIN_URL": bouncer.admin_url}
        stack.enter_context(gunicorn(env, port, args.workers))
        base = f"http://127.0.0.1:{port}"
        preflight(base, "/patients/", tokens)
        preflight(base, "/loadtest/bare-patients/", [])
        endpoints = {"bare view": ("/loadtest/bare-patients/", [""]), "portal": ("/patients/", tokens)}
        for path, rotated in endpoints.values():
            wrk(base, path, rotated, connections=args.connections, duration=3)  # warm-up
        # Alternated in rounds: the machine's other load changes from minute to minute, and both sides
        # should meet the same share of it.
        runs: dict[str, list[dict]] = {name: [] for name in endpoints}
        for _ in range(args.rounds):
            for name, (path, rotated) in endpoints.items():
                runs[name].append(wrk(base, path, rotated, connections=args.connections, duration=args.duration))
        results = {name: combined(rounds) for name, rounds in runs.items()}
    if not args.keep:
        scratch.drop()

    print(f"\n{'':10} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'non-200':>8} {'socket err':>10}"
          f"   CPU ms per request: {' / '.join(CPU_GROUPS)}")
    for name, r in results.items():
        cpu = " / ".join(f"{r['cpu_ms'][group]:.2f}" for group in CPU_GROUPS)
        print(f"{name:10} {r['rps']:9.1f} {r['p50']:8.1f} {r['p95']:8.1f} {r['p99']:8.1f} {r['non_200']:8d} "
              f"{r['socket_errors']:10d}   {cpu}")
    portal, bare = results["portal"], results["bare view"]
    ratio = portal["rps"] / bare["rps"]
    errors = sum(r["non_200"] + r["socket_errors"] for r in results.values())
    verdict = "PASS" if ratio >= TARGET_RATIO and portal["p99"] < TARGET_P99_MS and not errors else "FAIL"
    print(f"\nCommand: {shlex.join(sys.orig_argv)}")
    print(f"Summary: portal {portal['rps']:.0f} req/s = {ratio:.0%} of the bare view's {bare['rps']:.0f} "
          f"(target >= {TARGET_RATIO:.0%}), p99 {portal['p99']:.1f} ms (target < {TARGET_P99_MS:.0f} ms), "
          f"{errors} errors, {len(tokens)} tokens over {len(organizations)} organizations, "
          f"{'through PgBouncer (session)' if args.through_pgbouncer else 'direct'}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
