"""scripts/devservices.py as root: a checkout inside a private folder (like /root, mode 700) still gets its
embedded PostgreSQL, whose account (postgres or nobody) cannot enter that folder."""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_devservices():
    spec = importlib.util.spec_from_file_location("devservices", ROOT / "scripts" / "devservices.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another account only when started by root")
def test_a_data_dir_inside_a_private_folder_keeps_postgres_data_where_its_account_can_reach_it(
        monkeypatch, capfd):
    devservices = load_devservices()
    private = Path(tempfile.mkdtemp(prefix="routiq-private-"))  # mode 700, like /root
    data_dir = (private / "checkout" / ".devdata").resolve()
    outside = devservices._outside_home(data_dir)
    monkeypatch.delenv("DATABASE_ADMIN_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://unused")  # only PostgreSQL is started here
    try:
        with devservices.ensure_services(data_dir) as services:
            with psycopg.connect(services["DATABASE_ADMIN_URL"]) as connection:
                assert connection.execute("SELECT current_user").fetchone() == ("postgres",)
            assert str(outside / "pg") in services["DATABASE_ADMIN_URL"]
            assert outside.stat().st_uid == 0 and (outside / "pg").stat().st_uid != 0

        assert f"PostgreSQL's data lives in {outside}/" in capfd.readouterr().err
        assert not (outside / "pg" / "postmaster.pid").exists()  # stopped with the context
        assert not (data_dir / "pg").exists()
    finally:
        devservices._stop_postgres(data_dir)
        shutil.rmtree(outside, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
