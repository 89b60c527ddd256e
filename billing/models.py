"""Billing state lives on tenants.Organization (Stripe customer and subscription); events land here later."""
