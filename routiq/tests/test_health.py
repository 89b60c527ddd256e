import pytest

pytestmark = pytest.mark.django_db


HEALTHZ_TOKEN = "monitoring-token-5b1f0c"


@pytest.fixture
def health_token(settings):
    settings.HEALTHZ_TOKEN = HEALTHZ_TOKEN
    return {"HTTP_X_HEALTHZ_TOKEN": HEALTHZ_TOKEN}


def test_healthz_tells_anonymous_callers_the_status_only(client, health_token):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_shows_no_details_for_a_wrong_token_or_when_no_token_is_configured(client, settings):
    settings.HEALTHZ_TOKEN = HEALTHZ_TOKEN
    assert client.get("/healthz", HTTP_X_HEALTHZ_TOKEN="guess").json() == {"status": "ok"}
    settings.HEALTHZ_TOKEN = ""
    assert client.get("/healthz", HTTP_X_HEALTHZ_TOKEN="").json() == {"status": "ok"}


def test_healthz_shows_details_to_staff(client):
    from tenants.models import User

    client.force_login(User.objects.create_user(username="on-call", password="x" * 16, is_staff=True))

    assert client.get("/healthz").json()["database"]["role"] == "routiq_app"


def test_healthz_shows_no_details_to_a_signed_in_non_staff_user(client):
    from tenants.models import User

    client.force_login(User.objects.create_user(username="not-staff", password="x" * 16))

    assert client.get("/healthz").json() == {"status": "ok"}


def test_healthz_reports_database_redis_and_migrations(client, health_token):
    response = client.get("/healthz", **health_token)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True, "role": "routiq_app", "rls_enforced": True}
    assert body["redis"] == {"ok": True}
    assert body["migrations"] == {"ok": True, "pending": []}


def test_healthz_is_503_when_redis_is_unreachable(client, settings, health_token):
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0", "DEFAULT_TIMEOUT": 5}}

    response = client.get("/healthz", **health_token)
    anonymous = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["redis"] == {"ok": False, "error": "ConnectionError"}
    assert response.json()["status"] == "unavailable"
    assert anonymous.status_code == 503 and anonymous.json() == {"status": "unavailable"}


def test_healthz_is_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200  # a load balancer probes over plain HTTP
    assert client.get("/sign-in/").status_code == 301


def test_portal_pages_carry_a_strict_content_security_policy(client):
    response = client.get("/sign-in/")

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
