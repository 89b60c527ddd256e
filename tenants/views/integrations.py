"""The clinic admin's Integrations page: credentials (write-only secrets), test connection, syncs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from billing.gating import syncs_allowed
from tenants.connections import connection_report
from tenants.credentials import credential_delete, credential_get, credential_set
from tenants.forms import CredentialForm, WebhookSecretForm, credential_form
from tenants.models import ApiCredential, Provider, SyncLog
from tenants.permissions import organization_admin_required
from tenants.selectors import last_sync
from tenants.webhook_endpoints import (
    WEBHOOK_PROVIDERS,
    credential_webhook_secret_set,
    organization_webhook_token_rotate,
)

SYNCED_RESOURCES: dict[str, list[str]] = {Provider.CLINIKO: ["patients", "appointments"],
                    Provider.CHATWOOT: ["contacts", "conversations", "messages"]}


@dataclass
class IntegrationCard:
    provider: str
    label: str
    credential: ApiCredential | None
    form: CredentialForm
    last_syncs: list[SyncLog]
    webhook_url: str = ""  # where the vendor delivers this organization's webhooks ('' = it sends none)
    webhook_form: WebhookSecretForm | None = None


def latest_syncs(organization, provider: str) -> list[SyncLog]:
    return [
        log
        for resource in SYNCED_RESOURCES.get(provider, [])
        if (log := last_sync(organization=organization, provider=provider, resource=resource)) is not None
    ]


def provider_or_404(provider: str) -> str:
    if provider not in Provider.values:
        raise Http404("Unknown provider.")
    return provider


@require_GET
@organization_admin_required
def integrations(request):
    cards = []
    for provider, label in Provider.choices:
        credential = credential_get(organization=request.organization, provider=provider)
        card = IntegrationCard(provider, label, credential, credential_form(provider, credential=credential),
                               latest_syncs(request.organization, provider))
        if provider in WEBHOOK_PROVIDERS:
            card.webhook_url = webhook_url(request, provider)
            card.webhook_form = WebhookSecretForm(prefix=f"{provider}-webhook")
        cards.append(card)
    return render(request, "tenants/integrations.html", {"cards": cards})


@require_POST
@organization_admin_required
def credential_save(request, provider: str):
    provider = provider_or_404(provider)
    stored = credential_get(organization=request.organization, provider=provider)
    form = credential_form(provider, request.POST, credential=stored)
    if form.is_valid():
        try:
            # Only the fields this provider's form has: a Cliniko or ManyChat base URL in the POST is ignored
            # (None keeps the operator's value), so a clinic cannot choose where those keys are sent.
            credential_set(
                organization=request.organization, provider=provider, secret=form.cleaned_data["secret"] or None,
                base_url=form.cleaned_data.get("base_url"), account_id=form.cleaned_data.get("account_id"),
                actor=request.user, request=request,
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"{Provider(provider).label} credential saved.")
    else:
        # Iterating an ErrorList gives its messages (its __getitem__ does); the stubs say ValidationError | str.
        messages.error(request, "Please correct the form: " + "; ".join(
            f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))  # type: ignore[arg-type]
    return redirect("integrations")


@require_POST
@organization_admin_required
def credential_remove(request, provider: str):
    provider = provider_or_404(provider)
    if credential_delete(organization=request.organization, provider=provider, actor=request.user, request=request):
        messages.success(request, f"{Provider(provider).label} credential removed.")
    return redirect("integrations")


@require_POST
@organization_admin_required
def credential_test(request, provider: str):
    provider = provider_or_404(provider)
    credential = credential_get(organization=request.organization, provider=provider)
    if credential is None:
        messages.error(request, "Save a credential first.")
        return redirect("integrations")
    ok, message = connection_report(credential)
    level = {True: messages.SUCCESS, False: messages.ERROR, None: messages.INFO}[ok]
    messages.add_message(request, level, message)
    return redirect("integrations")


@require_POST
@organization_admin_required
@syncs_allowed
def sync_now(request, provider: str):
    from messaging.jobs import enqueue_chatwoot_sync
    from patients.jobs import enqueue_organization_sync

    enqueuers: dict[str, Callable[..., object]] = {
        Provider.CLINIKO: enqueue_organization_sync, Provider.CHATWOOT: enqueue_chatwoot_sync}
    if provider_or_404(provider) not in enqueuers:
        raise Http404("This provider has no sync yet.")
    if credential_get(organization=request.organization, provider=provider) is None:
        messages.error(request, f"Save a {Provider(provider).label} credential first.")
        return redirect("integrations")
    enqueuers[provider](request.organization, full=request.POST.get("full") == "1")
    messages.success(request, "Sync queued. Refresh this page to follow it.")
    return redirect("integrations")


def webhook_url(request, provider: str) -> str:
    # Looked up by name so the page and the routes cannot disagree.
    path = reverse(f"messaging:{provider}-webhook", kwargs={"token": request.organization.webhook_token})
    return request.build_absolute_uri(path)


@require_POST
@organization_admin_required
def webhook_token_rotate(request):
    organization_webhook_token_rotate(organization=request.organization, actor=request.user, request=request)
    messages.success(request, "New webhook URLs made: paste them into Chatwoot and ManyChat; the old ones "
                              "no longer work.")
    return redirect("integrations")


@require_POST
@organization_admin_required
def webhook_secret_save(request, provider: str):
    provider = provider_or_404(provider)
    if provider not in WEBHOOK_PROVIDERS:
        raise Http404("This provider sends no webhooks.")
    if credential_get(organization=request.organization, provider=provider) is None:
        messages.error(request, "Save a credential first.")
        return redirect("integrations")
    form = WebhookSecretForm(request.POST, prefix=f"{provider}-webhook")
    remove = request.POST.get("remove") == "1"
    if not form.is_valid() or not (remove or form.cleaned_data["webhook_secret"]):
        messages.error(request, "Enter the webhook secret, or remove the stored one.")
        return redirect("integrations")
    credential_webhook_secret_set(organization=request.organization, provider=provider,
                                  secret="" if remove else form.cleaned_data["webhook_secret"],
                                  actor=request.user, request=request)
    messages.success(request, f"{Provider(provider).label} webhook secret {'removed' if remove else 'saved'}.")
    return redirect("integrations")
