"""The start-up check that admits PgBouncer in session pooling only, against real PgBouncers.

It must read the pool mode PgBouncer applies to the app's own connection (global, per database or per user),
refuse transaction and statement pooling, and refuse an admin URL that is not the app's PgBouncer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from routiq.testing.pgbouncer import start_pgbouncer
from tenants.rls.pooler import check_database_pooler, pooler_messages

ROOT = Path(__file__).resolve().parents[2]


def bouncer(pool_mode: str, **options):
    return start_pgbouncer(connection.settings_dict, pool_mode=pool_mode, stats_user=settings.DATABASE_APP_ROLE,
                           **options)


def message_ids(bouncer_, *, admin_url: str | None = None) -> list[str]:
    messages = pooler_messages(pooler="pgbouncer-session", admin_url=admin_url or bouncer_.admin_url,
                               databases={"default": bouncer_.settings_dict(connection.settings_dict)})
    return [str(message.id) for message in messages]


@pytest.mark.django_db
def test_session_pooling_is_accepted():
    with bouncer("session") as session:
        assert message_ids(session) == []


@pytest.mark.django_db
@pytest.mark.parametrize("pool_mode", ["transaction", "statement"])
def test_transaction_and_statement_pooling_are_refused(pool_mode):
    with bouncer(pool_mode) as pooled:
        assert message_ids(pooled) == ["routiq.E104"]


@pytest.mark.django_db
def test_the_mode_of_the_apps_own_pool_counts_not_the_global_one():
    with bouncer("session", database_options="pool_mode=transaction") as per_database:
        assert message_ids(per_database) == ["routiq.E104"]
    with bouncer("transaction", database_options="pool_mode=session") as overridden:
        assert message_ids(overridden) == []


@pytest.mark.django_db
def test_an_admin_console_of_another_pgbouncer_is_refused():
    with bouncer("transaction") as used, bouncer("session") as other:
        assert message_ids(used, admin_url=other.admin_url) == ["routiq.E103"]


@pytest.mark.django_db
def test_unbounded_server_lifetime_and_no_reset_query_are_warned_about():
    with bouncer("session", extra={"server_lifetime": 0, "server_reset_query": ""}) as unbounded:
        assert message_ids(unbounded) == ["routiq.W101", "routiq.W102"]


def test_no_admin_url_and_unknown_poolers_are_refused(settings):
    settings.DATABASE_POOLER = "pgbouncer-session"
    settings.DATABASE_PGBOUNCER_ADMIN_URL = ""
    assert [message.id for message in check_database_pooler(None)] == ["routiq.E102"]
    settings.DATABASE_POOLER = "pgbouncer-transaction"
    assert [message.id for message in check_database_pooler(None)] == ["routiq.E101"]
    settings.DATABASE_POOLER = "none"
    assert check_database_pooler(None) == []


@pytest.mark.django_db
@pytest.mark.parametrize(("pool_mode", "refused"), [("transaction", True), ("session", False)])
def test_manage_py_check_refuses_to_start_behind_transaction_pooling(pool_mode, refused):
    """What gunicorn's on_starting and every manage.py command run (gunicorn.conf.py)."""
    server = connection.settings_dict
    with bouncer(pool_mode) as pooled:
        url = (f"postgresql://{quote(server['USER'])}:{quote(server.get('PASSWORD') or '')}"
               f"@{pooled.host}:{pooled.port}/{server['NAME']}")
        environment = {key: value for key, value in os.environ.items() if key != "DATABASE_PLATFORM_URL"}
        environment |= {"DATABASE_URL": url, "DATABASE_POOLER": "pgbouncer-session",
                        "DATABASE_PGBOUNCER_ADMIN_URL": pooled.admin_url}
        done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environment,
                              capture_output=True, text=True, timeout=120)
    assert (done.returncode != 0) is refused, done.stderr
    assert ("routiq.E104" in done.stderr) is refused
