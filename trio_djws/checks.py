"""System checks (``manage.py check``) for the ``WEBSOCKET_*`` settings.

Ids are ``trio_djws.E001``... and are never reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from .conf import PREFIX, Settings, validate

__all__ = ["check_settings"]


@register("trio_djws")
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: object) -> list[CheckMessage]:
    """trio_djws.E001: a ``WEBSOCKET_*`` setting has the wrong type or range."""
    errors: list[CheckMessage] = []
    for f in fields(Settings):
        name = PREFIX + f.name.upper()
        if not hasattr(settings, name):
            continue
        problem = validate(f.name, getattr(settings, name))
        if problem is not None:
            errors.append(
                Error(
                    problem + ".",
                    hint=f"Fix {name}, or remove it for the default "
                    f"{getattr(Settings(), f.name)!r}.",
                    id="trio_djws.E001",
                )
            )
    return errors
