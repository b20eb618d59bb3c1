from __future__ import annotations

from django.urls import URLPattern, path

from tests import views

urlpatterns: list[URLPattern] = [
    path("meta/<str:word>/", views.meta, name="meta"),
    path("upload/", views.upload),
    path("upload-file/", views.upload_file),
    path("lines/", views.lines),
    path("stream/<str:key>/", views.stream),
    path("file/", views.file),
    path("fail/", views.fail),
    path("stream-fail/", views.stream_fail),
]
