"""A URLconf that records the thread importing it (tests/test_state.py)."""

from __future__ import annotations

import threading

from django.urls import path

from .views import lines

IMPORTED_IN = threading.current_thread()

urlpatterns = [path("lines/", lines)]
