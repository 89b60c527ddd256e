"""Message full-text search (messaging/search.py, the schema's message_search function), as the app role."""

from __future__ import annotations

import datetime

import pytest
from django.db import ProgrammingError, connection, transaction
from psycopg import sql

from messaging.models import Conversation, Message
from messaging.search import message_search, search_config_for, snippet_html
from patients.models import Contact
from tenants.rls.binding import NoOrganizationBound, bind_organization

pytestmark = pytest.mark.django_db
BASE = datetime.datetime(2026, 11, 20, 9, 0, tzinfo=datetime.UTC)
SEQUENCE = iter(range(1, 10**6))


def thread(organization, contact=None) -> Conversation:
    return Conversation.objects.create(organization=organization, provider="chatwoot",
                                       external_id=f"c{next(SEQUENCE)}", contact=contact)


def say(organization, conversation, content: str, minutes: int = 0, **fields) -> Message:
    return Message.objects.create(
        organization=organization, conversation=conversation, provider="chatwoot",
        external_id=f"m{next(SEQUENCE)}", direction="inbound", content=content,
        sent_at=BASE + datetime.timedelta(minutes=minutes), **fields)


def search_function_rows(schema: str, text: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT message_id FROM {}(%s, NULL, NULL, 50)").format(
            sql.Identifier(schema, "message_search")), [text])
        return cursor.fetchall()


def test_finds_matches_newest_first_with_english_stemming(org_a):
    with bind_organization(org_a):
        conversation = thread(org_a)
        older = say(org_a, conversation, "I booked a massage for Tuesday", minutes=1)
        newer = say(org_a, conversation, "Can I change my booking to Friday?", minutes=5)
        say(org_a, conversation, "Thanks, see you then", minutes=9)
        hits = message_search(organization=org_a, query="bookings")  # AU: 'english' stems book/booked/booking

        assert [hit.message_id for hit in hits] == [newer.pk, older.pk]
        assert hits[0].conversation_id == conversation.pk
        assert hits[0].sent_at == newer.sent_at
        assert "<mark>booking</mark>" in hits[0].snippet_html
        assert [hit.message_id for hit in message_search(organization=org_a, query="bookings", limit=1)] == [newer.pk]
        assert message_search(organization=org_a, query="   ") == []
        assert message_search(organization=org_a, query="the") == []  # stop words only: no query at all
        assert message_search(organization=org_a, query='"change my booking" -tuesday')[0].message_id == newer.pk


def test_snippets_escape_everything_but_the_marks(org_a):
    with bind_organization(org_a):
        conversation = thread(org_a)
        say(org_a, conversation,
            'invoice <script>alert("x")</script> 3 < 5 & "q" <mark>fake</mark> \ue000forged\ue001 end')
        (hit,) = message_search(organization=org_a, query="invoice")

    html = str(hit.snippet_html)
    assert html.startswith("<mark>invoice</mark>")
    assert "<script" not in html and "<mark>fake" not in html  # tags are text at most, never markup
    assert "3 &lt; 5 &amp; &quot;q&quot;" in html
    assert "<mark>forged</mark>" not in html and "forged" in html  # the marker characters were stripped
    assert html.count("<mark>") == html.count("</mark>") == 1


def test_snippet_html_unit():
    assert snippet_html('a <b> \ue000x\ue001 "q"') == 'a &lt;b&gt; <mark>x</mark> &quot;q&quot;'


def test_search_within_a_conversation_and_within_a_contacts_conversations(org_a):
    with bind_organization(org_a):
        patient = Contact.objects.create(organization=org_a, first_name="Ava", last_name="Smith",
                                         cliniko_patient_id=next(SEQUENCE))
        mine, other, third = thread(org_a, patient), thread(org_a), thread(org_a, patient)
        in_mine = say(org_a, mine, "knee pain again", minutes=1)
        say(org_a, other, "knee pain too", minutes=2)
        in_third = say(org_a, third, "knee feels better", minutes=3)

        assert [h.message_id for h in message_search(organization=org_a, query="knee", conversation_id=mine.pk)] == [
            in_mine.pk]
        by_contact = message_search(organization=org_a, query="knee", contact_id=patient.pk)
        assert [hit.message_id for hit in by_contact] == [in_third.pk, in_mine.pk]
        assert len(message_search(organization=org_a, query="knee")) == 3


def test_edits_and_deletes_keep_the_index_in_step(org_a):
    with bind_organization(org_a):
        message = say(org_a, thread(org_a), "physiotherapy tomorrow")
        Message.objects.filter(pk=message.pk).update(content="chiropractic tomorrow")
        assert message_search(organization=org_a, query="physiotherapy") == []
        assert [h.message_id for h in message_search(organization=org_a, query="chiropractic")] == [message.pk]
        Message.objects.filter(pk=message.pk).delete()
        assert message_search(organization=org_a, query="chiropractic") == []


def test_nothing_from_another_organization_whatever_the_search_path(org_a, org_b):
    with bind_organization(org_b):
        say(org_b, thread(org_b), "confidential diagnosis")
        assert len(message_search(organization=org_b, query="diagnosis")) == 1
    with bind_organization(org_a):
        assert message_search(organization=org_a, query="diagnosis") == []
        # B's function called with A bound: it reads the binding itself and refuses.
        assert search_function_rows(org_b.schema_name, "diagnosis") == []
        # The bug the second wall exists for: B's schema on the search_path with A's identity.
        connection.set_tenant(org_b)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM message_search('diagnosis', NULL, NULL, 50)")
            assert cursor.fetchone()[0] == 0
        # And passing B as the organization while A is bound is refused before any SQL.
        with pytest.raises(NoOrganizationBound):
            message_search(organization=org_b, query="diagnosis")


def test_nothing_when_no_organization_is_bound(org_a):
    with bind_organization(org_a):
        say(org_a, thread(org_a), "unbound appointment question")
        assert len(message_search(organization=org_a, query="question")) == 1
    assert search_function_rows(org_a.schema_name, "question") == []
    with pytest.raises(NoOrganizationBound):
        message_search(organization=org_a, query="question")


def test_the_app_role_cannot_read_or_write_the_search_documents_directly(org_a):
    with bind_organization(org_a):
        say(org_a, thread(org_a), "direct read attempt")
        for statement in ("SELECT count(*) FROM message_search_documents",
                          "INSERT INTO message_search_documents VALUES (1, now(), gen_random_uuid(), 'x')"):
            with pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(statement)


def test_documents_have_no_policy_so_even_granted_roles_see_nothing(org_a):
    """setup_database re-grants table privileges on whole schemas: RLS without a policy still hides the rows."""
    with bind_organization(org_a):
        say(org_a, thread(org_a), "granted by mistake")
    with connection.cursor() as cursor:
        cursor.execute("SELECT relrowsecurity, relforcerowsecurity, "
                       "(SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) "
                       "FROM pg_class c WHERE oid = %s::regclass",
                       [f'"{org_a.schema_name}".message_search_documents'])
        assert cursor.fetchone() == (True, False, 0)


def test_search_config_follows_the_country():
    assert [search_config_for(country) for country in ("AU", "nz", "GB", "US", "CA", "IE")] == ["english"] * 6
    assert search_config_for("DE") == "simple" and search_config_for("") == "simple"


def test_a_match_older_than_the_newest_documents_probe_is_still_found(org_a):
    """Over the whole inbox the function first tries the newest documents (a common word fills the page from
    them), then the GIN index: an old, rare match beyond that window is found, and common words stay newest first."""
    with bind_organization(org_a):
        old_thread, busy = thread(org_a), thread(org_a)
        needle = say(org_a, old_thread, "orthotics fitting", minutes=-10_000)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO messages (created_at, updated_at, provider, external_id, direction, content, content_type,"
                " sent_at, conversation_id, organization_id, attachments, private, sender_name) "
                "SELECT now(), now(), 'chatwoot', 'filler' || g, 'inbound', 'routine reminder ' || g, 'text', "
                "%s + g * interval '1 second', %s, %s, '[]', false, '' FROM generate_series(1, 20050) g",
                [BASE, busy.pk, org_a.pk])
        assert [hit.message_id for hit in message_search(organization=org_a, query="orthotics")] == [needle.pk]
        newest = message_search(organization=org_a, query="reminder", limit=3)
        assert [hit.sent_at for hit in newest] == [BASE + datetime.timedelta(seconds=n) for n in (20050, 20049, 20048)]
        assert message_search(organization=org_a, query="orthotics", contact_id=None, conversation_id=busy.pk) == []
