from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Organizations and access"

    def ready(self):
        from tenants.rls import pooler  # noqa: F401 - registers the pooler start-up check
