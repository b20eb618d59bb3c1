"""URLs of the admin's live connections page (``trio_djws.dashboard``); include them under
the admin, before ``admin.site.urls``::

    path("admin/trio_djws/", include("trio_djws.urls")),

``/admin/trio_djws/connections/`` (name ``trio_djws:connections``) is then the page; it
needs ``WEBSOCKET_DASHBOARD_PATH``.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from .dashboard import connections_view

__all__ = ["app_name", "urlpatterns"]

app_name = "trio_djws"
urlpatterns: list[URLPattern] = [
    path("connections/", connections_view, name="connections"),
]
