"""The sign-in middleware's cache (tenants/cache.py, routiq/cache.py) through real HTTP with real signed tokens:
it saves the lookups, and never lets a removed member, an inactive organization or another clinic through."""

from __future__ import annotations

import pickle
import uuid

import pytest
from django.core.cache.backends.redis import RedisCache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.dashboard import dashboard_refresh
from patients.models import Contact
from routiq import cache
from routiq.testing.clerk_fixtures import bearer
from routiq.testing.clerk_fixtures import test_signing_key as signing_key
from routiq.testing.clerk_stub import JWKSServer
from routiq.testing.redis_commands import redis_commands
from tenants import cache as tenant_cache
from tenants import services
from tenants.clerk.authentication import verifier
from tenants.clerk.tokens import ClerkTokenVerifier
from tenants.models import Organization, OrganizationMember, User
from tenants.rls.binding import bind_organization
from tenants.tests.test_clerk_webhooks import SECRET, membership_data, post_event, user_data

pytestmark = pytest.mark.django_db
USER = "user_cache_shared"
IDENTITY_TABLES = ('"organizations"', '"organization_members"', '"users"', '"ended_clerk_sessions"')


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.CLERK_WEBHOOK_SECRET = SECRET


@pytest.fixture
def patients(org_a, org_b):
    with bind_organization(org_a):
        Contact.objects.create(organization=org_a, first_name="Ava", last_name="Quixote")
    with bind_organization(org_b):
        Contact.objects.create(organization=org_b, first_name="Ben", last_name="Zanzibar")


def membership(organization, clerk_user_id: str = USER) -> OrganizationMember:
    with bind_organization(organization):
        return OrganizationMember.objects.select_related("user").get(organization=organization,
                                                                     user__clerk_user_id=clerk_user_id)


def is_cached(organization, clerk_user_id: str = USER) -> bool:
    return cache.get(tenant_cache.identity_key(organization.pk, clerk_user_id)) is not None


def warm_bearer(client, token, organization, path="/patients/"):
    """Cached in Redis (as a process's first request of the organization leaves it) and remembered by this
    process (tenants/clerk/bound_read.py: what its later requests use)."""
    assert client.get(path, **bearer(token)).status_code == 200  # the member is created just in time
    cache.clear()  # ... and the invalidation hold that creation left has passed
    tenant_cache.forget_hints()  # a new process: its first request takes the cache's way ...
    assert client.get(path, **bearer(token)).status_code == 200
    assert is_cached(organization)
    assert client.get(path, **bearer(token)).status_code == 200  # ... and its next the binding's


def warm_session(client, token, organization):
    client.cookies["__session"] = token
    assert client.get("/patients/").status_code == 200  # opens the portal session
    del client.cookies["__session"]
    cache.clear()
    assert client.get("/patients/").status_code == 200  # rides on the session: the identity is cached now
    assert is_cached(organization)


def identity_queries(client, **extra) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/patients/", **extra).status_code == 200
    return [q["sql"] for q in queries if any(table in q["sql"] for table in IDENTITY_TABLES)]


def test_a_warm_cache_answers_the_organization_user_and_membership_lookups(client, mint, org_a, settings):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)

    assert identity_queries(client, **bearer(token)) == []
    settings.CACHE_ENABLED = False
    tenant_cache.forget_hints()  # a process's first request of the organization
    assert len(identity_queries(client, **bearer(token))) == 4  # organization, user, membership, ended session


def test_a_warm_bearer_request_asks_redis_nothing(client, mint, org_a, monkeypatch):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)

    with redis_commands(monkeypatch) as commands:
        assert client.get("/patients/", **bearer(token)).status_code == 200

    # The binding's statement checked the earlier read (tenants/clerk/bound_read.py).
    assert commands == []


def test_a_new_process_asks_redis_twice(client, mint, org_a, monkeypatch):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)
    tenant_cache.forget_hints()  # no Clerk org id seen yet

    with redis_commands(monkeypatch) as commands:
        assert client.get("/patients/", **bearer(token)).status_code == 200

    # The Clerk-org lookup with the session state, then the organization with the member's identity.
    assert commands == ["MGET", "MGET"]


def test_a_wrong_organization_hint_never_serves_that_organization(client, mint, org_a, org_b, patients, monkeypatch):
    token_a = mint(org_a, user_id=USER)
    warm_bearer(client, token_a, org_a)
    warm_bearer(client, mint(org_b, user_id=USER), org_b)
    # A bug that pointed A's Clerk id at B, whose row and identity are cached and remembered:
    wrong = tenant_cache.OrganizationHint(str(org_b.pk), org_b.schema_name)
    monkeypatch.setitem(tenant_cache._organization_hints, org_a.clerk_org_id, wrong)

    page = client.get("/patients/", **bearer(token_a)).content.decode()

    assert "Quixote" in page and "Zanzibar" not in page
    assert tenant_cache.organization_hint(org_a.clerk_org_id).organization_id == str(org_a.pk)  # put right


def test_a_warm_session_answers_the_organization_and_membership_lookups(client, mint, org_a):
    warm_session(client, mint(org_a, user_id=USER), org_a)

    # Django's own session user load is the one left (it checks the session hash against the password).
    assert len(identity_queries(client)) == 1


def test_a_warm_session_asks_redis_once(client, mint, org_a, monkeypatch):
    warm_session(client, mint(org_a, user_id=USER), org_a)

    with redis_commands(monkeypatch) as commands:
        assert client.get("/patients/").status_code == 200

    # The Clerk session's state, the organization and the member's identity together.
    assert commands == ["MGET"]


# --- a Clerk session ended is refused by the very next request -------------------------------------------------

SESSION = "sess_cache_ending"


def end_session_by_webhook(client):
    response = post_event(client, "session.ended", {"id": SESSION, "user_id": USER, "object": "session"})
    assert response.json() == {"status": "processed"}


@pytest.mark.parametrize("path", ["bearer", "cookie"])
def test_a_session_ended_by_webhook_is_refused_at_once_on_a_warm_cache(client, mint, org_a, path):
    token = mint(org_a, user_id=USER, session_id=SESSION)
    if path == "bearer":
        warm_bearer(client, token, org_a)
        credentials = bearer(token)
    else:
        warm_session(client, token, org_a)
        client.cookies["__session"] = token  # Clerk's script sends the token with every request
        credentials = {}
    queries = identity_queries(client, **credentials)
    assert cache.get(tenant_cache.clerk_session_key(SESSION)) is True  # "not ended", cached ...
    assert [query for query in queries if "ended_clerk_sessions" in query] == []  # ... and answered from Redis

    end_session_by_webhook(client)

    response = client.get("/patients/", **credentials)
    assert response.status_code == 401
    assert (response.json() if path == "bearer" else response.context)["reason"] == "session-ended"
    assert cache.get(tenant_cache.clerk_session_key(SESSION)) is None


def test_a_ban_forgets_the_users_sessions_not_ended_answer(client, mint, org_a):
    warm_session(client, mint(org_a, user_id=USER, session_id=SESSION), org_a)
    assert cache.get(tenant_cache.clerk_session_key(SESSION)) is True

    ban_by_webhook(client, org_a)

    assert cache.get(tenant_cache.clerk_session_key(SESSION)) is None


# --- changes are seen by the very next request ----------------------------------------------------------------

def remove_by_webhook(client, organization):
    data = membership_data(organization, USER)
    assert post_event(client, "organizationMembership.deleted", data).status_code == 200


def remove_by_service(client, organization):
    with bind_organization(organization):  # as the admin's and the webhook's callers do
        services.membership_remove(membership=membership(organization), when=services.timezone.now(),
                                   actor_label="test")


def ban_by_webhook(client, organization):
    assert post_event(client, "user.updated", {**user_data(USER), "banned": True}).status_code == 200


def delete_user_by_webhook(client, organization):
    assert post_event(client, "user.deleted", {"id": USER}).status_code == 200


CHANGES = [remove_by_webhook, remove_by_service, ban_by_webhook, delete_user_by_webhook]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__)
def test_a_bearer_token_is_refused_at_once_after_the_change(client, mint, org_a, change):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)

    change(client, org_a)

    response = client.get("/patients/", **bearer(token))
    assert response.status_code == 403
    assert not is_cached(org_a)


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__)
def test_a_portal_session_is_refused_at_once_after_the_change(client, mint, org_a, change):
    warm_session(client, mint(org_a, user_id=USER), org_a)

    change(client, org_a)

    # A ban or a deletion also ends the portal session (sign-in again: 302); a removal refuses it (403).
    assert client.get("/patients/").status_code in (302, 403)
    assert client.get("/patients/").status_code == 302  # and it stays ended


def test_a_demotion_by_webhook_takes_the_admin_pages_away_at_once(client, mint, org_a):
    token = mint(org_a, user_id=USER, role="admin")
    warm_bearer(client, token, org_a, path="/settings/integrations/")

    data = membership_data(org_a, USER, role="org:member")
    assert post_event(client, "organizationMembership.updated", data).status_code == 200

    assert client.get("/settings/integrations/", **bearer(token)).status_code == 403
    assert client.get("/patients/", **bearer(token)).status_code == 200


@pytest.mark.parametrize("path", ["bearer", "session"])
def test_an_organization_deactivated_is_refused_at_once(client, mint, org_a, path):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a) if path == "bearer" else warm_session(client, token, org_a)
    assert cache.get(tenant_cache.organization_key(org_a.pk)) is not None

    assert post_event(client, "organization.deleted", {"id": org_a.clerk_org_id}).status_code == 200

    response = client.get("/patients/", **(bearer(token) if path == "bearer" else {}))
    assert response.status_code == 403


def test_a_rename_is_shown_at_once(client, mint, org_a):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)

    services.organization_rename(organization=org_a, name="Harbour Physio & Pilates", actor_label="test")

    assert "Harbour Physio &amp; Pilates" in client.get("/patients/", **bearer(token)).content.decode()


# --- one organization's cache never answers for another -------------------------------------------------------

def test_the_same_clerk_user_warmed_in_a_gets_b_data_in_b(client, mint, org_a, org_b, patients):
    token_a, token_b = mint(org_a, user_id=USER), mint(org_b, user_id=USER, role="member")
    warm_bearer(client, token_a, org_a)

    page_b = client.get("/patients/", **bearer(token_b)).content.decode()
    page_a = client.get("/patients/", **bearer(token_a)).content.decode()

    assert "Zanzibar" in page_b and "Quixote" not in page_b
    assert "Quixote" in page_a and "Zanzibar" not in page_a
    cache.clear()
    tenant_cache.forget_hints()
    client.get("/patients/", **bearer(token_b))
    client.get("/patients/", **bearer(token_a))
    cached_b = tenant_cache.identity_get(org_b, USER)
    assert cached_b.membership.organization_id == org_b.pk and cached_b.membership.role == "member"
    assert tenant_cache.identity_get(org_a, USER).membership.role == "admin"


def test_a_value_under_another_organizations_key_is_never_served(client, mint, org_a, org_b):
    token_b = mint(org_b, user_id=USER)
    warm_bearer(client, mint(org_a, user_id=USER), org_a)
    entry_a = cache.get(tenant_cache.identity_key(org_a.pk, USER))
    # A bug that stored A's identity under B's key (the cache stores the owner with every value):
    from django.core.cache import caches

    caches["default"].set(tenant_cache.identity_key(org_b.pk, USER), {"owner": str(org_a.pk), "value": entry_a})

    response = client.get("/patients/", **bearer(token_b))
    assert response.status_code == 200
    assert membership(org_b).organization_id == org_b.pk  # B's own membership was read (and created)


@pytest.fixture
def written(monkeypatch):
    """Every (key, value) the cache writes during the test, as routiq.cache names them."""
    writes: list[tuple[str, object]] = []
    for name in ("add", "set"):
        original = getattr(RedisCache, name)

        def spy(self, key, value, *args, _original=original, **kwargs):
            writes.append((key, value))
            return _original(self, key, value, *args, **kwargs)

        monkeypatch.setattr(RedisCache, name, spy)
    original_many = RedisCache.set_many

    def spy_many(self, data, *args, **kwargs):
        writes.extend(data.items())
        return original_many(self, data, *args, **kwargs)

    monkeypatch.setattr(RedisCache, "set_many", spy_many)
    return writes


def test_every_key_written_names_exactly_one_organization_and_holds_only_its_data(
    client, mint, org_a, org_b, patients, settings, written
):
    key = signing_key()
    with JWKSServer([key]) as jwks:
        settings.CLERK_JWT_KEY, settings.CLERK_JWKS_URL = "", jwks.url
        verifier.cache_clear()
        for organization in (org_a, org_b):
            with bind_organization(organization):
                dashboard_refresh(organization=organization)
        cache.clear()
        for organization in (org_a, org_b):
            token = mint(organization, user_id=USER)
            for path in ("/patients/", "/", "/patients/", "/"):
                assert client.get(path, **bearer(token)).status_code == 200
                cache.clear() if path == "/patients/" else None  # let the just-in-time member's hold pass
            client.cookies["__session"] = token
            assert client.get("/").status_code == 200
            del client.cookies["__session"]
            assert client.get("/").status_code == 200
        assert post_event(client, "organizationMembership.updated",
                          membership_data(org_b, USER, role="org:member")).status_code == 200
        verifier.cache_clear()

    organizations = {str(org_a.pk): org_a, str(org_b.pk): org_b}
    identifiers = {str(o.pk) for o in organizations.values()} | {o.clerk_org_id for o in organizations.values()}
    kinds = set()
    for key, entry in written:
        assert key.startswith(("org:", "lookup:", "public:")), key
        blob = pickle.dumps(entry)
        assert b"Zanzibar" not in blob and b"Quixote" not in blob, key  # no patient in any value
        assert b"webhook_token" not in blob and b"password" not in blob, key
        named = {identifier for identifier in identifiers if identifier in key}
        if key.startswith(cache.public_key("clerk-session")):  # the allow-list of public values: this and JWKS
            # "not ended" (or its tombstone), nothing else
            assert named == set() and entry in ({"owner": "public", "value": True},
                                                {"owner": "public", "forgotten": True}), key
            kinds.add("session")
            continue
        if key.startswith("public:"):
            assert key.startswith(cache.public_key("clerk-jwks")) and named == set(), key
            assert entry["owner"] == "public" and all("d" not in jwk for jwk in entry["value"]["keys"])
            kinds.add("jwks")
            continue
        owner = entry["owner"]
        assert owner in organizations, key
        organization = organizations[owner]
        assert named in ({str(organization.pk)}, {organization.clerk_org_id}), key  # exactly one organization
        if key.startswith("lookup:"):
            assert key == tenant_cache.clerk_organization_key(organization.clerk_org_id)
            assert entry["value"] == owner
            kinds.add("lookup")
        elif entry.get("forgotten"):
            kinds.add("tombstone")
        elif key == tenant_cache.organization_key(owner):
            assert entry["value"]["id"] == organization.pk
            kinds.add("organization")
        elif key == tenant_cache.identity_key(owner, USER):
            assert entry["value"]["membership"]["organization_id"] == organization.pk
            assert entry["value"]["user"]["clerk_user_id"] == USER
            kinds.add("identity")
        else:
            assert key.startswith(cache.org_key(owner, "dashboard")), key
            kinds.add("dashboard")
    assert kinds == {"jwks", "session", "lookup", "tombstone", "organization", "identity", "dashboard"}


# --- Redis down -------------------------------------------------------------------------------------------------

def test_with_redis_down_requests_are_answered_from_the_database(
    client, mint, org_a, org_b, patients, cache_unreachable
):
    token_a, token_b = mint(org_a, user_id=USER), mint(org_b, user_id=USER)

    page_a = client.get("/patients/", **bearer(token_a))
    page_b = client.get("/patients/", **bearer(token_b))
    dashboard = client.get("/", **bearer(token_a))
    cache.reset_outage()  # not skipping Redis: every call meets the closed port
    client.cookies["__session"] = token_a
    opened = client.get("/")
    del client.cookies["__session"]
    resumed = client.get("/patients/")

    assert (page_a.status_code, page_b.status_code, dashboard.status_code) == (200, 200, 200)
    assert "Quixote" in page_a.content.decode() and "Zanzibar" in page_b.content.decode()
    assert (opened.status_code, resumed.status_code) == (200, 200)
    remove_by_webhook(client, org_a)
    assert client.get("/patients/").status_code == 403
    assert client.get("/patients/", **bearer(token_a)).status_code == 403


# --- JWKS, shared between processes ------------------------------------------------------------------------------

def test_a_second_process_takes_the_jwks_from_the_cache_not_from_clerk():
    key = signing_key()
    with JWKSServer([key]) as jwks:
        first, second = (ClerkTokenVerifier(jwks_url=jwks.url, authorized_parties=[],
                                            jwks_store=tenant_cache.SharedJwks(jwks.url)) for _ in range(2))
        from tenants.clerk.dev_tokens import mint_session_token

        token = mint_session_token(key, user_id=USER, organization_id=None)
        assert first.verify(token).user_id == USER
        assert second.verify(token).user_id == USER

        assert (jwks.fetch_count, first.jwks_fetch_count, second.jwks_fetch_count) == (1, 1, 0)


def test_with_redis_down_each_process_fetches_the_jwks_itself(cache_unreachable):
    key = signing_key()
    with JWKSServer([key]) as jwks:
        from tenants.clerk.dev_tokens import mint_session_token

        token = mint_session_token(key, user_id=USER, organization_id=None)
        for _ in range(2):
            cache.reset_outage()
            fresh = ClerkTokenVerifier(jwks_url=jwks.url, authorized_parties=[],
                                       jwks_store=tenant_cache.SharedJwks(jwks.url))
            assert fresh.verify(token).user_id == USER
        assert jwks.fetch_count == 2


def test_keys_refuse_a_missing_organization():
    with pytest.raises(ValueError):
        cache.org_key(None, "identity")
    with pytest.raises(ValueError):
        cache.org_key("org_test_harbour", "identity")  # a Clerk id is not an organization id
    organization_id = uuid.uuid4()
    assert cache.org_key(organization_id, "x") == f"org:{organization_id}:{cache.KEY_SHAPE}:x"


def test_user_forget_refuses_to_run_bound(org_a):
    user = User.objects.create(username="u_forget", clerk_user_id="user_forget")
    with bind_organization(org_a), pytest.raises(RuntimeError):
        tenant_cache.user_forget(user)


# --- the platform admin's edits -----------------------------------------------------------------------------------

@pytest.fixture
def staff_client(db):
    from django.test import Client

    staff = User.objects.create_user(username="platform-admin", password="correct horse battery staple",
                                     is_staff=True, is_superuser=True)
    admin_client = Client()
    admin_client.force_login(staff)
    return admin_client


def test_a_membership_removed_in_the_admin_is_refused_at_once(client, mint, org_a, staff_client):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)

    response = staff_client.post(f"/admin/tenants/organizationmember/{membership(org_a).pk}/change/",
                                 {"role": "admin", "status": "removed"})

    assert response.status_code == 302
    assert client.get("/patients/", **bearer(token)).status_code == 403


def test_a_user_deactivated_in_the_admin_is_refused_at_once(client, mint, org_a, staff_client):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)
    user = User.objects.get(clerk_user_id=USER)

    response = staff_client.post(f"/admin/tenants/user/{user.pk}/change/", {
        "username": user.username, "first_name": "", "last_name": "", "email": "", "is_staff": "",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"), "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    })  # is_active left out: unchecked

    assert response.status_code == 302, response.content.decode()[:2000]
    assert client.get("/patients/", **bearer(token)).status_code == 403


def test_an_organization_deactivated_in_the_admin_change_form_is_refused_at_once(client, mint, org_a, staff_client):
    token = mint(org_a, user_id=USER)
    warm_bearer(client, token, org_a)

    response = staff_client.post(f"/admin/tenants/organization/{org_a.pk}/change/", {
        "name": org_a.name, "slug": org_a.slug, "country": org_a.country, "time_zone": org_a.time_zone,
        "message_retention_months": "", "domains-TOTAL_FORMS": "0", "domains-INITIAL_FORMS": "0",
    })  # is_active left out: unchecked

    assert response.status_code == 302, response.content.decode()[:2000]
    assert client.get("/patients/", **bearer(token)).status_code == 403


@pytest.mark.parametrize("model", [Organization, User, OrganizationMember])
def test_a_cached_row_is_rebuilt_as_from_db_builds_it_and_its_secret_loads_on_use(org_a, model):
    with bind_organization(org_a):
        user = User.objects.create_user(username="rebuilt", password="correct horse battery staple")
        member = services.membership_upsert(organization=org_a, user=user, role="member", clerk_role="org:member",
                                            actor=None, actor_label="test")
    row = {Organization: org_a, User: user, OrganizationMember: member}[model]
    values = tenant_cache._values(model, row)
    names = [name for name in tenant_cache.row_fields(model) if name in values]

    rebuilt = tenant_cache.model_instance(model, values)
    loaded = model.from_db("default", names, [values[name] for name in names])

    assert {k: v for k, v in vars(rebuilt).items() if k != "_state"} == {
        k: v for k, v in vars(loaded).items() if k != "_state"}
    assert (rebuilt._state.adding, rebuilt._state.db) == (False, "default")
    assert rebuilt.get_deferred_fields() == loaded.get_deferred_fields() == tenant_cache.NOT_CACHED[model]
    if model is User:
        with bind_organization(org_a):
            assert rebuilt.check_password("correct horse battery staple")  # the deferred hash, loaded on use
