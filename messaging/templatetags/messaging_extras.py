"""Template filters for messaging pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import template

from messaging.selectors import channel_label as _channel_label

register = template.Library()


@register.filter
def channel_label(channel: str) -> str:
    return _channel_label(channel or "")


@register.filter
def safe_link(url) -> str:
    """An attachment's URL only when it is http(s): it comes from the vendor, and a ``javascript:`` or ``data:``
    link in a clinic's page would run in the portal's origin when clicked."""
    if not isinstance(url, str) or len(url) > 2000:
        return ""
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""
    return url.strip() if scheme in ("http", "https") else ""
