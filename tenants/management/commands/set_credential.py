"""python manage.py set_credential <clerk_org_id> <provider> (--secret … | --secret-stdin) [--base-url …]

Prefer --secret-stdin: a secret on the command line ends up in shell history and the process list.
Options left out keep their stored values; only the secret's last four characters are printed. Changing
--base-url or --account-id needs the secret again (a secret is bound to where it is sent).

This is the operator's door for Cliniko and ManyChat base URLs (a stand-in server, another region): the
Integrations page does not let a clinic set them.
"""

from __future__ import annotations

import getpass
import sys

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.credentials import credential_get, credential_set
from tenants.models import Organization, Provider
from tenants.rls.binding import bind_organization


class Command(BaseCommand):
    help = "Create or replace an organization's vendor credential (the secret is encrypted at rest)."
    stealth_options = ("stdin",)  # lets call_command pass a stdin stand-in, as createsuperuser does

    def add_arguments(self, parser):
        parser.add_argument("clerk_org_id")
        parser.add_argument("provider", choices=Provider.values)
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--secret", help="The secret (visible in shell history: prefer --secret-stdin).")
        source.add_argument("--secret-stdin", action="store_true", help="Read the secret from standard input.")
        parser.add_argument("--base-url", help="The vendor API's base URL (https; '' restores the default).")
        parser.add_argument("--account-id", help="The account id at the vendor, if it has one.")

    def handle(self, *args, clerk_org_id, provider, secret, secret_stdin, base_url, account_id, **options):
        organization = Organization.objects.filter(clerk_org_id=clerk_org_id).first()
        if organization is None:
            raise CommandError(f"No organization with Clerk id {clerk_org_id}.")
        if not organization.is_active:
            raise CommandError(f"Organization {organization.name} is inactive.")
        if secret_stdin:
            secret = self.read_secret(options.get("stdin") or sys.stdin)
        elif secret is not None:
            self.stderr.write("Warning: --secret is visible in shell history; prefer --secret-stdin.")

        with bind_organization(organization):
            existing = credential_get(organization=organization, provider=provider)
            if existing is None and secret is None:
                raise CommandError("There is no credential yet: give --secret or --secret-stdin.")
            try:
                credential = credential_set(  # None keeps the stored value
                    organization=organization, provider=provider, secret=secret, base_url=base_url,
                    account_id=account_id, actor_label="manage.py set_credential",
                )
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from None
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None

        shown = f"…{credential.secret_last4}" if credential.secret_last4 else "(too short to show its last four)"
        state = "unchanged" if secret is None else "set"
        self.stdout.write(self.style.SUCCESS(
            f"Saved the {provider} credential of {organization.name}: secret {state}, ending {shown}."
        ))

    @staticmethod
    def read_secret(stdin) -> str:
        raw = getpass.getpass("Secret: ") if stdin.isatty() else stdin.read()
        secret = raw.strip()  # the newline of `echo` or a file; vendor keys never have surrounding spaces
        if not secret:
            raise CommandError("No secret on standard input.")
        return secret
