"""Stripe over the official library: the calls the billing pages make, and one error type for them.

Configured from settings (STRIPE_SECRET_KEY, STRIPE_API_URL), so any server that speaks Stripe's API can
stand in. Timeouts and retries are the library's (it retries connection errors, 409s and what Stripe marks
``Stripe-Should-Retry``, with the idempotency key it adds to every POST); creating a customer also sends our
own key, so a retried or concurrent "first need" of one organization still makes one customer. No ORM here.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from django.conf import settings

logger = logging.getLogger(__name__)


class StripeUnavailable(Exception):
    """Stripe refused or could not be reached; ``message`` is safe to show a clinic admin."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class StripeNotConfigured(StripeUnavailable):
    pass


class StripeCustomerMissing(StripeUnavailable):
    """Stripe does not know the customer we stored (deleted there, or another Stripe account or mode)."""


def describe(exc: stripe.StripeError) -> str:
    """A short, safe account of a Stripe error: its HTTP status and code, never its body."""
    if isinstance(exc, stripe.AuthenticationError):
        return "Stripe refused our API key. The platform team has been told."
    if isinstance(exc, stripe.RateLimitError):
        return "Stripe is busy. Please try again in a minute."
    if isinstance(exc, stripe.APIConnectionError):
        return "Stripe could not be reached. Please try again in a minute."
    code = getattr(exc, "code", None) or type(exc).__name__
    status = getattr(exc, "http_status", None)
    return f"Stripe could not do that ({code}{f', HTTP {status}' if status else ''}). Please try again later."


class BillingStripeClient:
    def __init__(self, *, secret_key: str, api_url: str, timeout: float, max_network_retries: int):
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_url.rstrip("/")},
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

    @classmethod
    def from_settings(cls) -> BillingStripeClient:
        if not settings.STRIPE_SECRET_KEY:
            raise StripeNotConfigured("Billing is not set up yet (no Stripe key). The platform team can enable it.")
        return cls(secret_key=settings.STRIPE_SECRET_KEY, api_url=settings.STRIPE_API_URL,
                   timeout=settings.STRIPE_TIMEOUT_SECONDS, max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES)

    def _call(self, what: str, call, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except stripe.InvalidRequestError as exc:
            if exc.code == "resource_missing" and exc.param == "customer":
                logger.warning("stripe %s: the stored customer is unknown to Stripe", what)
                raise StripeCustomerMissing(describe(exc)) from exc
            self._log_failure(what, exc)
            raise StripeUnavailable(describe(exc)) from exc
        except stripe.StripeError as exc:
            self._log_failure(what, exc)
            raise StripeUnavailable(describe(exc)) from exc

    @staticmethod
    def _log_failure(what: str, exc: stripe.StripeError) -> None:
        logger.warning("stripe %s failed: %s http_status=%s code=%s request_id=%s", what, type(exc).__name__,
                       getattr(exc, "http_status", None), getattr(exc, "code", None), getattr(exc, "request_id", None))

    def create_customer(self, *, organization_id: str, clerk_org_id: str, name: str, email: str = "",
                        replacing: str = "") -> str:
        """``replacing``: the customer id Stripe no longer knows, so the idempotency key differs from the one
        that made it (Stripe would otherwise answer with that same customer for 24 hours)."""
        params = {"name": name, "metadata": {"organization_id": organization_id, "clerk_org_id": clerk_org_id}}
        if email:
            params["email"] = email
        customer = self._call("customer create", self._client.v1.customers.create, params,
                              {"idempotency_key": f"routiq-customer-{organization_id}"
                                                  + (f"-replacing-{replacing}" if replacing else "")})
        return customer.id

    def create_checkout_session(self, *, customer_id: str, organization_id: str, price_id: str,
                                success_url: str, cancel_url: str) -> str:
        session = self._call("checkout session create", self._client.v1.checkout.sessions.create, {
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": organization_id,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": {"organization_id": organization_id},
            "subscription_data": {"metadata": {"organization_id": organization_id}},
        })
        return session.url

    def create_portal_session(self, *, customer_id: str, return_url: str) -> str:
        session = self._call("portal session create", self._client.v1.billing_portal.sessions.create,
                             {"customer": customer_id, "return_url": return_url})
        return session.url
