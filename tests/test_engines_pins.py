"""The engines' library pins (trio_djws/engines/pins.py): the installed releases pass, and
another release fails loudly, naming what moved and what to install."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from trio_djws.conf import ENGINES
from trio_djws.engines import get_engine
from trio_djws.engines.pins import PINS, check_engine, check_pin

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_installed_libraries_pass_their_engines_checks(engine: str) -> None:
    check_engine(engine)
    for pin in PINS[engine]:
        check_pin(pin)
    assert get_engine(engine).name == engine


def test_a_release_outside_the_tested_series_fails_naming_the_requirement() -> None:
    pin = replace(PINS["websockets"][0], series="99.")
    with pytest.raises(RuntimeError, match=r"tested on websockets 99\.x, but websockets 17\."):
        check_pin(pin)
    with pytest.raises(RuntimeError, match=r"install 'websockets>=17,<18'"):
        check_pin(pin)


def test_a_moved_private_attribute_fails_naming_it() -> None:
    pin = replace(PINS["trio_websocket"][0], probes=(("WebSocketConnection._gone", lambda: False),))
    with pytest.raises(
        RuntimeError, match=r"trio-websocket 0\.12\.\d+ no longer has WebSocketConnection\._gone"
    ):
        check_pin(pin)


def test_every_pin_is_a_dependency_of_the_package() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    for pins in PINS.values():
        for pin in pins:
            assert pin.requirement in dependencies, pin.requirement
