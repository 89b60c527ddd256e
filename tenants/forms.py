from django import forms


class CredentialForm(forms.Form):
    """The secret is write-only: the field never renders a stored value, and blank keeps the stored one."""

    secret = forms.CharField(
        required=False, strip=True, max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave blank to keep the stored secret.",
    )
    base_url = forms.URLField(required=False, max_length=200, assume_scheme="https")
    account_id = forms.CharField(required=False, max_length=64)
