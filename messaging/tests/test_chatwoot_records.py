"""Chatwoot records -> rows: one mapping for the API and the webhooks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from messaging.chatwoot_records import contact_identity, conversation_row, message_row, moment
from routiq.sync import MalformedRecord


def test_api_and_webhook_times_land_on_the_same_second():
    assert moment(1714554001) == moment("2024-05-01T09:00:01.734Z") == datetime(2024, 5, 1, 9, 0, 1, tzinfo=UTC)
    assert moment("2024-05-01T19:00:01+10:00").tzinfo is UTC


@pytest.mark.parametrize("value", ["yesterday", "2024-05-01T09:00:01", True, [], 10**20])
def test_an_unreadable_time_is_a_malformed_record(value):
    with pytest.raises(MalformedRecord):
        moment(value, required=True)


@pytest.mark.parametrize(("message_type", "direction"), [
    (0, "inbound"), (1, "outbound"), (3, "outbound"), ("incoming", "inbound"), ("outgoing", "outbound"),
    ("template", "outbound")])
def test_message_types_become_directions(message_type, direction):
    row = message_row({"id": 5, "conversation_id": 2, "message_type": message_type, "created_at": 1714554001})
    assert row.direction == direction


def test_activity_messages_are_not_messages_and_unknown_types_are_malformed():
    assert message_row({"id": 5, "conversation_id": 2, "message_type": 2, "created_at": 1714554001}) is None
    assert message_row({"id": 5, "conversation_id": 2, "message_type": "activity", "created_at": 1}) is None
    for bad in (9, "system", True, None):
        with pytest.raises(MalformedRecord):
            message_row({"id": 5, "conversation_id": 2, "message_type": bad, "created_at": 1714554001})


@pytest.mark.parametrize("bad_id", [None, "12a", -3, 1.5, True, {"id": 1}])
def test_bad_ids_are_malformed(bad_id):
    with pytest.raises(MalformedRecord):
        message_row({"id": bad_id, "conversation_id": 2, "message_type": 0, "created_at": 1714554001})
    with pytest.raises(MalformedRecord):
        contact_identity({"id": bad_id})


def test_text_is_cleaned_of_what_postgresql_cannot_store():
    row = message_row({"id": "7", "conversation_id": "2", "message_type": 0, "created_at": 1714554001,
                       "content": "hi\x00 there \ud800", "sender": {"name": "Ada\x00"}})
    assert (row.content, row.sender_name, row.external_id) == ("hi there \ufffd", "Ada", "7")
    identity = contact_identity({"id": 3, "name": "Zoë\x00", "phone_number": "+61 400 000 001", "email": None})
    assert (identity.name, identity.phone_raw, identity.email) == ("Zoë", "+61 400 000 001", "")


def test_a_conversation_reads_its_contact_assignee_inbox_and_status():
    row = conversation_row({"id": 41, "status": "snoozed", "inbox": {"id": 1, "name": "WhatsApp"},
                            "meta": {"sender": {"id": 9, "name": "Ada", "phone_number": "+61400000001"},
                                     "assignee": {"name": "Jessica Carter", "available_name": "Jess"},
                                     "channel": "Channel::Whatsapp"},
                            "last_activity_at": 1714554001})
    assert (row.external_id, row.status, row.inbox_name, row.assignee_name, row.channel) == (
        "41", "snoozed", "WhatsApp", "Jess", "Channel::Whatsapp")
    assert (row.contact.external_id, row.contact.phone_raw) == ("9", "+61400000001")
    with pytest.raises(MalformedRecord):
        conversation_row({"id": 41, "status": "archived"})


def test_private_notes_are_marked_and_attachments_kept_as_safe_metadata():
    row = message_row({"id": 8, "conversation_id": 2, "message_type": 1, "private": True, "created_at": 1714554001,
                       "attachments": [{"file_type": "image", "data_url": "https://x.example/a/scan%201.png"},
                                       {"file_type": "file", "data_url": "javascript:alert(1)"},
                                       "not an attachment"]})
    assert row.private is True
    assert row.attachments == [{"type": "image", "name": "scan 1.png", "url": "https://x.example/a/scan%201.png"},
                               {"type": "file", "name": "", "url": ""}]
