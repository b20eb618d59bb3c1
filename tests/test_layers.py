"""The layering rules that lint cannot see: no module of the library imports another module's
private name (``from .x import _name``; ruff's SLF001 sees attribute access only), the
README's layer map is the docs' one and names every layer of the import-linter contract
(pyproject.toml, ``lint-imports`` in ``nox -s lint``), and a module over 450 lines says why."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Final

import pytest

REPO: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = REPO / "trio_djws"
SOURCES: Final = sorted([*PACKAGE.rglob("*.py"), *(REPO / "handlers").rglob("*.py")])


def _module_of(path: Path) -> list[str]:
    # handlers/ is installed as trio_djws.handlers (pyproject package-dir).
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    if parts[0] == "handlers":
        parts = ["trio_djws", *parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_module(dotted: list[str]) -> bool:
    # Whether trio_djws.a.b names a module or package (importing a module is not a name).
    parts = dotted[1:]
    if parts and parts[0] == "handlers":
        base = REPO.joinpath("handlers", *parts[1:])
    else:
        base = PACKAGE.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def private_imports(path: Path) -> list[str]:
    """``module:line imports name from module`` for each private name ``path`` imports from
    another module of the library."""
    return private_imports_in(path.read_text(encoding="utf-8"), _module_of(path), path.name)


def private_imports_in(source: str, module: list[str], filename: str) -> list[str]:
    package = module if filename == "__init__.py" else module[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            source_module = [*base, *(node.module.split(".") if node.module else [])]
        elif node.module and node.module.split(".")[0] == "trio_djws":
            source_module = node.module.split(".")
        else:
            continue  # another library's names: pinned and checked where they are used
        for alias in node.names:
            if alias.name.startswith("_") and not _is_module([*source_module, alias.name]):
                found.append(
                    f"{'.'.join(module)}:{node.lineno} imports {alias.name} from "
                    f"{'.'.join(source_module)}"
                )
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_another_modules_private_name(path: Path) -> None:
    assert private_imports(path) == []


def test_the_private_import_check_sees_relative_and_absolute_imports() -> None:
    source = (
        "from ..threads import _db_limiter\n"
        "from trio_djws.origins import _x, allowed\n"
        "from . import wire\n"
    )
    assert private_imports_in(source, ["trio_djws", "signals", "probe"], "probe.py") == [
        "trio_djws.signals.probe:1 imports _db_limiter from trio_djws.threads",
        "trio_djws.signals.probe:2 imports _x from trio_djws.origins",
    ]


def _layer_map(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    start, end = "<!-- layer-map:start -->", "<!-- layer-map:end -->"
    return text[text.index(start) : text.index(end)]


def test_the_readme_layer_map_is_the_docs_one_and_names_every_layer_module() -> None:
    readme = _layer_map(REPO / "README.md")
    assert readme == _layer_map(REPO / "docs" / "explanation" / "layers.md")
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [
        contract["layers"]
        for contract in config["tool"]["importlinter"]["contracts"]
        if contract["type"] == "layers"
    ]
    words = set(re.findall(r"[\w/]+", readme))
    for layer in layers:
        for module in re.split(r"[|:]", layer):
            name = module.strip().strip("()")
            assert name in words or f"{name}/" in words, name


MAX_LINES: Final = 450
WHY: Final = "Why one module of more than 450 lines"


def says_why(source: str) -> bool:
    """Whether a module's docstring has a paragraph starting with ``WHY``."""
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return any(paragraph.startswith(WHY) for paragraph in docstring.split("\n\n"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_a_module_over_450_lines_says_why(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= MAX_LINES or says_why(source), (
        f"{path.relative_to(REPO)} has {lines} lines: split it (one concept per module), or "
        f"add a paragraph starting {WHY!r} to its docstring"
    )


def test_the_reason_is_a_paragraph_of_the_docstring() -> None:
    assert says_why(f'"""Title.\n\n{WHY}: the reason.\n"""\n')
    assert not says_why(f'"""Title.\n\nNo {WHY.lower()}.\n"""\n')
    assert not says_why(f'"""Title."""\n# {WHY}: in a comment\n')
