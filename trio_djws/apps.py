"""The ``trio_djws`` Django app: registers system checks and the ORM guard."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["TrioDjwsConfig"]


class TrioDjwsConfig(AppConfig):
    """Add ``"trio_djws"`` to ``INSTALLED_APPS`` for ``manage.py serve`` and the checks."""

    name = "trio_djws"
    verbose_name = "trio-djws WebSockets"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .threads import install_orm_guard

        install_orm_guard()
