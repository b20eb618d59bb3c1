"""Settings for the live connections page test (tests/test_dashboard.py): the launcher's
settings (``LAUNCHER_TEST_SETTINGS`` overrides) plus Django's admin and the dashboard socket."""

from __future__ import annotations

from tests.launcher_settings import *  # noqa: F403
from tests.launcher_settings import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = ["django.contrib.admin", "django.contrib.messages", *INSTALLED_APPS]
MIDDLEWARE = [*MIDDLEWARE, "django.contrib.messages.middleware.MessageMiddleware"]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "tests.dashboard_urls"
WEBSOCKET_DASHBOARD_PATH = "/ws/dashboard/"
# Two logins per test on a busy machine: a fast hasher (test-only).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
