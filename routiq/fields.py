"""Limits read from the models, so a check before a write cannot drift from the column it protects."""

from __future__ import annotations

from django.db import models


def max_length(model: type[models.Model], field_name: str) -> int:
    """The ``max_length`` of a text field of ``model`` (what a value is checked against before it is stored)."""
    field = model._meta.get_field(field_name)
    if not isinstance(field, models.CharField) or field.max_length is None:
        raise TypeError(f"{model.__name__}.{field_name} is not a text field with a max_length")
    return field.max_length
