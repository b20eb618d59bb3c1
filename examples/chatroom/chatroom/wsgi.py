"""WSGI entry point: the HTML pages only. The chat's WebSockets need the ASGI application
(``chatroom.asgi``) on Hypercorn's trio worker."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatroom.settings")

application = get_wsgi_application()
