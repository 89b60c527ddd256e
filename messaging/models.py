"""Per-clinic conversations and messages (tenant schema), mirrored from Chatwoot and ManyChat."""

from __future__ import annotations

import uuid

from django.db import models

from patients.models import Contact
from tenants.models import MESSAGING_PROVIDER_CHOICES, OrganizationOwned


class ConversationStatus(models.TextChoices):
    OPEN = "open", "Open"
    PENDING = "pending", "Pending"
    RESOLVED = "resolved", "Resolved"
    SNOOZED = "snoozed", "Snoozed"


class Conversation(OrganizationOwned):
    """A Chatwoot conversation (external_id: its per-account display id) or a ManyChat subscriber's thread
    (external_id: the subscriber id). The counters are kept by the services that write messages, so a page
    never counts."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="conversations"
    )
    provider = models.CharField(max_length=20, choices=MESSAGING_PROVIDER_CHOICES)
    external_id = models.CharField(max_length=64)
    channel = models.CharField(max_length=50, blank=True, default="")  # e.g. Channel::Whatsapp, instagram
    inbox_name = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=20, choices=ConversationStatus.choices, default=ConversationStatus.OPEN)
    assignee_name = models.CharField(max_length=200, blank=True, default="")
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_message_preview = models.CharField(max_length=200, blank=True, default="")
    message_count = models.PositiveIntegerField(default=0)
    # The first inbound message not yet followed by an outbound one (None: nothing waits for an answer).
    unanswered_since = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    search_hits: list  # not a column: a search result's matching messages (messaging.selectors)

    class Meta:
        db_table = "conversations"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "provider", "external_id"], name="conversations_external_unique"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "created_at"], name="conversations_created_idx"),
            models.Index(fields=["organization", "last_message_at"], name="conversations_last_msg_idx"),
            models.Index(fields=["contact", "last_message_at"], name="conversations_contact_idx"),
        ]


class MessageDirection(models.TextChoices):
    INBOUND = "inbound", "Inbound"
    OUTBOUND = "outbound", "Outbound"


class Message(OrganizationOwned):
    """One message. Private notes (Chatwoot agents' internal notes) are kept and marked; attachments are kept
    as metadata ([{"type", "name", "url"}]), never downloaded."""

    id = models.BigAutoField(primary_key=True)
    conversation = models.ForeignKey(Conversation, on_delete=models.DO_NOTHING, related_name="messages")
    provider = models.CharField(max_length=20, choices=MESSAGING_PROVIDER_CHOICES)
    external_id = models.CharField(max_length=64)
    direction = models.CharField(max_length=10, choices=MessageDirection.choices)
    private = models.BooleanField(default=False)
    sender_name = models.CharField(max_length=200, blank=True, default="")
    content = models.TextField(blank=True, default="")
    content_type = models.CharField(max_length=30, blank=True, default="text")
    attachments = models.JSONField(default=list, blank=True)
    sent_at = models.DateTimeField()
    conversation_channel: str  # not a column: the conversation's channel, on a timeline's rows (messaging.selectors)

    class Meta:
        db_table = "messages"
        # Partitioned by month on sent_at (migration 0007): every unique key must contain sent_at, so the
        # database's primary key is (id, sent_at) and upserts name (provider, external_id, sent_at).
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "external_id", "sent_at"], name="messages_external_sent_unique"
            )
        ]
        indexes = [
            models.Index(fields=["conversation", "sent_at"], name="messages_conversation_idx"),
            models.Index(fields=["organization", "sent_at"], name="messages_org_sent_idx"),
        ]
