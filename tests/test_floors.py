"""Every requirement in pyproject.toml has a floor that .ci/run can pin and install."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _min_constraints() -> ModuleType:
    path = ROOT / ".ci" / "min_constraints.py"
    spec = importlib.util.spec_from_file_location("min_constraints", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_declared_requirement_is_pinned_to_its_floor() -> None:
    lines, extras = _min_constraints().floors(ROOT / "pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert extras == sorted(project["optional-dependencies"])
    pinned = {line.split("==")[0] for line in lines}
    assert {"aiohttp", "tenacity", "pytest-asyncio", "ruff", "yarl", "multidict"} <= pinned
    assert "aiohttp==3.10.6" in lines
    assert all("==" in line and ">=" not in line for line in lines)


def test_a_requirement_without_a_floor_stops_the_step(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["aiohttp>=3.10.6", "rich"]\n', encoding="utf-8"
    )
    with pytest.raises(SystemExit, match=r"'rich' has no '>=' floor"):
        _min_constraints().floors(tmp_path / "pyproject.toml")


def test_markers_are_kept(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["uvloop>=0.19; sys_platform != \'win32\'"]\n'
        '[project.optional-dependencies]\ns3 = ["s3fs[boto]>=2024.2.0,<2026"]\n',
        encoding="utf-8",
    )
    lines, extras = _min_constraints().floors(tmp_path / "pyproject.toml")
    assert lines == ["s3fs==2024.2.0", "uvloop==0.19; sys_platform != 'win32'"]
    assert extras == ["s3"]
