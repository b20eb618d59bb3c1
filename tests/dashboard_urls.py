"""URLs for tests/dashboard_settings.py: the admin, with the live connections page first, and
the admin's static files (served by Django here, as DEBUG is off)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/trio_djws/", include("trio_djws.urls")),
    path("admin/", admin.site.urls),
    path("static/<path:path>", serve, {"insecure": True}),
]
