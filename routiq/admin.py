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
