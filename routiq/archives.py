"""Archive files: a table's rows as a gzip'd COPY stream with a JSON manifest beside it.

Shared by message retention (messaging/retention.py) and audit-log archival (tenants/audit_archive.py). A file
is written under a temporary name, flushed to disk and renamed, and its manifest records the row count and the
SHA-256 of the file, so the caller can delete rows from the database only once their file is complete, and a
restore can refuse a file that was altered. Files and directories are private to the service's user (0600/0700).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql


class ArchiveError(RuntimeError):
    """An archive could not be written or restored (nothing was removed from the database)."""


@dataclass(frozen=True)
class Archive:
    """One month of a table in a file: what an archival run returns."""

    month: datetime.date
    rows: int
    data: Path
    manifest: Path


def private_directory(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_out_to_file(cursor, query: sql.Composable, data: Path) -> int:
    """COPY ``query``'s rows TO STDOUT into ``data`` (gzip), durably; returns the number of rows.

    ``cursor`` is a Django cursor; its psycopg cursor does the COPY, inside the caller's transaction."""
    partial = data.with_name(f".{data.name}.partial")
    rows = 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        with cursor.cursor.copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as copy:
            for chunk in copy:
                out.write(chunk)
                rows += bytes(chunk).count(b"\n")
        out.close()
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, data)
    return rows


def write_manifest(path: Path, manifest: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(manifest, indent=2))
        handle.flush()
        os.fsync(handle.fileno())


def read_manifest(path: Path, *, format: str, columns: tuple[str, ...]) -> tuple[dict, Path]:
    """The manifest and its data file, checked: the format and columns this version writes, the file's SHA-256."""
    manifest = json.loads(Path(path).read_text())
    if manifest.get("format") != format or tuple(manifest.get("columns", ())) != columns:
        raise ArchiveError(f"{path} is not an archive of the kind ({format}) this version can restore")
    data = Path(path).with_name(manifest["data"])
    if sha256(data) != manifest["sha256"]:
        raise ArchiveError(f"{data} does not match its manifest (SHA-256)")
    return manifest, data


def copy_in_from_file(cursor, table: sql.Composable, columns: tuple[str, ...], data: Path) -> None:
    """COPY a file written by ``copy_out_to_file`` into ``table`` (a temporary table: COPY FROM refuses a table
    under row level security, so rows go on from there by INSERT, checked by the target's policy)."""
    names = sql.SQL(", ").join(sql.Identifier(column) for column in columns)
    with gzip.open(data, "rb") as source, cursor.cursor.copy(
        sql.SQL("COPY {} ({}) FROM STDIN").format(table, names)
    ) as copy:
        for block in iter(lambda: source.read(1 << 20), b""):
            copy.write(block)
