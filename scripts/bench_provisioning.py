#!/usr/bin/env python
"""Benchmark provisioning and migrating at scale (issue 12): 1,000 organizations by default.

    .venv/bin/python scripts/bench_provisioning.py [--organizations 1000] [--single 5] [--workers N] [--keep]

Prints, in its own scratch database `routiq_bench_provisioning` (dropped and recreated at the start, dropped at
the end unless --keep; the dev roles from `manage.py setup_database`):

* organization_create of one organization (cloned from the template schema that migrate_organizations built
  first, as a deploy does), mean over --single creations in one process, the first's dump of it included;
* `create_demo_organizations --count N` (one schema migrated, the rest cloned, in parallel);
* `migrate_organizations` with nothing to do over the N (+ --single) organizations;
* `migrate_organizations` with one new tenant migration (an AddField on patients.Contact), then again with
  nothing to do. The migration lives in a temporary directory, never in the repository
  (scripts/bench_tenancy.py's new_migration_env).

Times are wall seconds of the whole command, Django's start-up included. Targets: one organization < 1 s,
1,000 < 5 min, the new migration over 1,000 < 2 min, nothing to do < 10 s (2 cores).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from bench_tenancy import (  # scripts/ is sys.path[0] when run as a script
    admin_execute,
    create_organizations,
    manage,
    new_migration_env,
    scratch_environment,
)
from psycopg import sql

DATABASE = "routiq_bench_provisioning"
TARGETS = {"bulk": 300.0, "migrate": 120.0, "noop": 10.0, "single": 1.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organizations", type=int, default=1000, help="Created by the bulk path.")
    parser.add_argument("--single", type=int, default=5, help="Created one at a time by migrations (the mean).")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database at the end.")
    args = parser.parse_args()

    admin_url = os.environ.get("DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
    admin_execute(admin_url, drop)
    env = {**scratch_environment(admin_url, DATABASE), "MIGRATION_WORKERS": str(args.workers)}
    manage(env, "migrate_schemas", "--shared")
    # As a deploy does: migrate_organizations (no organization yet) builds the template schema they are cloned from.
    results_setup = manage(env, "migrate_organizations")
    total = args.organizations + args.single
    results: list[tuple[str, float, float | None]] = [
        ("migrate_organizations, no organizations (builds the template)", results_setup, None)]

    os.environ.update(env)
    durations = create_organizations(args.single)
    print(f"organization_create x{len(durations)}: " + ", ".join(f"{seconds:.2f}" for seconds in durations))
    results.append((f"create 1 organization (mean of {len(durations)}, organization_create)",
                    statistics.mean(durations), TARGETS["single"]))
    results.append((f"create {args.organizations} organizations (create_demo_organizations)",
                    manage(env, "create_demo_organizations", "--count", str(args.organizations)), TARGETS["bulk"]))
    results.append((f"migrate_organizations, nothing to do, {total} schemas",
                    manage(env, "migrate_organizations"), TARGETS["noop"]))
    with tempfile.TemporaryDirectory(prefix="bench_provisioning_") as workdir:
        new_env, _leaf = new_migration_env(env, Path(workdir))
        results.append((f"migrate_organizations, one new tenant migration, {total} schemas",
                        manage(new_env, "migrate_organizations"), TARGETS["migrate"]))
        results.append((f"migrate_organizations again, nothing to do, {total} schemas",
                        manage(new_env, "migrate_organizations"), TARGETS["noop"]))

    if not args.keep:
        admin_execute(admin_url, drop)
    print(f"\nSummary ({args.organizations} + {args.single} organizations, {args.workers} workers, "
          f"database {DATABASE}; target at 1,000 on 2 cores):")
    width = max(len(label) for label, _, _ in results)
    for label, seconds, target in results:
        print(f"  {label:<{width}}  {seconds:8.2f} s" + (f"   (target {target:g} s)" if target else ""))
    print(f"\nCommand: {shlex.join(sys.orig_argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
