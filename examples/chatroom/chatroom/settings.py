"""Django settings of the chatroom example.

Environment variables:

- ``DATABASE_URL``: the database as a URL (dj-database-url), e.g.
  ``postgres://postgres@127.0.0.1:5432/chat``; SQLite in ``db.sqlite3`` next to
  ``manage.py`` by default.
- ``DJANGO_DEBUG``: ``1`` (the default) or ``0``.
- ``DJANGO_SECRET_KEY``: required in any real deployment; a fixed demo key otherwise.
- ``DJANGO_ALLOWED_HOSTS``: comma-separated; also decides which ``Origin`` a WebSocket
  handshake may carry (``trio_djws.origins``).
- ``REDIS_URL``: e.g. ``redis://127.0.0.1:6379/0``; when set, rooms and presence are shared
  by every server process through Redis (``trio_djws.brokers.RedisBroker``), so
  ``manage.py serve --workers 2`` (or several machines) behave as one chatroom. Unset: the
  in-memory broker, one process.
- ``CHAT_WEBSOCKET_PORT``: the port of a separate WebSocket server (``manage.py
  runwebsocket`` beside gunicorn: ``nox -s chatroom_standalone``); the room page connects its
  socket there, on its own host name. Unset: the page's own host and port (``manage.py serve``).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "chatroom-demo-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = [
    "trio_djws",  # first: its runserver (WebSockets) wins over staticfiles'
    "django.contrib.admin",  # and trio_djws' live connections page under it
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatroom.urls"
ASGI_APPLICATION = "chatroom.asgi.application"
WSGI_APPLICATION = "chatroom.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chat.context_processors.websocket",
            ]
        },
    }
]

# CONN_MAX_AGE stays 0: every ORM call runs in a worker thread of trio_djws's DB limiter,
# and close_old_connections() after the call then closes its connection (a connection
# left open in an idle worker thread would outlive the thread).
DATABASES = {
    "default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several worker threads write at once: take the write lock at BEGIN and wait for it up
    # to 20 seconds instead of failing with "database is locked" (Django's SQLite notes).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

# WhiteNoise serves the app's static files straight from the finders (no collectstatic
# step), re-scanning them on each request while DEBUG is on.
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Django's login page (django.contrib.auth.urls at /accounts/); the chat handler reads the
# session cookie on the handshake through WEBSOCKET_MIDDLEWARE (its default: SessionMiddleware
# and AuthenticationMiddleware) and uses websocket.user.username as the author.
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
# Tests only: post_migrate recreates these after each flush, so a serialized_rollback test
# must not restore them too (Django's documented setting for this clash).
TEST_NON_SERIALIZED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]

# A chat message is at most 2000 characters; 64 KiB leaves room for JSON escapes.
# Larger frames are closed with 1009 (RFC 6455 §7.4.1) by Hypercorn itself.
WEBSOCKET_MAX_MESSAGE_SIZE = 64 * 1024

# A client posting faster than this (messages per second, after a burst of 20) is closed
# with 1008 "rate limit". CHAT_RATE_LIMIT=off lifts it (the benchmark's load generator).
_rate = os.environ.get("CHAT_RATE_LIMIT", "10")
WEBSOCKET_RATE_LIMIT = None if _rate == "off" else float(_rate)
WEBSOCKET_RATE_BURST = 20

# Rooms keep their last 500 messages (a day after the last one) in the broker, so a page that
# lost its socket for a moment reconnects with ?since=<epoch>:<offset> and gets exactly what
# it missed (chat/websockets.py).
WEBSOCKET_GROUP_HISTORY = {"chat.*": {"SIZE": 500, "TTL": 24 * 3600}}

if os.environ.get("REDIS_URL"):
    WEBSOCKET_BROKER = {
        "BACKEND": "trio_djws.brokers.RedisBroker",
        "CONFIG": {"url": os.environ["REDIS_URL"], "prefix": "chatroom"},
    }

# The live connections page (staff only): /admin/trio_djws/connections/ shows every room's
# group, presence and connections as they change, fed over this WebSocket of its own.
WEBSOCKET_DASHBOARD_PATH = "/ws/trio_djws/dashboard/"

# Standalone mode: the WebSocket server's port, if not the page's own (see the docstring).
_ws_port = os.environ.get("CHAT_WEBSOCKET_PORT", "")
CHAT_WEBSOCKET_PORT = int(_ws_port) if _ws_port else None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"connection": {"()": "trio_djws.log.ConnectionContextFilter"}},
    # trio_djws' lines name their connection themselves; the app's lines get its id from the
    # connection context (trio_djws.log), so that every line shows the id exactly once.
    "formatters": {
        "library": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "app": {"format": "%(asctime)s %(levelname)s %(name)s [%(websocket_id)s] %(message)s"},
    },
    "handlers": {
        "library": {"class": "logging.StreamHandler", "formatter": "library"},
        "app": {
            "class": "logging.StreamHandler",
            "filters": ["connection"],
            "formatter": "app",
        },
    },
    "loggers": {
        "trio_djws": {"handlers": ["library"], "level": "INFO"},
        "chat": {"handlers": ["app"], "level": "INFO"},
    },
}
