"""redis-py's sync clients for publish() outside a server (trio_djws/brokers/sync_clients.py)."""

from __future__ import annotations

from trio_djws.brokers.sync_clients import reset_sync_clients, sync_client


def test_sync_clients_are_pooled_per_process_and_url() -> None:
    reset_sync_clients()
    first = sync_client("redis://127.0.0.1:1/0")
    assert sync_client("redis://127.0.0.1:1/0") is first
    assert sync_client("redis://127.0.0.1:1/1") is not first
    reset_sync_clients()
    assert sync_client("redis://127.0.0.1:1/0") is not first
    reset_sync_clients()
