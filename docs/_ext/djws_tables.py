"""Two directives that build reference tables from the source, so they are never out of date.

- ``{websocket-settings}``: every field of ``trio_djws.conf.Settings`` as the Django setting
  ``WEBSOCKET_<FIELD>``, with the type and unit the validator expects, the default, and the
  comment beside the field in ``trio_djws/conf.py``.
- ``{management-commands}``: each command's help and its own options, from its parser.
- ``{system-checks}``: every ``Error``/``Warning`` with an ``id="trio_djws.…"`` constructed in
  ``trio_djws/`` (read with ``ast``, not run), with its level, message and hint as written in the
  source (``{…}`` marks a value filled in at run time).

Both emit MyST markdown tables parsed in place.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

import trio_djws
from trio_djws import conf

PACKAGE = Path(trio_djws.__file__).resolve().parent


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _field_comments() -> dict[str, str]:
    """Field name → its comment in conf.py (on the field's line, else the lines above it)."""
    source = Path(conf.__file__).read_text(encoding="utf-8")
    lines = source.splitlines()
    comments: dict[int, str] = {}  # line → comment
    alone: set[int] = set()  # lines holding only a comment
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
            if not lines[token.start[0] - 1][: token.start[1]].strip():
                alone.add(token.start[0])
    tree = ast.parse(source)
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    text = comments.get(item.end_lineno or item.lineno, "")
                    above = item.lineno - 1
                    if not text:
                        while above in alone:
                            text = comments[above] + (" " + text if text else "")
                            above -= 1
                    found[item.target.id] = text
    return found


class _Unset:
    def __repr__(self) -> str:
        return "…"


def _expected(name: str) -> str:
    problem = conf.validate(name, _Unset()) or ""
    match = re.search(r" must be (.*), got …$", problem)
    return match.group(1) if match else ""


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:  # pragma: no cover - every setting has a default
        return ""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value!r}`"


class WebSocketSettings(SphinxDirective):
    """The table of every ``WEBSOCKET_*`` setting."""

    def run(self) -> list[nodes.Node]:
        comments = _field_comments()
        lines = [
            "| setting | type and unit | default | what it does |",
            "|---|---|---|---|",
        ]
        for field in dataclasses.fields(conf.Settings):
            name = conf.PREFIX + field.name.upper()
            lines.append(
                f"| `{name}` | {_cell(_expected(field.name))} | {_cell(_default(field))} "
                f"| {_cell(comments.get(field.name, ''))} |"
            )
        return self._parse(lines)

    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), 0, container)
        return container.children


def _text(node: ast.expr | None) -> str:
    """A message or hint as written: a literal as is, an f-string with ``{…}`` for values."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "{…}" for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "{…}"


def _checks() -> list[tuple[str, str, str, str, str]]:
    """(id, level, message, hint, module) of every check message in the package, by id."""
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in {"Error", "Warning", "Critical", "Info"}:
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            check_id = keywords.get("id")
            if not (isinstance(check_id, ast.Constant) and isinstance(check_id.value, str)):
                continue
            message = _text(node.args[0] if node.args else keywords.get("msg"))
            module = "trio_djws." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
            rows.append(
                (check_id.value, node.func.id, message, _text(keywords.get("hint")), module)
            )
    return sorted(rows)


class SystemChecks(WebSocketSettings):
    """The table of every system check message."""

    def run(self) -> list[nodes.Node]:
        lines = ["| id | level | message | hint |", "|---|---|---|---|"]
        for check_id, level, message, hint, _module in _checks():
            lines.append(f"| `{check_id}` | {level} | {_cell(message)} | {_cell(hint)} |")
        return self._parse(lines)


class ManagementCommands(WebSocketSettings):
    """Each management command of the package: its help and its own options (``--help``
    without Django's common options), as ``add_arguments`` defines them."""

    def run(self) -> list[nodes.Node]:
        import pkgutil

        from django.core.management import load_command_class
        from django.core.management.base import CommandParser

        from trio_djws.management import commands

        lines: list[str] = []
        for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
            command = load_command_class("trio_djws", info.name)
            parser = CommandParser(prog=f"python manage.py {info.name}", add_help=False)
            command.add_arguments(parser)
            lines += [
                f"## `manage.py {info.name}`",
                "",
                str(command.help),
                "",
                "```text",
                *parser.format_help().rstrip().splitlines(),
                "```",
                "",
            ]
        return self._parse(lines)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("websocket-settings", WebSocketSettings)
    app.add_directive("system-checks", SystemChecks)
    app.add_directive("management-commands", ManagementCommands)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
