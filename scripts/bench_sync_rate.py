#!/usr/bin/env python
"""Benchmark the Cliniko sync's use of the vendor's rate limit: many organizations, several RQ workers.

    .venv/bin/python scripts/bench_sync_rate.py [--organizations 50] [--workers 4] [--patients 3000]
        [--rate 200] [--shared-key-organizations 8] [--database routiq_bench_sync] [--keep]

1. A scratch database (bench_patients' ScratchDatabase) with --organizations organizations, created as the
   owner (the seconds per organization are printed), each with a Cliniko credential of its own key, and
   --shared-key-organizations more that all use one key (one Cliniko account synced as several clinics).
2. One stand-in Cliniko (routiq/testing/cliniko_stub.py) that speaks Cliniko's protocol and enforces --rate
   requests per minute per key (429 beyond it), seeded with --patients patients every key sees.
3. --workers real `manage.py rqworker sync` processes as the app role. Phase "own keys": a patients sync of
   every organization with its own key. Phase "one shared key": a sync of every organization on the shared
   key at once, so all workers draw on one budget (the token bucket in Redis, routiq/ratelimit.py).
4. Prints, per phase: requests, 429s received, and the share of the allowed rate used. A key's share is its
   steady rate (requests after its opening burst, over the time they took) over --rate; the phase's figure
   is the median over its keys (own keys) or the shared key's (shared). Targets: share >= 90 %, 0 429s.

A measurement, not a test (patients/tests/test_bench_sync_smoke.py runs it tiny).
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict

from bench_patients import ScratchDatabase, add_scratch_arguments  # scripts/ is sys.path[0] as a script
from dev import DEV_ROLES, ROOT, role_url

DATABASE = "routiq_bench_sync"
TARGET_SHARE = 0.90
SHARED_KEY = "bench-shared-key"


def create_organizations(args):
    from tenants.models import Organization
    from tenants.services import organization_create

    organizations, seconds = [], []
    for index in range(args.organizations + args.shared_key_organizations):
        clerk_id = f"org_bench_sync_{index:04d}"
        organization = Organization.objects.filter(clerk_org_id=clerk_id).first()
        if organization is None:
            started = time.perf_counter()
            organization = organization_create(name=f"Bench Sync Clinic {index}", clerk_org_id=clerk_id)
            seconds.append(time.perf_counter() - started)
        organizations.append(organization)
    if seconds:
        print(f"created {len(seconds)} organizations: mean {statistics.mean(seconds):.2f} s each", flush=True)
    return organizations[:args.organizations], organizations[args.organizations:]


def reset_organization(organization, *, key: str, base_url: str) -> None:
    """The credential for ``key`` at the stand-in, and no patients or checkpoints from an earlier run."""
    from django.db import connection

    from tenants.credentials import credential_set
    from tenants.models import SyncCheckpoint
    from tenants.rls.binding import bind_organization

    with bind_organization(organization):
        credential_set(organization=organization, provider="cliniko", secret=key, base_url=base_url)
        SyncCheckpoint.objects.filter(provider="cliniko").delete()
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE contacts, appointments, active_patients, contact_search_terms CASCADE")


def start_workers(scratch: ScratchDatabase, count: int) -> list[subprocess.Popen]:
    env = {**scratch.env, "DATABASE_URL": scratch.app_url, "VENDOR_ALLOW_PRIVATE_NETWORKS": "1",
           "DATABASE_PLATFORM_URL": role_url(scratch.admin_url, *DEV_ROLES["platform"], scratch.name)}
    return [subprocess.Popen([sys.executable, "manage.py", "rqworker", "sync", "--worker-ttl", "60"], env=env,
                             cwd=ROOT) for _ in range(count)]


def run_phase(organizations, stub, *, timeout: float) -> tuple[list, float]:
    """Enqueue a patients sync of each organization; wait for all; return the stand-in's requests of the phase."""
    from rq.job import JobStatus

    from patients.jobs import enqueue_cliniko_sync

    stub.reset_log()
    started = time.monotonic()
    jobs = [job for job in (enqueue_cliniko_sync(organization, "patients") for organization in organizations) if job]
    if len(jobs) != len(organizations):
        sys.exit("a sync was already queued: is another worker or benchmark using this Redis database?")
    while True:
        statuses = [job.get_status(refresh=True) for job in jobs]
        if all(status in (JobStatus.FINISHED, JobStatus.FAILED) for status in statuses):
            break
        if time.monotonic() - started > timeout:
            sys.exit(f"the syncs did not finish within {timeout:.0f} s: {statuses}")
        time.sleep(0.5)
    failed = sum(status == JobStatus.FAILED for status in statuses)
    if failed:
        sys.exit(f"{failed} syncs failed (see the workers' output)")
    return list(stub.requests), time.monotonic() - started


def key_of(request) -> str:
    credentials = request.headers.get("Authorization", "").removeprefix("Basic ")
    return base64.b64decode(credentials).decode().partition(":")[0]


def steady_share(times: list[float], *, rate: int, burst: int) -> float | None:
    """Requests after the opening burst, per minute of the time they took, over the allowed rate."""
    times = sorted(times)
    if len(times) <= burst + 1:
        return None
    after_burst = times[burst:]
    return (len(after_burst) - 1) / (after_burst[-1] - after_burst[0]) * 60 / rate


def report(name: str, requests: list, seconds: float, *, rate: int, rejected: int) -> float:
    times = defaultdict(list)
    for request in requests:
        times[key_of(request)].append(request.at)
    burst = max(1, rate // 20)  # the client's opening burst (patients/clients/cliniko.py ClinikoClient.for_key)
    shares = [share for share in (steady_share(t, rate=rate, burst=burst) for t in times.values()) if share]
    share = statistics.median(shares) if shares else 0.0
    print(f"  {name:<16} {len(requests):>6} requests over {len(times):>3} keys in {seconds:6.1f} s; "
          f"429s received: {rejected}; share of the allowed rate used: median {share:.1%}"
          + (f" (min {min(shares):.1%}, max {max(shares):.1%})" if len(shares) > 1 else ""), flush=True)
    return share


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organizations", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=200, help="The stand-in's limit per key per minute.")
    parser.add_argument("--shared-key-organizations", type=int, default=8)
    add_scratch_arguments(parser, DATABASE)
    args = parser.parse_args()

    os.environ["CLINIKO_RATE_LIMIT_PER_MINUTE"] = str(args.rate)  # the client paces itself by the vendor's limit
    scratch = ScratchDatabase.prepare(args, keep=args.keep)
    from routiq.testing.cliniko_stub import ClinikoStub
    from routiq.testing.processes import stop

    own, shared = create_organizations(args)
    keys = [f"bench-key-{index:04d}" for index in range(len(own))]
    workers: list[subprocess.Popen] = []
    with ClinikoStub(api_keys=[*keys, SHARED_KEY], rate_limit_per_minute=args.rate) as stub:
        stub.seed(patients=args.patients, appointments_per_patient=0, seed=7)
        for organization, key in zip(own, keys, strict=True):
            reset_organization(organization, key=key, base_url=stub.base_url)
        for organization in shared:
            reset_organization(organization, key=SHARED_KEY, base_url=stub.base_url)
        try:
            workers = start_workers(scratch, args.workers)
            pages = -(-args.patients // 100) + 1
            print(f"\n{args.workers} workers; {args.patients:,} patients ({pages} requests a sync); "
                  f"{args.rate} requests/min per key", flush=True)
            shares = {}
            for name, organizations in (("own keys", own), ("one shared key", shared)):
                if not organizations:
                    continue
                rejected_before = stub.rate_limited
                requests, seconds = run_phase(organizations, stub, timeout=600 + 2 * len(organizations) * pages)
                shares[name] = report(name, requests, seconds, rate=args.rate,
                                      rejected=stub.rate_limited - rejected_before)
        finally:
            for worker in workers:
                stop(worker, timeout=30)
    if not args.keep:
        from django.db import connections

        connections.close_all()
        scratch.drop()
    verdict = "PASS" if all(share >= TARGET_SHARE for share in shares.values()) and not stub.rate_limited else "FAIL"
    print(f"\nCommand: {shlex.join(sys.orig_argv)}")
    print(f"Summary: {args.organizations} + {args.shared_key_organizations} organizations, {args.workers} workers, "
          f"{args.rate}/min per key: " + ", ".join(f"{name} {share:.1%}" for name, share in shares.items())
          + f" of the allowed rate, {stub.rate_limited} 429s: {verdict} (>= {TARGET_SHARE:.0%}, 0 429s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
