import pytest

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_redis_and_migrations(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True, "role": "routiq_app", "rls_enforced": True}
    assert body["redis"] == {"ok": True}
    assert body["migrations"] == {"ok": True, "pending": []}


def test_healthz_is_503_when_redis_is_unreachable(client, settings):
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0", "DEFAULT_TIMEOUT": 5}}

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["redis"]["ok"] is False
    assert response.json()["status"] == "unavailable"


def test_portal_pages_carry_a_strict_content_security_policy(client):
    response = client.get("/sign-in/")

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
