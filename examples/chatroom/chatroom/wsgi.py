"""WSGI entry point: the HTML pages only, e.g. ``gunicorn chatroom.wsgi:application``. The
chat's WebSockets then come from ``manage.py runwebsocket`` on another port, with
``CHAT_WEBSOCKET_PORT`` set for both (``nox -s chatroom_standalone``), or from the ASGI
application (``chatroom.asgi``) on Hypercorn's trio worker (``nox -s chatroom``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatroom.settings")

application = get_wsgi_application()
