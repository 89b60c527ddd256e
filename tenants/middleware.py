"""Request middleware that keeps the connection's tenant state from outliving a request."""

from __future__ import annotations

from tenants.binding import unbind_all


class PublicSchemaMiddleware:
    """Start and end every request on the public schema with nothing bound.

    django-tenants keeps the selected schema on the Python connection object, so a request that forgot to
    reset would hand its schema to the next one even with fresh connections (stack-notes P9).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        unbind_all()
        try:
            return self.get_response(request)
        finally:
            unbind_all()
