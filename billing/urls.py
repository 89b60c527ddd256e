from django.urls import path

from billing import views, webhooks

app_name = "billing"

urlpatterns = [
    path("billing/", views.billing, name="page"),
    path("billing/checkout", views.checkout, name="checkout"),
    path("billing/portal", views.portal, name="portal"),
    path("webhooks/stripe/", webhooks.stripe_webhook, name="stripe-webhook"),
]
