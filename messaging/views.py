"""Inbox, thread and match pages: thin views over messaging.selectors and the messaging services.

Viewing a thread is audited like viewing a patient. Writes (a reply, a match) are POSTs with CSRF that redirect
back (so a reload does not send twice) and report through Django's messages framework.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from messaging import selectors
from messaging.matching import contact_link, contact_unlink
from messaging.models import Conversation
from messaging.selectors import CONTACT_KINDS, STATUSES, THREAD_ORDERS, InboxQuery
from messaging.services import ReplyNotPossible, reply_send
from patients.selectors import patient_get
from routiq.http import VendorError, VendorResponseError, VendorUnavailable
from tenants.audit import audit_record
from tenants.permissions import organization_admin_required

MAX_REPLY_LENGTH = 10_000
REPLYABLE_PROVIDERS = {"chatwoot"}  # ManyChat conversations are answered in ManyChat (flows), not here


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise Http404(f"No such {what}.") from exc


@require_GET
def inbox(request):
    query = InboxQuery.from_params(request.GET)
    page = selectors.inbox_page(organization=request.organization, query=query)
    context = {"page": page, "statuses": STATUSES, "contact_kinds": CONTACT_KINDS}
    if request.htmx:
        return render(request, "messaging/_inbox_results.html", context)
    context["choices"] = selectors.inbox_choices(organization=request.organization)
    return render(request, "messaging/inbox.html", context)


class ReplyForm(forms.Form):
    content = forms.CharField(max_length=MAX_REPLY_LENGTH, strip=True)
    private = forms.BooleanField(required=False)
    # Where to come back to: a choice, never a URL (no open redirect).
    back = forms.ChoiceField(choices=[("thread", "thread"), ("patient", "patient")], required=False)


@require_GET
def conversation_detail(request, conversation_id: str):
    conversation = selectors.conversation_get(organization=request.organization,
                                              conversation_id=parse_uuid(conversation_id, "conversation"))
    page = selectors.thread_messages(organization=request.organization, conversation=conversation,
                                     order=request.GET.get("order", "newest"), after=request.GET.get("after"))
    audit_record(
        action="conversation.viewed", organization=request.organization, actor=request.user,
        object_type="conversation", object_id=conversation.pk, request=request,
    )
    context = {
        "conversation": conversation, "page": page, "orders": THREAD_ORDERS,
        "channel": selectors.channel_label(conversation.channel),
        "can_reply": conversation.provider in REPLYABLE_PROVIDERS, "form": ReplyForm(),
    }
    template = "messaging/_thread_messages.html" if request.htmx else "messaging/thread.html"
    return render(request, template, context)


@require_POST
def conversation_reply(request, conversation_id: str):
    conversation = selectors.conversation_get(organization=request.organization,
                                              conversation_id=parse_uuid(conversation_id, "conversation"))
    form = ReplyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Write a message first (at most 10,000 characters).")
    else:
        send_reply(request, conversation, form.cleaned_data["content"], private=form.cleaned_data["private"])
    if form.is_valid() and form.cleaned_data["back"] == "patient" and conversation.contact_id:
        return redirect(reverse("patients:detail", args=[conversation.contact_id]) + "#timeline")
    return redirect("messaging:conversation", conversation_id=conversation.pk)


def send_reply(request, conversation: Conversation, content: str, *, private: bool) -> None:
    try:
        reply_send(organization=request.organization, conversation=conversation, content=content, private=private,
                   actor=request.user)
    except (VendorUnavailable, VendorResponseError) as exc:
        # A timeout or a garbled answer: Chatwoot may have taken it, and then its echo brings it in. The
        # service never sends twice; the person is told to look before sending it again.
        messages.error(request, f"Chatwoot did not confirm the message ({exc.summary}). It may still arrive: "
                                "check this thread in a minute before sending it again.")
    except VendorError as exc:
        # The summary names the kind of failure and the status, never the vendor's text.
        messages.error(request, f"Chatwoot did not take the message ({exc.summary}). Nothing was sent.")
    except ReplyNotPossible as exc:  # written for people: not connected, not a Chatwoot conversation, …
        messages.error(request, str(exc))
    else:
        messages.success(request, "Private note added." if private else "Reply sent.")


@require_GET
def message_link(request, message_id: int):
    """A link to one message (a search hit): its thread, at the page that starts with it."""
    message = selectors.message_get(organization=request.organization, message_id=message_id)
    cursor = selectors.thread_cursor_at(organization=request.organization, message=message)
    url = reverse("messaging:conversation", args=[message.conversation_id])
    return redirect(f"{url}?{urlencode({'after': cursor})}#message-{message.pk}")


@require_GET
@organization_admin_required
def matches(request):
    leads, capped = selectors.match_list(organization=request.organization)
    return render(request, "messaging/matches.html", {"leads": leads, "capped": capped})


@require_POST
@organization_admin_required
def match_link(request, candidate_id: int):
    candidate = selectors.match_candidate_get(organization=request.organization, candidate_id=candidate_id)
    try:
        contact_link(organization=request.organization, lead=candidate.lead, patient=candidate.patient,
                     actor=request.user)
    except ValueError as exc:  # the matching service's refusals are written for people
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Linked to {candidate.patient}.")
    return redirect("messaging:matches")


UNLINKABLE = {"chatwoot": "Chatwoot", "manychat": "ManyChat"}


@require_POST
@organization_admin_required
def match_unlink(request, patient_id: str):
    """"This is not that patient": the patient's Chatwoot or ManyChat contact becomes a lead of its own again,
    and stays apart across syncs."""
    patient = patient_get(organization=request.organization, patient_id=parse_uuid(patient_id, "patient"))
    provider = request.POST.get("provider", "")
    if provider not in UNLINKABLE:
        raise Http404("No such contact.")
    try:
        contact_unlink(organization=request.organization, patient=patient, provider=provider, actor=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The {UNLINKABLE[provider]} contact is no longer linked to {patient}.")
    return redirect("patients:detail", patient_id=patient.pk)
