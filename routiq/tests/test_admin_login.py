"""Admin password sign-in lockout (routiq/admin_login.py) against the real Redis of the test run."""

import uuid

import django_rq
import pytest
import redis
from django.conf import settings as django_settings

from routiq import admin_login
from tenants.models import User

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"
LOCKED_MESSAGE = b"Too many failed sign-in attempts for this user name from your address"


@pytest.fixture(autouse=True)
def fast_hasher(settings):
    # Dozens of sign-ins per test: the production PBKDF2 cost would make this module take a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_user(fast_hasher):
    user = User.objects.create_user(username=f"admin-{uuid.uuid4().hex[:8]}", password=PASSWORD, is_staff=True)
    yield user
    # REDIS_URL, not the RQ connection: a test may have pointed RQ_QUEUES at a dead server.
    connection = redis.Redis.from_url(django_settings.REDIS_URL)
    for ip in ("127.0.0.1", "203.0.113.9"):
        connection.delete(admin_login._key(username=user.username, ip=ip))
    connection.close()


def sign_in(client, username, password, ip="127.0.0.1"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=ip)


def fail(client, username, times, ip="127.0.0.1"):
    for _ in range(times):
        response = sign_in(client, username, "wrong password", ip)
        assert response.status_code == 200 and LOCKED_MESSAGE not in response.content


def test_nine_failures_do_not_stop_the_right_password(client, admin_user):
    fail(client, admin_user.username, 9)

    response = sign_in(client, admin_user.username, PASSWORD)

    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_the_tenth_failure_locks_the_user_name_out_with_a_message_even_for_the_right_password(client, admin_user):
    fail(client, admin_user.username, 10)

    response = sign_in(client, admin_user.username, PASSWORD)

    assert response.status_code == 429
    assert LOCKED_MESSAGE in response.content and b"Try again in 15 minutes" in response.content
    assert "_auth_user_id" not in client.session


def test_a_lockout_is_per_address_and_user_name(client, admin_user):
    other = User.objects.create_user(username=f"admin-{uuid.uuid4().hex[:8]}", password=PASSWORD, is_staff=True)
    fail(client, admin_user.username, 10)

    assert sign_in(client, admin_user.username, PASSWORD, ip="203.0.113.9").status_code == 302
    client.logout()
    assert sign_in(client, other.username, PASSWORD).status_code == 302


def test_the_lockout_lasts_the_window_from_the_first_failure(client, admin_user, settings):
    fail(client, admin_user.username, 10)
    key = admin_login._key(username=admin_user.username, ip="127.0.0.1")

    assert 0 < django_rq.get_connection("default").ttl(key) <= settings.ADMIN_LOGIN_WINDOW_SECONDS
    django_rq.get_connection("default").delete(key)  # the window has passed
    assert sign_in(client, admin_user.username, PASSWORD).status_code == 302


def test_a_successful_sign_in_clears_the_failures(client, admin_user):
    fail(client, admin_user.username, 9)
    assert sign_in(client, admin_user.username, PASSWORD).status_code == 302
    client.logout()

    fail(client, admin_user.username, 9)  # would have locked without the reset

    assert sign_in(client, admin_user.username, PASSWORD).status_code == 302


def test_user_name_case_does_not_reset_the_count(client, admin_user):
    fail(client, admin_user.username, 5)
    fail(client, admin_user.username.upper(), 5)

    assert sign_in(client, admin_user.username, PASSWORD).status_code == 429


def test_an_unreachable_redis_lets_the_right_password_in(client, admin_user, settings):
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0", "DEFAULT_TIMEOUT": 5}}

    assert sign_in(client, admin_user.username, "wrong password").status_code == 200
    assert sign_in(client, admin_user.username, PASSWORD).status_code == 302
