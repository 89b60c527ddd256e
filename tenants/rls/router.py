"""Send public-table queries made inside platform_access() to the platform connection.

Public models (organizations, members, credentials, logs, users, sessions) are read and written through the
``platform`` alias, which logs in as the platform role; the public tables' policies admit that role to
every organization's rows. Tenant models (patients, messages) always stay on the default connection, bound
to one organization: the platform role has no grant on a tenant schema, so routing them there could only
fail.
"""

from __future__ import annotations

from django.conf import settings

from tenants.rls.binding import PLATFORM_ALIAS, in_platform_access


def is_tenant_model(model) -> bool:
    return model._meta.app_config.name in TENANT_ONLY_APPS


TENANT_ONLY_APPS = frozenset(app for app in settings.TENANT_APPS if app not in settings.SHARED_APPS)


class PlatformAccessRouter:
    def db_for_read(self, model, **hints):
        return PLATFORM_ALIAS if in_platform_access() and not is_tenant_model(model) else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        # The platform connection reads the same database as the default one: objects from either relate.
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        # Migrations run as the owner on the default alias; the platform role never changes the schema.
        return False if db == PLATFORM_ALIAS else None
