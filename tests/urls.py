from __future__ import annotations

from django.contrib.staticfiles.views import serve
from django.urls import URLPattern, path

from tests import signals_views, views, ws_views
from trio_djws.metrics import metrics_view

urlpatterns: list[URLPattern] = [
    path("meta/<str:word>/", views.meta, name="meta"),
    path("upload/", views.upload),
    path("upload-file/", views.upload_file),
    path("lines/", views.lines),
    path("stream/<str:key>/", views.stream),
    path("file/", views.file),
    path("fail/", views.fail),
    path("stream-fail/", views.stream_fail),
    path("session/<str:key>/", ws_views.session_value),
    path("dws/echo_once/", ws_views.echo_once),
    path("dws/lower_case/", ws_views.lower_case),
    path("dws/api/", ws_views.api),
    path("dws/wait/", ws_views.wait_forever),
    path("dws/hold/", ws_views.hold),
    path("dws/silent/", ws_views.silent),
    path("dws/forbidden/", ws_views.forbidden),
    path("dws/plain/", ws_views.plain),
    path("dws/flagged/", ws_views.flagged),
    path("dws/notify/", ws_views.notify),
    path("echo/", ws_views.echo_once),
    path("signals/page/<int:group>/", signals_views.page),
    path("signals/notify/<int:group>/", signals_views.notify),
    path("metrics/", metrics_view),
    path(
        "static/<path:path>", serve, {"insecure": True}
    ),  # shadowed by the @Namespace("/echo/") handler
]
