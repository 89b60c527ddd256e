from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"

    def ready(self):
        # Patient searches travel in query strings (/patients/?q=…): keep them out of access logs in every
        # process that serves pages (runserver's django.server, gunicorn's gunicorn.access).
        from routiq.security import redact_access_logs

        redact_access_logs()
