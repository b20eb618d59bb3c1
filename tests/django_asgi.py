"""An ``asgi.py`` as ``django-admin startproject`` writes it: read (never imported) by the
ASGI-module check in tests/test_project.py."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

application = get_asgi_application()
