"""Pins the public API (as trio's _tests/test_exports.py does); changes need a changelog line.

And the public/private line of every module: a module is internal (its name or a parent
package's starts with ``_``, or ``__all__ == []``, and its docstring starts with "Internal:"),
Django glue whose interface is a string Django loads (documented where Django users look for
it), or public, and then every name in its ``__all__`` is reachable from the API reference
(docs/reference/api.md).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest
import trio_djws.handlers

import trio_djws

REPO: Final = Path(__file__).resolve().parent.parent
DOCS: Final = REPO / "docs"


def test_public_names() -> None:
    assert trio_djws.__all__ == [
        "BaseMixin",
        "BaseWSClass",
        "Block",
        "BrokerError",
        "CloseCode",
        "ConfigurationError",
        "ConnectionClosed",
        "DjangoMiddlewareMixin",
        "JoinResult",
        "Message",
        "Namespace",
        "Position",
        "Reject",
        "TrioDjwsError",
        "WebSocket",
        "database_sync_to_thread",
        "presence",
        "publish",
        "publish_json",
        "publish_on_commit",
        "send_group_json",
        "send_to_group",
        "to_thread",
        "user_group",
    ]
    for name in trio_djws.__all__:
        assert hasattr(trio_djws, name)


def test_close_codes_come_from_wsproto() -> None:
    assert trio_djws.CloseCode.POLICY_VIOLATION == 1008
    assert trio_djws.CloseCode.INTERNAL_ERROR == 1011


# -- the public/private line -------------------------------------------------------------------


def _module_names() -> Iterator[str]:
    for package in (trio_djws, trio_djws.handlers):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            yield info.name


MODULES: Final = sorted(set(_module_names()))


def _directives() -> list[tuple[str, str, dict[str, str]]]:
    """(directive, target, options) of each autodoc directive in docs/reference/api.md."""
    text = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    found: list[tuple[str, str, dict[str, str]]] = []
    for line in text.splitlines():
        if match := re.match(r"\.\. (auto\w+):: ([\w.]+)\s*$", line):
            found.append((match[1], match[2], {}))
        elif found and (option := re.match(r"\s+:([\w-]+):\s*(.*)$", line)):
            found[-1][2][option[1]] = option[2]
    return found


def _split(names: str) -> set[str]:
    return {name.strip() for name in names.split(",") if name.strip()}


def _documented() -> tuple[dict[str, set[str]], list[object]]:
    """The names each documented module's reference shows (``automodule``, honouring
    ``:members:`` and ``:exclude-members:``), and the objects documented one by one
    (``autoclass``, ``autofunction``, ...)."""
    modules: dict[str, set[str]] = {
        # The API page says everything importable from trio_djws itself is in its __all__,
        # which test_public_names pins: the top level is documented as a whole.
        "trio_djws": set(trio_djws.__all__),
    }
    objects: list[object] = []
    for directive, target, options in _directives():
        if directive == "automodule":
            module = importlib.import_module(target)
            names = set(module.__all__)
            if options.get("members"):
                names &= _split(options["members"])
            names -= _split(options.get("exclude-members", ""))
            modules[target] = modules.get(target, set()) | names
        else:
            module_name, _, name = target.rpartition(".")
            objects.append(getattr(importlib.import_module(module_name), name))
    return modules, objects


def _internal(name: str) -> bool:
    module = importlib.import_module(name)
    return any(part.startswith("_") for part in name.split(".")) or module.__all__ == []


def _glue_commands(module: ModuleType) -> list[str]:
    # docs/reference/commands.md renders every command of this package from its parser.
    text = (DOCS / "reference" / "commands.md").read_text(encoding="utf-8")
    package = importlib.import_module("trio_djws.management.commands")
    listed = {info.name for info in pkgutil.iter_modules(package.__path__)}
    ok = "```{management-commands}" in text and module.__name__.rpartition(".")[2] in listed
    return [] if ok else [f"{module.__name__} is not in docs/reference/commands.md"]


def _glue_checks(module: ModuleType) -> list[str]:
    # Each check id this module raises has its paragraph in docs/reference/checks.md.
    text = (DOCS / "reference" / "checks.md").read_text(encoding="utf-8")
    source = Path(module.__file__ or "").read_text(encoding="utf-8")
    ids = re.findall(r"""id=["']trio_djws\.([EW]\d{3})["']""", source)
    missing = [check_id for check_id in ids if f"**{check_id}**" not in text]
    return [f"{module.__name__}: {check_id} has no paragraph in checks.md" for check_id in missing]


def _glue_mentioned(*needles: str) -> Callable[[ModuleType], list[str]]:
    # The string a project writes to use the module appears in the docs.
    def check(module: ModuleType) -> list[str]:
        pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
        return [f"{module.__name__}: {n} is not in the docs" for n in needles if n not in pages]

    return check


def _glue_package(module: ModuleType) -> list[str]:
    # A package Django looks up by its name; it defines nothing.
    return [] if module.__all__ == [] else [f"{module.__name__} defines {module.__all__}"]


# Django glue: modules whose interface is a string Django (or Celery) loads, not an import; each
# with the reason and the check that its interface is documented where a Django user looks.
GLUE: Final[dict[str, tuple[str, Callable[[ModuleType], list[str]]]]] = {
    "trio_djws.apps": (
        'Django loads TrioDjwsConfig from "trio_djws" in INSTALLED_APPS',
        _glue_mentioned('"trio_djws"', "INSTALLED_APPS"),
    ),
    "trio_djws.checks": ("Django runs the checks it registers", _glue_checks),
    "trio_djws.project": ("Django runs the checks apps.ready registers", _glue_checks),
    "trio_djws.management": ("Django looks up management/ by name", _glue_package),
    "trio_djws.management.commands": ("Django looks up commands/ by name", _glue_package),
    "trio_djws.templatetags": ("Django looks up templatetags/ by name", _glue_package),
    "trio_djws.templatetags.trio_djws": (
        "{% load trio_djws %} loads it",
        _glue_mentioned("{% websocket_script", "{% js_call"),
    ),
    "trio_djws.urls": (
        'include("trio_djws.urls") loads it',
        _glue_mentioned('include("trio_djws.urls")'),
    ),
    "trio_djws.tasks": (
        "Celery registers the task by its name",
        _glue_mentioned("trio_djws.run_signal"),
    ),
}
COMMANDS: Final = [m for m in MODULES if m.startswith("trio_djws.management.commands.")]


def _glue(name: str) -> tuple[str, Callable[[ModuleType], list[str]]] | None:
    if name in COMMANDS:
        return ("manage.py loads each command's Command by the module's name", _glue_commands)
    return GLUE.get(name)


def test_every_module_declares_all() -> None:
    assert [m for m in MODULES if not hasattr(importlib.import_module(m), "__all__")] == []


@pytest.mark.parametrize("name", MODULES)
def test_module_is_internal_glue_or_reachable_from_the_api_reference(name: str) -> None:
    module = importlib.import_module(name)
    first_line = (module.__doc__ or "").strip().splitlines()[0]
    if glue := _glue(name):
        _reason, check = glue
        assert check(module) == []
        return
    if _internal(name):
        assert first_line.startswith("Internal:"), f"{name} is internal: {first_line!r}"
        return
    assert not first_line.startswith("Internal:"), f"{name} says Internal but exports names"
    modules, objects = _documented()
    unreachable = []
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if attribute in modules.get(name, set()) or any(value is o for o in objects):
            continue
        if not any(
            attribute in names and getattr(importlib.import_module(other), attribute) is value
            for other, names in modules.items()
        ):
            unreachable.append(attribute)
    assert not unreachable, (
        f"{name} exports {unreachable}, which no module of docs/reference/api.md documents: "
        "document them, drop them from __all__, or mark the module internal"
    )


def test_the_glue_modules_are_modules() -> None:
    assert set(GLUE) <= set(MODULES)


def test_every_documented_target_imports() -> None:
    modules, objects = _documented()
    assert set(modules) <= set(MODULES)
    assert all(o is not None for o in objects)
