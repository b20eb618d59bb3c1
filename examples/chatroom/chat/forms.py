"""The index page's "create a room" form."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.text import slugify

_SLUG_MAX_LENGTH = 50  # SlugField's default max_length


class RoomForm(forms.Form):
    """A room name; ``cleaned_data["slug"]`` is derived from it."""

    name = forms.CharField(max_length=64, strip=True)

    def clean(self) -> dict[str, object]:
        """Derive the slug; the name needs at least one letter or digit."""
        cleaned = super().clean() or {}
        name = cleaned.get("name")
        if isinstance(name, str):
            slug = slugify(name)[:_SLUG_MAX_LENGTH].strip("-")
            if not slug:
                raise ValidationError(
                    "A room name needs at least one letter or digit.", code="no_slug"
                )
            cleaned["slug"] = slug
        return cleaned
