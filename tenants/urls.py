from django.urls import path

from tenants.clerk import webhooks
from tenants.views import integrations, sign_in

urlpatterns = [
    path("sign-in/", sign_in.sign_in, name="sign-in"),
    path("sign-out/", sign_in.sign_out, name="sign-out"),
    path("webhooks/clerk/", webhooks.clerk_webhook, name="clerk-webhook"),
    path("settings/integrations/", integrations.integrations, name="integrations"),
    path("settings/integrations/<str:provider>/save", integrations.credential_save, name="credential-save"),
    path("settings/integrations/<str:provider>/remove", integrations.credential_remove, name="credential-remove"),
    path("settings/integrations/<str:provider>/test", integrations.credential_test, name="credential-test"),
    path("settings/integrations/<str:provider>/sync", integrations.sync_now, name="sync-now"),
    path("settings/integrations/webhook-token/rotate", integrations.webhook_token_rotate,
         name="webhook-token-rotate"),
    path("settings/integrations/<str:provider>/webhook-secret", integrations.webhook_secret_save,
         name="webhook-secret-save"),
    # 404 unless settings.DEV_SIGN_IN_ENABLED (DEBUG on and no Clerk key): checked in the view, per request.
    path("dev/sign-in/", sign_in.dev_sign_in, name="dev-sign-in"),
]
