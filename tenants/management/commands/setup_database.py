"""Create the owner and app roles, the database, and the app role's grants. Safe to run again."""

from __future__ import annotations

import os

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tenants.rls.roles import (
    database_name_from_url,
    ensure_roles_and_database,
    grant_app_privileges,
    grant_platform_privileges,
    role_from_url,
)


class Command(BaseCommand):
    help = (
        "Create/refresh the database roles from DATABASE_OWNER_URL, DATABASE_URL (app role) and "
        "DATABASE_PLATFORM_URL, the database, and the app and platform roles' privileges. Connects as "
        "DATABASE_ADMIN_URL (a superuser or CREATEROLE role)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--admin-url", default=os.environ.get("DATABASE_ADMIN_URL"))
        parser.add_argument("--owner-url", default=os.environ.get("DATABASE_OWNER_URL"))
        parser.add_argument("--app-url", default=os.environ.get("DATABASE_URL"))
        parser.add_argument("--platform-url", default=os.environ.get("DATABASE_PLATFORM_URL"))
        parser.add_argument(
            "--allow-test-databases",
            action="store_true",
            help="Give the owner CREATEDB and membership of the app role (development and CI only).",
        )

    def handle(self, *args, admin_url, owner_url, app_url, platform_url, allow_test_databases, **options):
        if not (admin_url and owner_url and app_url and platform_url):
            raise CommandError(
                "Set DATABASE_ADMIN_URL, DATABASE_OWNER_URL, DATABASE_URL and DATABASE_PLATFORM_URL "
                "(or pass the flags)."
            )
        owner, app, platform = role_from_url(owner_url), role_from_url(app_url), role_from_url(platform_url)
        if platform.name != settings.DATABASE_PLATFORM_ROLE:
            raise CommandError(
                f"DATABASE_PLATFORM_URL logs in as {platform.name!r} but DATABASE_PLATFORM_ROLE is "
                f"{settings.DATABASE_PLATFORM_ROLE!r}: the policies admit the latter."
            )
        database = database_name_from_url(owner_url)
        if database != database_name_from_url(app_url):
            raise CommandError("DATABASE_OWNER_URL and DATABASE_URL must name the same database.")
        try:
            ensure_roles_and_database(
                admin_url, owner, app, database, platform=platform, allow_test_databases=allow_test_databases
            )
            with psycopg.connect(owner_url, autocommit=True) as connection, connection.cursor() as cursor:
                grant_app_privileges(cursor, owner.name, app.name)
                grant_platform_privileges(cursor, owner.name, platform.name)
        except psycopg.Error as exc:
            raise CommandError(f"Database setup failed: {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(f"Database {database!r}: owner {owner.name!r}, app role {app.name!r}, "
                f"platform role {platform.name!r} ready.")
        )
