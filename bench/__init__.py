"""The benchmark suite against Django Channels: ``python -m bench`` (``nox -s bench``)."""
