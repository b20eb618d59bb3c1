"""Django settings for the library's test suite."""

from __future__ import annotations

import hashlib
import os
import tempfile

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.urls"
INSTALLED_APPS = [
    "trio_djws",  # first: its runserver (WebSockets) wins over staticfiles'
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "tests",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TESTS_SQLITE_PATH", ":memory:"),
    }
}
TEMPLATES = [  # the signals tests' page (tests/templates)
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# A cache every process shares (one per checkout): tests.hardening_handlers uses connection
# tickets, consumed once in it (a per-process cache is warning W090, and manage.py serve
# --workers N refuses it: E090).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.path.join(
            tempfile.gettempdir(),
            "trio-djws-tests-cache-" + hashlib.sha256(__file__.encode()).hexdigest()[:12],
        ),
    }
}
WEBSOCKET_HANDLERS = ["tests.handlers", "tests.auth_handlers", "tests.hardening_handlers"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"connection": {"()": "trio_djws.log.ConnectionContextFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["connection"]}},
    "loggers": {"trio_djws": {"handlers": ["console"], "level": "INFO"}},
}
