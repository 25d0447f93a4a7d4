"""The floors of the house: imports point down only (cli → commands → library and engine → nn), the seam to
ultralytics is engine/, and the pure floors import neither torch nor ultralytics. Read from the source, so a
lazy import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bracli

PACKAGE = Path(bracli.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "_templates" not in p.parts)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


UPPER = ("bracli.cli", "bracli.commands")
# floor -> (what it may never import, why)
RULES = {
    "bracli.nn": (("ultralytics", "bracli.engine", "bracli.templates", "bracli.dataset", "bracli.measure",
                   "bracli.options", "bracli.output", *UPPER), "pure PyTorch: the lowest floor"),
    "bracli.templates": (("torch", "ultralytics", "bracli.engine", "bracli.measure", *UPPER),
                         "pure data: options are checked before torch is imported"),
    "bracli.dataset": (("torch", "ultralytics", "bracli.engine", *UPPER),
                       "runs in worker processes that must stay light"),
    "bracli.measure": (("ultralytics", "bracli.engine", *UPPER), "pure-torch measurement of any module"),
    "bracli.ablation": (("torch", "ultralytics", "bracli.engine", *UPPER), "pure: plans and tables"),
    "bracli.engine": (UPPER, "the seam to ultralytics, below the commands"),
    "bracli.options": (("torch", "ultralytics", "bracli.engine", *UPPER), "checked before anything heavy"),
    "bracli.output": (("torch", "ultralytics", "bracli.engine", *UPPER), "renders results"),
    "bracli.files": (("torch", "ultralytics", "bracli.engine", *UPPER), "atomic writes"),
    "bracli.errors": (("bracli.",), "imported by every floor"),
}


@pytest.mark.parametrize("path", MODULES, ids=[_name(p) for p in MODULES])
def test_imports_point_down(path):
    module = _name(path)
    for floor, (forbidden, why) in RULES.items():
        if _under(module, (floor,)):
            bad = sorted(i for i in _imports(path) if _under(i, forbidden) or
                         any(f.endswith(".") and i.startswith(f) for f in forbidden))
            assert not bad, f"{module} imports {bad}: {floor} is {why}"


def test_only_the_engine_touches_ultralytics():
    """Outside engine/, ultralytics is read as data at most (bracli.formats reads its source text; its import
    fallback first sets the engine's offline environment)."""
    allowed = {"bracli.formats"}
    users = {_name(p) for p in MODULES if any(_under(i, ("ultralytics",)) for i in _imports(p))}
    assert {m for m in users if not _under(m, ("bracli.engine",))} <= allowed
