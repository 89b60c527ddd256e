"""Request middleware: tenant state never outlives a request; staff admin requests get platform access."""

from __future__ import annotations

from tenants.rls.binding import platform_access, unbind_all


class PublicSchemaMiddleware:
    """Start and end every request on the public schema with nothing bound.

    django-tenants keeps the selected schema on the Python connection object, so a request that forgot to
    reset would hand its schema to the next one, whatever the database connection.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        unbind_all()
        try:
            return self.get_response(request)
        finally:
            unbind_all()


class PlatformAdminMiddleware:
    """Django admin requests by staff run with platform access (binding.platform_access): the public tables
    of every organization are readable and writable there. Anyone else gets the admin's own login page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/admin/") and request.user.is_authenticated and request.user.is_staff:
            with platform_access(f"django admin: {request.user.pk}"):
                return self.get_response(request)
        return self.get_response(request)
