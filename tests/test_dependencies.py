"""Every runtime dependency in pyproject.toml is imported by the package: none sits unused."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# distribution name -> the module it provides, where the two differ
MODULES: dict[str, str] = {}


def imported_modules() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "uploader").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", spec)
    assert match, spec
    return match.group(0).lower()


def test_every_runtime_dependency_is_imported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    used = imported_modules()
    names = [requirement_name(spec) for spec in project["dependencies"]]
    assert "aiofiles" in names  # batch bodies are read through it (client.py)
    for name in names:
        module = MODULES.get(name, name.replace("-", "_"))
        assert module in used, f"{name} is a dependency but no module of uploader imports it"
