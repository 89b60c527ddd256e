from django.conf import settings
from django.urls import path

from tenants import views, webhooks

urlpatterns = [
    path("sign-in/", views.sign_in, name="sign-in"),
    path("sign-out/", views.sign_out, name="sign-out"),
    path("webhooks/clerk/", webhooks.clerk_webhook, name="clerk-webhook"),
]
if settings.DEV_SIGN_IN_ENABLED:
    urlpatterns.append(path("dev/sign-in/", views.dev_sign_in, name="dev-sign-in"))
