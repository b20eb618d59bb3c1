"""The chatroom's HTML pages, the seeded rooms and WhiteNoise, through Django's test client."""

from __future__ import annotations

import pytest
from chat.models import Room
from django.test import Client


@pytest.mark.django_db(serialized_rollback=True, transaction=True)
def test_index_lists_the_rooms_seeded_by_the_data_migration(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    for slug in ("lobby", "random"):
        assert f'href="/rooms/{slug}/"' in response.content.decode()


@pytest.mark.django_db
def test_creating_a_room_redirects_to_its_page(client: Client) -> None:
    response = client.post("/", {"name": "  Trio Fans!  "})
    assert response.status_code == 302
    assert response["Location"] == "/rooms/trio-fans/"
    assert Room.objects.get(slug="trio-fans").name == "Trio Fans!"


@pytest.mark.django_db
def test_creating_an_existing_room_goes_to_that_room(client: Client) -> None:
    Room.objects.create(slug="lobby-2", name="Lobby 2")
    response = client.post("/", {"name": "lobby 2"})
    assert response["Location"] == "/rooms/lobby-2/"
    assert Room.objects.get(slug="lobby-2").name == "Lobby 2"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["!!!", "   ", "x" * 65])
def test_a_room_name_without_a_slug_or_too_long_is_refused(client: Client, name: str) -> None:
    count = Room.objects.count()
    response = client.post("/", {"name": name})
    assert response.status_code == 200
    assert 'class="error"' in response.content.decode()
    assert Room.objects.count() == count


@pytest.mark.django_db
def test_room_page_carries_its_slug_and_script(client: Client) -> None:
    Room.objects.get_or_create(slug="lobby", defaults={"name": "Lobby"})
    page = client.get("/rooms/lobby/").content.decode()
    assert 'data-slug="lobby"' in page
    assert "/static/chat/room.js" in page
    assert "/static/chat/chat.css" in page


@pytest.mark.django_db
def test_unknown_room_page_is_404(client: Client) -> None:
    assert client.get("/rooms/no-such-room/").status_code == 404


@pytest.mark.parametrize("name", ["room.js", "chat.css"])
def test_static_files_are_served_by_whitenoise(client: Client, name: str) -> None:
    response = client.get(f"/static/chat/{name}")
    assert response.status_code == 200
    assert type(response).__module__.startswith("whitenoise")
