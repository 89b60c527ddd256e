"""python manage.py rotate_credentials: re-encrypt every stored secret under the first configured key.

Key rotation: put the new key first in ROUTIQ_ENCRYPTION_KEYS (keep the old one after it), deploy, run
this command, and only then remove the old key.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from tenants.credentials import credentials_rotate
from tenants.crypto import CredentialDecryptionError


class Command(BaseCommand):
    help = "Re-encrypt every organization's credentials under the first key of ROUTIQ_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        try:
            count = credentials_rotate(actor_label="manage.py rotate_credentials")
        except (CredentialDecryptionError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Rotated {count} credential(s)."))
