"""Portal roles in views: members see patients and conversations; admins also see settings and syncs."""

from __future__ import annotations

import functools

from django.core.exceptions import PermissionDenied


def organization_admin_required(view):
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        identity = getattr(request, "identity", None)
        if identity is None or not identity.is_admin:
            raise PermissionDenied("Only the clinic's admins can open this page.")
        return view(request, *args, **kwargs)

    return wrapper
