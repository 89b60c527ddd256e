"""Matching messaging contacts to patients, as the app role with RLS forced."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from messaging.matching import ExternalIdentity, LinkConflict, contact_link, contact_unlink, contacts_for_identities
from messaging.models import Conversation, Message
from patients.models import Contact, ContactLinkDecision, ContactMatchCandidate
from tenants.models import AuditLog, User
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
CLINIKO_IDS = itertools.count(1000)


@pytest.fixture
def admin_a(org_a):
    return User.objects.create(username="matching-admin", clerk_user_id="user_matching_admin")


def patient(organization, first, last, *, phone="", e164=None, email=""):
    with bind_organization(organization):
        return Contact.objects.create(organization=organization, first_name=first, last_name=last, phone_raw=phone,
                                      phone_e164=e164, email=email, cliniko_patient_id=next(CLINIKO_IDS))


def match(organization, *identities):
    with bind_organization(organization):
        return contacts_for_identities(organization=organization, identities=identities)


def chatwoot(external_id, *, name="", phone="", email=""):
    return ExternalIdentity("chatwoot", str(external_id), name, phone, email)


def reload(organization, contact):
    with bind_organization(organization):
        return Contact.objects.get(pk=contact.pk)


@pytest.mark.parametrize("written", [
    "0412 345 678", "+61 412 345 678", "+61412345678", "(04) 1234 5678", "0011 61 412 345 678",
])
def test_the_same_phone_written_five_ways_matches(org_a, written):
    ava = patient(org_a, "Ava", "Smith", phone="0412345678", e164="+61412345678")

    assert match(org_a, chatwoot(7, name="Ava S", phone=written)) == {"7": ava.pk}
    assert reload(org_a, ava).chatwoot_contact_id == 7


def test_email_matches_case_insensitively_when_no_phone_does(org_a):
    ben = patient(org_a, "Ben", "Ng", email="Ben.Ng@Example.com")

    result = match(org_a, ExternalIdentity("manychat", "sub-1", "Ben", "", "  ben.ng@EXAMPLE.com"))

    assert result == {"sub-1": ben.pk}
    assert reload(org_a, ben).manychat_subscriber_id == "sub-1"


def test_no_match_makes_a_lead_holding_the_identity(org_a):
    result = match(org_a, chatwoot(9, name="Walk In", phone="0400 000 001", email="walk@in.example"))

    with bind_organization(org_a):
        lead = Contact.objects.get(pk=result["9"])
    assert (lead.cliniko_patient_id, lead.chatwoot_contact_id, lead.first_name, lead.last_name, lead.phone_e164) == (
        None, 9, "Walk", "In", "+61400000001")
    assert match(org_a, chatwoot(9, name="Walk In")) == result  # the next run finds the same lead


def test_two_candidates_are_listed_not_linked(org_a):
    mum = patient(org_a, "Jo", "Lee", phone="0412 111 222", e164="+61412111222")
    son = patient(org_a, "Max", "Lee", phone="0412 111 222", e164="+61412111222")

    result = match(org_a, chatwoot(11, name="Jo", phone="+61412111222"))

    assert result["11"] not in {mum.pk, son.pk}
    with bind_organization(org_a):
        lead = Contact.objects.get(pk=result["11"])
        listed = sorted((c.patient_id, c.reason) for c in ContactMatchCandidate.objects.filter(lead=lead))
    assert lead.cliniko_patient_id is None and lead.chatwoot_contact_id == 11
    assert listed == sorted([(mum.pk, "phone"), (son.pk, "phone")])
    assert reload(org_a, mum).chatwoot_contact_id is None
    assert reload(org_a, son).chatwoot_contact_id is None


def test_a_manual_link_survives_the_next_matching_run(org_a, admin_a):
    mum = patient(org_a, "Jo", "Lee", phone="0412 111 222", e164="+61412111222")
    patient(org_a, "Max", "Lee", phone="0412 111 222", e164="+61412111222")
    lead_id = match(org_a, chatwoot(11, name="Jo", phone="+61412111222"))["11"]
    with bind_organization(org_a):
        conversation = Conversation.objects.create(organization=org_a, provider="chatwoot", external_id="5",
                                                   contact_id=lead_id)
        contact_link(organization=org_a, lead=lead_id, patient=mum, actor=admin_a)

    assert match(org_a, chatwoot(11, name="Jo", phone="+61412111222")) == {"11": mum.pk}
    with bind_organization(org_a):
        lead = Contact.objects.get(pk=lead_id)
        assert Conversation.objects.get(pk=conversation.pk).contact_id == mum.pk
        assert not ContactMatchCandidate.objects.filter(lead_id=lead_id).exists()
        audit = AuditLog.objects.get(action="contact.linked")
    assert (lead.chatwoot_contact_id, lead.deleted_at is not None) == (None, True)
    assert reload(org_a, mum).chatwoot_contact_id == 11
    assert (audit.actor_id, audit.object_id, audit.changes) == (
        admin_a.pk, str(mum.pk), {"lead": str(lead_id), "providers": ["chatwoot"]})


def test_an_unlink_sticks(org_a, admin_a):
    ava = patient(org_a, "Ava", "Smith", phone="0412345678", e164="+61412345678")
    assert match(org_a, chatwoot(7, phone="0412 345 678")) == {"7": ava.pk}
    with bind_organization(org_a):
        conversation = Conversation.objects.create(organization=org_a, provider="chatwoot", external_id="5",
                                                   contact=ava)
        Message.objects.create(organization=org_a, conversation=conversation, provider="chatwoot", external_id="1",
                               direction="inbound", sender_name="Ann Other", content="hi",
                               sent_at=datetime(2024, 5, 1, 9, 0, tzinfo=UTC))
        lead = contact_unlink(organization=org_a, patient=ava, provider="chatwoot", actor=admin_a)
    assert (reload(org_a, lead).first_name, reload(org_a, lead).last_name) == ("Ann", "Other")

    assert match(org_a, chatwoot(7, name="Someone Else", phone="0412 345 678")) == {"7": lead.pk}
    assert reload(org_a, ava).chatwoot_contact_id is None
    with bind_organization(org_a):
        assert Conversation.objects.get(pk=conversation.pk).contact_id == lead.pk
        decision = ContactLinkDecision.objects.get(provider="chatwoot", external_id="7")
        assert AuditLog.objects.filter(action="contact.unlinked", object_id=str(ava.pk)).count() == 1
        assert not ContactMatchCandidate.objects.filter(lead=lead).exists()
    assert (decision.patient_id, decision.linked, decision.decided_by_id) == (ava.pk, False, admin_a.pk)
    assert reload(org_a, lead).first_name == "Someone"  # the lead shows what the vendor knows now


def test_organization_b_patients_are_never_considered(org_a, org_b):
    patient(org_b, "Sam", "Smith", phone="0412 345 999", e164="+61412345999", email="sam@example.com")

    result = match(org_a, chatwoot(21, phone="0412 345 999", email="sam@example.com"))

    with bind_organization(org_a):
        lead = Contact.objects.get(pk=result["21"])
        assert not ContactMatchCandidate.objects.exists()
    assert lead.cliniko_patient_id is None
    with bind_organization(org_b):
        assert Contact.objects.get().chatwoot_contact_id is None


def test_an_identity_linked_elsewhere_is_never_stolen(org_a):
    ava = patient(org_a, "Ava", "Smith", phone="0412345678", e164="+61412345678")
    match(org_a, chatwoot(7, phone="0412 345 678"))

    result = match(org_a, chatwoot(8, phone="0412 345 678"))

    assert result["8"] != ava.pk
    assert reload(org_a, ava).chatwoot_contact_id == 7
    with bind_organization(org_a):
        assert list(ContactMatchCandidate.objects.values_list("patient_id", flat=True)) == [ava.pk]


def test_a_lead_is_linked_once_its_patient_arrives_from_cliniko(org_a):
    lead_id = match(org_a, chatwoot(31, phone="0412 999 000"))["31"]
    with bind_organization(org_a):
        conversation = Conversation.objects.create(organization=org_a, provider="chatwoot", external_id="9",
                                                   contact_id=lead_id)
    cleo = patient(org_a, "Cleo", "Ng", phone="0412999000", e164="+61412999000")

    assert match(org_a, chatwoot(31, phone="0412 999 000")) == {"31": cleo.pk}
    with bind_organization(org_a):
        assert Conversation.objects.get(pk=conversation.pk).contact_id == cleo.pk
        assert Contact.objects.get(pk=lead_id).deleted_at is not None


def test_linking_refuses_a_patient_holding_another_identity(org_a, admin_a):
    ava = patient(org_a, "Ava", "Smith", phone="0412345678", e164="+61412345678")
    match(org_a, chatwoot(7, phone="0412 345 678"))
    lead_id = match(org_a, chatwoot(8, phone="0412 345 678"))["8"]

    with bind_organization(org_a), pytest.raises(LinkConflict):
        contact_link(organization=org_a, lead=lead_id, patient=ava, actor=admin_a)
    assert reload(org_a, ava).chatwoot_contact_id == 7


def test_linking_cannot_name_another_organizations_contact(org_a, org_b, admin_a):
    sam = patient(org_b, "Sam", "Smith", phone="0412 345 999", e164="+61412345999")
    lead_id = match(org_a, chatwoot(41, phone="0400 111 222"))["41"]

    with bind_organization(org_a), pytest.raises(Contact.DoesNotExist):
        contact_link(organization=org_a, lead=lead_id, patient=sam.pk, actor=admin_a)
    assert reload(org_b, sam).chatwoot_contact_id is None


@pytest.mark.django_db(transaction=True)
def test_two_runs_creating_the_same_lead_at_once_share_it(org_a):
    """A webhook and the sync (or two webhooks) meeting one new contact at the same moment: the second
    waits for the first and takes its lead, instead of failing on the identity's unique index."""
    import threading

    from django.db import connection, transaction

    first_wrote, let_first_commit = threading.Event(), threading.Event()
    results, errors = {}, []

    def run(name, before_commit=None):
        try:
            with bind_organization(org_a), transaction.atomic():
                results[name] = contacts_for_identities(organization=org_a, identities=[chatwoot(51, name="New")])
                if before_commit:
                    before_commit()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))
        finally:
            connection.close()

    def hold():
        first_wrote.set()
        let_first_commit.wait(10)

    first = threading.Thread(target=run, args=("first", hold))
    first.start()
    assert first_wrote.wait(10)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(0.5)  # the second now waits on the first's uncommitted lead
    let_first_commit.set()
    first.join(10)
    second.join(10)

    assert errors == []
    assert results["first"] == results["second"]
    with bind_organization(org_a):
        assert Contact.objects.filter(chatwoot_contact_id=51).count() == 1


def test_a_lead_cannot_be_unlinked_from_itself(org_a, admin_a):
    lead_id = match(org_a, chatwoot(21, name="Walk In", phone="+61400000021"))["21"]

    with bind_organization(org_a):
        lead = Contact.objects.get(pk=lead_id)
        with pytest.raises(ValueError, match="lead"):
            contact_unlink(organization=org_a, patient=lead, provider="chatwoot", actor=admin_a)
        assert Contact.objects.filter(chatwoot_contact_id=21).count() == 1
        assert not ContactLinkDecision.objects.filter(external_id="21").exists()
