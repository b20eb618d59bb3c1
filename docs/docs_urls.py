"""URLconf of the docs' settings: the samples serve no HTTP views."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
