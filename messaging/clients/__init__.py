"""HTTP clients for the messaging vendors (Chatwoot, ManyChat): HTTP only, no ORM, no settings."""
