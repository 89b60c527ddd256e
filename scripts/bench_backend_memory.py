#!/usr/bin/env python
"""Memory of a PostgreSQL backend that serves many organizations, with and without bounds on its life.

    .venv/bin/python scripts/bench_backend_memory.py [--organizations 1000] [--rounds 2] [--conn-max-age 10]
        [--max-schemas 200] [--keep] [--skip-seed]

A backend keeps the catalog entries (relation, index, policy, trigger caches) of every schema it has touched
until it ends; a persistent connection that wanders over all clinics grows with them. This measures it:

1. A scratch database (`routiq_bench_memory`, as scripts/bench_patients.py makes one) with N organizations.
   They are created by organization_create, which clones the template schema (tenants/provisioning.py,
   about 0.3 s each). --keep keeps them for the next run.
2. A second process runs requests through the app (Django's handler, the Clerk middleware with signed tokens,
   the binding; one user per organization) for every organization in turn, --rounds times, on one persistent
   connection as the app role (logged in as the admin role and SET ROLE to the app role, so that the backend
   can read its own pg_backend_memory_contexts). After each request it does what the WSGI handler does at a
   request's end (close_old_connections), and every 50 requests (or N/10) it samples that backend: the sum
   of its memory contexts, and RSS and PSS from /proc/<pid> (needs the server on this machine; RSS includes
   the shared buffers it has touched, PSS shares them out).
3. Three configurations: unbounded (CONN_MAX_AGE=None, no schema limit); CONN_MAX_AGE=--conn-max-age seconds;
   DATABASE_MAX_SCHEMAS_PER_CONNECTION=--max-schemas. Printed: per configuration the backends used, the
   steady-state (last round) median and peak memory per backend, and the schemas a backend touched.

Target: < 50 MB per backend. It prints numbers; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bench_patients import ScratchDatabase, parse_scratch_arguments, with_database
from dev import ROOT

DATABASE = "routiq_bench_memory"
CLERK_PREFIX = "org_mem_"
SAMPLE_EVERY = 50
TARGET_MB = 50.0
MB = 1024 * 1024
# --- owner process: organizations ------------------------------------------------------------------------

def ensure_organizations(scratch: ScratchDatabase, count: int) -> None:
    """``count`` organizations named org_mem_NNNN, created as the portal creates them (cloned from the template
    schema: tenants/provisioning.py); a kept database's are reused."""
    from tenants.models import Organization
    from tenants.services import organization_create

    existing = set(Organization.objects.filter(clerk_org_id__startswith=CLERK_PREFIX)
                   .values_list("clerk_org_id", flat=True))
    missing = [index for index in range(count) if f"{CLERK_PREFIX}{index:04d}" not in existing]
    if not missing:
        print(f"reusing {count:,} organizations in {scratch.name}")
        return
    started = time.perf_counter()
    for done, index in enumerate(missing, 1):
        organization_create(name=f"Memory Clinic {index}", clerk_org_id=f"{CLERK_PREFIX}{index:04d}")
        if done % 100 == 0 or done == len(missing):
            rate = (time.perf_counter() - started) / done
            print(f"  {done:,}/{len(missing):,} organizations created, {rate:.2f} s each", flush=True)


# --- app-role process: requests and samples --------------------------------------------------------------

def backend_memory(pid: int, connection) -> dict:
    """This connection's backend: memory contexts (from inside it), RSS and PSS (from /proc, as the OS sees it)."""
    with connection.connection.cursor() as cursor:  # the raw connection: nothing of the binding is sent
        cursor.execute("RESET ROLE")
        cursor.execute("SELECT sum(total_bytes) FROM pg_backend_memory_contexts")
        (contexts,) = cursor.fetchone()
        cursor.execute(f'SET ROLE "{os.environ["DATABASE_APP_ROLE"]}"')
    sample = {"contexts_mb": int(contexts) / MB, "rss_mb": None, "pss_mb": None}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        sample["rss_mb"] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        sample["pss_mb"] = int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:"))) / 1024
    except (OSError, StopIteration):
        pass  # a server on another machine, or no permission: the memory contexts still tell
    return sample


def run_configuration(label: str, organizations, tokens, rounds: int, *, conn_max_age, max_schemas: int) -> dict:
    from django.conf import settings
    from django.db import close_old_connections, connection
    from django.test import Client

    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = conn_max_age
    settings.DATABASE_MAX_SCHEMAS_PER_CONNECTION = max_schemas
    client, samples, backends = Client(), [], set()
    every = max(1, min(SAMPLE_EVERY, len(organizations) // 10))
    started = time.perf_counter()
    for round_ in range(rounds):
        for n, organization in enumerate(organizations):
            response = client.get("/patients/", HTTP_HX_REQUEST="true", HTTP_AUTHORIZATION=f"Bearer {tokens[n]}")
            if response.status_code != 200:
                sys.exit(f"{organization.clerk_org_id}: /patients/ answered {response.status_code}")
            if n % every == every - 1 and connection.connection is not None:
                pid = connection.connection.info.backend_pid
                backends.add(pid)
                samples.append({"round": round_, "pid": pid, "schemas": len(connection._schemas_touched),  # type: ignore[attr-defined]  # our backend's
                                **backend_memory(pid, connection)})
            close_old_connections()  # what Django's handler does at the end of every request
            if connection.connection is not None:
                backends.add(connection.connection.info.backend_pid)
    seconds = time.perf_counter() - started
    steady = [s for s in samples if s["round"] == rounds - 1] or samples
    result: dict[str, Any] = {"label": label, "requests": rounds * len(organizations), "seconds": seconds,
              "backends": len(backends), "samples": len(samples)}
    for key in ("contexts_mb", "rss_mb", "pss_mb"):
        values = [s[key] for s in steady if s[key] is not None]
        result[key] = (statistics.median(values), max(values)) if values else None
    result["schemas"] = max(s["schemas"] for s in steady) if steady else 0
    memory = result["contexts_mb"]
    print(f"  {label}: {result['requests']:,} requests in {seconds:.0f} s, {len(backends)} backends"
          + (f", memory contexts median/peak {memory[0]:.1f}/{memory[1]:.1f} MB" if memory else ""), flush=True)
    return result


def measure(args) -> int:
    sys.path.insert(0, str(ROOT))
    import django
    from django.db.backends.signals import connection_created

    def as_app_role(sender, connection, **kwargs):
        with connection.connection.cursor() as cursor:
            cursor.execute(f'SET ROLE "{os.environ["DATABASE_APP_ROLE"]}"')

    connection_created.connect(as_app_role)
    django.setup()
    from django.conf import settings

    from tenants.clerk.authentication import verifier
    from tenants.clerk.dev_tokens import SigningKey, mint_session_token
    from tenants.models import Organization

    key = SigningKey.generate(kid="bench-memory")
    settings.CLERK_JWT_KEY, settings.CLERK_JWKS_URL = key.public_pem(), ""
    settings.CLERK_AUTHORIZED_PARTIES = ["http://testserver"]
    settings.ALLOWED_HOSTS = ["testserver"]
    verifier.cache_clear()
    organizations = list(Organization.objects.filter(clerk_org_id__startswith=CLERK_PREFIX).order_by("clerk_org_id"))
    lifetime = 3600 * 3
    tokens = [mint_session_token(key, user_id=f"user_mem_{o.clerk_org_id}", organization_id=o.clerk_org_id,
                                 organization_role="member", azp="http://testserver", lifetime_seconds=lifetime)
              for o in organizations]
    print(f"{len(organizations):,} organizations; first pass creates each one's user (just in time)", flush=True)
    run_configuration("warm-up", organizations, tokens, 1, conn_max_age=0, max_schemas=0)
    results = [
        run_configuration("unbounded", organizations, tokens, args.rounds, conn_max_age=None, max_schemas=0),
        run_configuration(f"CONN_MAX_AGE={args.conn_max_age}s", organizations, tokens, args.rounds,
                          conn_max_age=args.conn_max_age, max_schemas=0),
        run_configuration(f"max {args.max_schemas} schemas", organizations, tokens, args.rounds,
                          conn_max_age=None, max_schemas=args.max_schemas),
    ]
    Path(args.results).write_text(json.dumps(results))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organizations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="Passes over all organizations per configuration.")
    parser.add_argument("--conn-max-age", type=int, default=10, help="The lifetime-bounded configuration's seconds.")
    parser.add_argument("--max-schemas", type=int, default=200, help="The schema-bounded configuration's limit.")
    args, keep = parse_scratch_arguments(parser, DATABASE)
    if args.measure_only:
        return measure(args)

    scratch = ScratchDatabase.prepare(args, keep=keep)
    from django.db import connections

    if not args.skip_seed:
        ensure_organizations(scratch, args.organizations)
    connections.close_all()

    app_role = unquote(urlsplit(scratch.app_url).username or "")
    measuring = with_database(scratch.admin_url, scratch.name)  # SET ROLE to the app role right after login
    with tempfile.NamedTemporaryFile(suffix=".json") as results_file:
        command = [sys.executable, __file__, "--measure-only", "--rounds", str(args.rounds),
                   "--conn-max-age", str(args.conn_max_age), "--max-schemas", str(args.max_schemas),
                   "--results", results_file.name]
        env = {**scratch.env, "DATABASE_URL": measuring, "DATABASE_APP_ROLE": app_role, "LOG_LEVEL": "WARNING"}
        if subprocess.run(command, env=env, cwd=ROOT).returncode:
            sys.exit("the measurement phase failed")
        results = json.loads(Path(results_file.name).read_text())
    if not keep:
        scratch.drop()

    def pair(value) -> str:
        return "n/a" if value is None else f"{value[0]:.1f} / {value[1]:.1f}"

    print(f"\n{'configuration':22} {'backends':>8} {'schemas':>8} {'contexts MB':>14} {'RSS MB':>14} {'PSS MB':>14}")
    print(f"{'':22} {'':8} {'per be.':>8} {'median / peak':>14} {'median / peak':>14} {'median / peak':>14}")
    for r in results:
        print(f"{r['label']:22} {r['backends']:8d} {r['schemas']:8d} {pair(r['contexts_mb']):>14} "
              f"{pair(r['rss_mb']):>14} {pair(r['pss_mb']):>14}")
    bounded = [r for r in results if r["label"] != "unbounded"]
    verdicts = ", ".join(f"{r['label']} peak {r['contexts_mb'][1]:.1f} MB "
                         f"{'PASS' if r['contexts_mb'][1] < TARGET_MB else 'FAIL'}" for r in bounded)
    print(f"\nCommand: {shlex.join(sys.orig_argv)}")
    print(f"Summary: {args.organizations:,} organizations; unbounded peak "
          f"{results[0]['contexts_mb'][1]:.1f} MB per backend; {verdicts} (target < {TARGET_MB:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
