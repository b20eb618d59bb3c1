"""trio_djws.history: positions, the WEBSOCKET_GROUP_HISTORY setting, position merging."""

from __future__ import annotations

import json

import pytest
from django.core import checks
from django.test import override_settings

from trio_djws.exceptions import ConfigurationError
from trio_djws.history import (
    HistoryPolicy,
    Position,
    history_policy,
    json_with_position,
)


def upper_formatter(message: str | bytes, position: Position) -> str | bytes:
    """A formatter for the tests: ``<position> <message>`` for text."""
    if isinstance(message, bytes):
        return message
    return f"{position} {message}"


def test_position_round_trips_through_its_text() -> None:
    position = Position("a1b2", 42)
    assert str(position) == "a1b2:42"
    assert Position.parse(str(position)) == position
    assert position.as_json() == {"epoch": "a1b2", "offset": 42}


@pytest.mark.parametrize(
    "text", ["", "a1b2", ":4", "a1b2:", "a1b2:-1", "a1b2:x", "a b:1", "e:" + "9" * 19]
)
def test_a_malformed_position_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="expected a position"):
        Position.parse(text)


def test_json_with_position_appends_the_member_once_without_reencoding() -> None:
    position = Position("ep", 7)
    merged = json_with_position('{"type": "message", "text": "hi"}', position)
    assert merged == '{"type": "message", "text": "hi", "position": {"epoch": "ep", "offset": 7}}'
    assert json.loads(json_with_position("{}", position)) == {"position": position.as_json()}
    # A "position" of the app's own is overridden (the last of a repeated name wins).
    assert json.loads(json_with_position('{"position": 1}', position))["position"] == {
        "epoch": "ep",
        "offset": 7,
    }
    with pytest.raises(ValueError, match="JSON text of an object"):
        json_with_position("[1, 2]", position)


def test_no_history_by_default() -> None:
    assert history_policy("chat.lobby") is None


@override_settings(
    WEBSOCKET_GROUP_HISTORY={
        "chat.*": {"SIZE": 10, "TTL": 60},
        "*": {"SIZE": 3, "TTL": 5, "FORMATTER": "tests.test_history.upper_formatter"},
    }
)
def test_the_first_matching_pattern_gives_the_policy() -> None:
    chat = history_policy("chat.lobby")
    assert chat == HistoryPolicy(10, 60.0)
    other = history_policy("news")
    assert other is not None and other.size == 3
    assert other.format("hi", Position("e", 1)) == "e:1 hi"
    assert chat.format("hi", Position("e", 1)) == "hi"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"g": {"SIZE": 0, "TTL": 5}}, r"\['SIZE'\] must be an int >= 1 \(messages\), got 0"),
        ({"g": {"SIZE": 5, "TTL": 0.5}}, r"\['TTL'\] must be a number >= 1 \(seconds\)"),
        ({"g": {"SIZE": 5}}, r"\['TTL'\] must be a number >= 1 \(seconds\), got None"),
        ({"g": {"SIZE": 5, "TTL": 5, "MAX": 1}}, r"unknown keys \['MAX'\]"),
        ({"g": {"SIZE": 5, "TTL": 5, "FORMATTER": "no.such.path"}}, "importable dotted path"),
        ({"g": 5}, "must be a dict with 'SIZE'"),
        ({"": {"SIZE": 5, "TTL": 5}}, "keys must be group-name patterns"),
    ],
)
def test_a_bad_policy_is_a_configuration_error_and_a_system_check(
    value: dict[str, object], error: str
) -> None:
    with override_settings(WEBSOCKET_GROUP_HISTORY=value):
        with pytest.raises(ConfigurationError, match=error):
            history_policy("g")
        found = [m for m in checks.run_checks() if m.id == "trio_djws.E060"]
        assert len(found) == 1
        assert "WEBSOCKET_GROUP_HISTORY" in found[0].msg


@override_settings(WEBSOCKET_GROUP_HISTORY=[("g", 1)])
def test_a_group_history_that_is_not_a_dict_is_e001() -> None:
    ids = [m.id for m in checks.run_checks()]
    assert "trio_djws.E001" in ids
    assert "trio_djws.E060" not in ids
