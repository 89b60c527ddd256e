"""Forms of the clinic admin's Integrations page.

A clinic chooses only what is legitimately its own: the secret, and for a self-hosted Chatwoot the server's
base URL and account id. Cliniko's base URL follows from the key's shard and ManyChat's is fixed; operators
override them (settings, ``manage.py set_credential``), never a clinic.
"""

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError

from tenants.credentials import REENTER_SECRET, account_id_error, base_url_error
from tenants.models import ApiCredential, Provider


class CredentialForm(forms.Form):
    """The secret is write-only: the field never renders a stored value, and blank keeps the stored one."""

    secret = forms.CharField(
        required=False, strip=True, max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave blank to keep the stored secret.",
    )

    def __init__(self, *args, credential: ApiCredential | None = None, **kwargs) -> None:
        self.credential = credential
        super().__init__(*args, **kwargs)


class ChatwootCredentialForm(CredentialForm):
    """Chatwoot may be the clinic's own server: its URL and account id are the clinic's to give."""

    base_url = forms.URLField(label="Base URL", max_length=200, assume_scheme="https",
                              help_text="Your Chatwoot server, e.g. https://app.chatwoot.com")
    account_id = forms.CharField(label="Account id", max_length=19)

    def clean_base_url(self) -> str:
        base_url = self.cleaned_data["base_url"].strip()
        if message := base_url_error(base_url, provider=Provider.CHATWOOT):
            raise ValidationError(message)
        return base_url

    def clean_account_id(self) -> str:
        account_id = self.cleaned_data["account_id"].strip()
        if message := account_id_error(account_id, provider=Provider.CHATWOOT):
            raise ValidationError(message)
        return account_id

    def clean(self) -> dict:
        cleaned = cast("dict[str, Any]", super().clean())  # Form.clean returns cleaned_data (the stubs: or None)
        stored = self.credential
        if stored is not None and not cleaned.get("secret") and (
            cleaned.get("base_url", stored.base_url) != stored.base_url
            or cleaned.get("account_id", stored.account_id) != stored.account_id
        ):
            self.add_error("secret", REENTER_SECRET)
        return cleaned


FORMS: dict[str, type[CredentialForm]] = {Provider.CHATWOOT: ChatwootCredentialForm}


def credential_form(provider: str, data=None, *, credential: ApiCredential | None = None) -> CredentialForm:
    """The provider's form; for a stored credential its non-secret settings are the initial values."""
    form_class = FORMS.get(provider, CredentialForm)
    initial = {"base_url": credential.base_url, "account_id": credential.account_id} if credential else {}
    return form_class(data, prefix=provider, credential=credential, initial=initial)


class WebhookSecretForm(forms.Form):
    """The vendor's webhook secret: write-only like the credential's secret (never rendered back)."""

    webhook_secret = forms.CharField(
        label="Webhook secret", required=False, strip=True, max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
