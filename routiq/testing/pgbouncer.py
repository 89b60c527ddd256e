"""A real PgBouncer in front of the test's PostgreSQL, for the tests of pooling (and the load test).

``start_pgbouncer(server, pool_mode=…)`` writes a pgbouncer.ini and a userlist into a scratch directory, runs
/usr/sbin/pgbouncer on a free port against the server of ``server`` (a Django DATABASES entry) and waits
until it accepts connections. Every database name is passed through (``* = host=… port=…``); clients are
trusted (the server does its own authentication: the userlist carries the server role's password). The
admin console admits ``stats_user``, as the app role is admitted in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from routiq.testing.processes import free_port, stop, wait_for_port

PGBOUNCER = "/usr/sbin/pgbouncer"


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    pool_mode: str
    stats_user: str
    directory: Path

    def settings_dict(self, server: dict) -> dict:
        """``server`` (a DATABASES entry) as reached through this PgBouncer."""
        return {**server, "HOST": self.host, "PORT": str(self.port)}

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.stats_user}@{self.host}:{self.port}/pgbouncer"

    def log(self) -> str:
        return (self.directory / "pgbouncer.log").read_text(errors="replace")


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@contextlib.contextmanager
def start_pgbouncer(server: dict, *, pool_mode: str, stats_user: str, pool_size: int = 4,
                    logins: dict[str, str] | None = None, database_options: str = "",
                    extra: dict | None = None) -> Iterator[PgBouncer]:
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.skip(f"{PGBOUNCER} is not installed (apt-get install pgbouncer; .ci/run does)")
    # PgBouncer will not run as root; as root it drops to nobody, who must read the files and write the log.
    directory = Path(tempfile.mkdtemp(prefix="routiq-pgbouncer-"))
    directory.chmod(0o777)
    port = free_port()
    server_host = server.get("HOST") or "127.0.0.1"
    server_port = server.get("PORT") or "5432"
    logins = {stats_user: "", **(logins or {}), server["USER"]: server.get("PASSWORD") or ""}
    (directory / "userlist.txt").write_text("".join(f"{_quoted(u)} {_quoted(p)}\n" for u, p in logins.items()))
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": directory / "userlist.txt",
        "stats_users": stats_user,
        "pool_mode": pool_mode,
        "default_pool_size": pool_size,
        "max_client_conn": 200,
        "server_lifetime": 3600,
        "server_idle_timeout": 600,
        "logfile": directory / "pgbouncer.log",
        "pidfile": directory / "pgbouncer.pid",
        **(extra or {}),
    }
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n* = host={server_host} port={server_port} {database_options}\n\n[pgbouncer]\n"
        + "".join(f"{key} = {value}\n" for key, value in settings.items())
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    command = [PGBOUNCER, *(["-u", "nobody"] if os.geteuid() == 0 else []), str(ini)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # it logs to logfile
    bouncer = PgBouncer(host="127.0.0.1", port=port, pool_mode=pool_mode, stats_user=stats_user,
                        directory=directory)
    try:
        wait_for_port(port, process, seconds=10, describe=lambda: f"pgbouncer: {bouncer.log()[-2000:]}")
        yield bouncer
    finally:
        stop(process)
        shutil.rmtree(directory, ignore_errors=True)
