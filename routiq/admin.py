"""The platform admin site: Django admin with a Database health page and the RQ dashboards linked."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.template.response import TemplateResponse
from django.urls import path

from routiq import database_health


class RoutIQAdminSite(admin.AdminSite):
    site_header = "RoutIQ platform admin"
    site_title = "RoutIQ admin"
    index_title = "Platform administration"
    index_template = "admin/routiq_index.html"

    @property
    def login_form(self):  # type: ignore[override]  # read-only on purpose: its class is imported when asked for
        # Imported here: the admin site module is loaded with the app registry, before auth's forms can be.
        from routiq.admin_login import LockoutAdminAuthenticationForm

        return LockoutAdminAuthenticationForm

    def login(self, request, extra_context=None):
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")  # a TemplateResponse, unless redirected
        if form is not None and form.is_bound and form.is_locked_out():
            response.status_code = 429  # the page still renders, with the reason, for the admin
        return response

    def get_urls(self):
        return [
            path("database-health/", self.admin_view(self.database_health_view), name="database-health"),
            *super().get_urls(),
        ]

    def database_health_view(self, request):
        context = {**self.each_context(request), "title": "Database health", **database_health.report()}
        return TemplateResponse(request, "admin/database_health.html", context)


class RoutIQAdminConfig(AdminConfig):
    default_site = "routiq.admin.RoutIQAdminSite"
