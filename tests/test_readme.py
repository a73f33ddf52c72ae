"""What the README promises that a machine can check: quick start, commands, options."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from uploader.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
QUICK_START = [
    'python -m pip install -e ".[test]" && uploader demo',
    "python -m pytest",
]


def section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def fenced_blocks(text: str) -> list[list[str]]:
    return [
        [line for line in block.splitlines() if line.strip()]
        for block in re.findall(r"^```[\w-]*\n(.*?)^```", text, re.M | re.S)
    ]


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_quick_start_is_exactly_two_commands() -> None:
    blocks = fenced_blocks(section("Quick start"))
    assert blocks[0] == QUICK_START


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines()]
    assert QUICK_START[1] in lines
    # CI installs the way the README does (quietly).
    install = shlex.split(QUICK_START[0].split(" && ")[0])
    assert any(
        [token for token in shlex.split(line) if token != "--quiet"] == install
        for line in lines
        if line and not line.startswith("#")
    )


def test_every_command_is_documented() -> None:
    for name in commands(build_parser()):
        assert f"`uploader {name}" in README, name


def test_every_run_option_is_documented() -> None:
    run = commands(build_parser())["run"]
    for action in run._actions:
        for flag in action.option_strings:
            if flag in ("-h", "--help"):
                continue
            assert flag in README, flag


def test_every_demo_option_is_documented() -> None:
    demo = commands(build_parser())["demo"]
    for action in demo._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help", "--progress"):
                assert flag in section("Quick start") + section("Commands"), flag


def test_performance_section_exists() -> None:
    assert "benchmarks/results" in section("Performance")


def test_exit_codes_match_the_cli() -> None:
    table = section("What a run writes, and how every row is accounted for")
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^\| {code} \| ", table, re.M), code
