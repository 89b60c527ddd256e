from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from routiq.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    path("", include("tenants.urls")),
    path("", include("patients.urls")),
    path("", include("messaging.urls")),
    path("", include("billing.urls")),
]
if settings.ROUTIQ_LOADTEST_BARE_VIEW:  # scripts/loadtest.py's comparison; never in production
    from django.db.backends.signals import connection_created

    from routiq.loadtest import bare_patient_list, fix_session_settings

    connection_created.connect(fix_session_settings)
    urlpatterns.append(path("loadtest/bare-patients/", bare_patient_list))
