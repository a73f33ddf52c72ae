"""Print pip constraints that pin every declared requirement to its floor.

Reads pyproject.toml (the runtime dependencies and every optional extra) and
turns each ``name>=X`` into ``name==X``, keeping environment markers, so that
``pip install -c`` of the output installs the oldest versions the project
claims to support. A requirement without a ``>=`` floor is an error: a floor
that is never installed is a floor nobody has checked.

Usage: python .ci/min_constraints.py [pyproject.toml] > constraints.txt
Also prints, on stderr, the extras to install (``test,s3,...``).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# name, optional [extras], the specifier list, optional "; marker"
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*"
    r"(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.+))?$"
)


def floors(pyproject: Path) -> tuple[list[str], list[str]]:
    """(constraint lines, extra names) for the project at ``pyproject``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    requirements = list(project.get("dependencies", []))
    for group in extras.values():
        requirements.extend(group)
    lines: dict[str, str] = {}
    problems = []
    for requirement in requirements:
        m = _REQUIREMENT.match(requirement)
        if m is None:
            problems.append(f"cannot read requirement {requirement!r}")
            continue
        name = m.group("name").lower()
        if name == project["name"]:
            continue  # an extra that names another extra of this project
        floor = re.search(r">=\s*([0-9][^,\s]*)", m.group("spec"))
        if floor is None:
            problems.append(f"{requirement!r} has no '>=' floor")
            continue
        marker = f"; {m.group('marker')}" if m.group("marker") else ""
        lines[name] = f"{name}=={floor.group(1)}{marker}"
    if problems:
        raise SystemExit("pyproject.toml: " + "; ".join(problems))
    return sorted(lines.values()), sorted(extras)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")
    lines, extras = floors(path)
    print("\n".join(lines))
    print(",".join(extras), file=sys.stderr)


if __name__ == "__main__":
    main()
