"""The chat app: rooms, messages, the HTML pages and the ``/ws/chat/<slug>/`` handler."""
