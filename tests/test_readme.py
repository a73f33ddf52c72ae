"""What the README promises that a machine can check: quick start, commands, options."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
import shutil
from pathlib import Path

from tests.conftest import EmulatorFactory
from tests.helpers import CLIENT, stored_profiles
from tests.test_cli_errors import uploader
from uploader.cli import build_parser
from uploader.gen import generate_export

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


# Accepted before or after every command; the Commands section documents them once.
GLOBAL_FLAGS = ("--debug", "-v", "--verbose")


def test_global_flags_are_documented_once() -> None:
    for flag in GLOBAL_FLAGS:
        assert f"`{flag}" in section("Commands"), flag


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
            if flag not in ("-h", "--help", "--progress", *GLOBAL_FLAGS):
                assert flag in section("Quick start") + section("Commands"), flag


def test_performance_section_exists() -> None:
    assert "benchmarks/results" in section("Performance")


def test_exit_codes_match_the_cli() -> None:
    table = section("What a run writes, and how every row is accounted for")
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^\| {code} \| ", table, re.M), code


async def test_resend_recipe_round_trips_a_latin1_export(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """The README's re-send recipe, run as written, stores exactly what the export held."""
    stuck, clean = await emulator_factory(stuck_rate=1.0), await emulator_factory()
    rows = [("K1", "Café crème", "Zoë; ß"), ("K2", "naïve", "a,b\nc"), ("K3", "", "£5")]
    data = "id;tier;note\n" + "".join(f'{i};{t};"{n}"\n' for i, t, n in rows)
    (tmp_path / "export.csv").write_bytes(data.encode("latin-1"))
    config = (
        '[target]\nclient = "{client}"\nbase_url = "{url}"\n'
        '[input]\nencoding = "latin-1"\ndelimiter = ";"\n'
        "[status]\nresubmit_stuck = 0\npoll_initial_s = 0.02\n"
    )
    (tmp_path / "upload.toml").write_text(config.format(url=stuck.base_url, client=CLIENT))
    work = "uploader-runs/export-2b45639867"  # the work dir the recipe copies from
    first = await uploader(
        "run", "export.csv", "--config", "upload.toml", "--work-dir", work,
        "--progress", "none", cwd=tmp_path,
    )  # fmt: skip
    assert first.code == 1, first.stderr
    failed = (tmp_path / work / "failed.csv").read_bytes()
    back = csv.reader(io.StringIO(failed.decode("latin-1"), newline=""), delimiter=";")
    assert [tuple(r) for r in back] == [("id", "tier", "note"), *rows]
    (tmp_path / "upload.toml").write_text(config.format(url=clean.base_url, client=CLIENT))
    recipe = fenced_blocks(section("Recipes").split("### Re-send failed.csv")[1])[0]
    assert recipe[0].startswith("cp ")
    src, dst = shlex.split(recipe[0])[1:]
    shutil.copy(tmp_path / src, tmp_path / dst)
    args = shlex.split(recipe[1])
    assert args[0] == "uploader"
    second = await uploader(*args[1:], "--progress", "none", cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert stored_profiles(clean, [r[0] for r in rows]) == {
        rid: {k: v for k, v in (("tier", tier), ("note", note)) if v} for rid, tier, note in rows
    }


def all_options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = [(parser.prog, a) for a in parser._actions if a.option_strings]
    for sub in commands(parser).values():
        found += [(sub.prog, a) for a in sub._actions if a.option_strings]
    return found


def test_help_shows_every_default_in_one_style() -> None:
    for prog, action in all_options(build_parser()):
        text = action.help or ""
        if "default" in text:
            assert "(default: " in text, (prog, action.option_strings, text)
        if action.default not in (None, False, argparse.SUPPRESS) and action.help:
            assert "(default: " in text, (prog, action.option_strings, text)
    port = next(
        a
        for p, a in all_options(build_parser())
        if p.endswith("emulator") and "--port" in a.option_strings
    )
    assert "(default: 0 = any free port" in (port.help or "")


def test_every_emulator_option_is_documented() -> None:
    emu = commands(build_parser())["emulator"]
    for action in emu._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert f"`{flag}" in README, flag


def test_status_help_states_the_exit_codes() -> None:
    text = commands(build_parser())["status"].format_help()
    assert "exit codes" in text
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^  {code}  \S", text, re.M), code


def test_readme_says_what_the_tool_does_itself() -> None:
    assert "does not lock" not in README  # it does: a second run on a work dir is refused
    assert "detected from the content" in README  # gzip: the magic bytes, not the name


def test_every_verify_option_is_documented() -> None:
    verify = commands(build_parser())["verify"]
    for action in verify._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help", "--progress", *GLOBAL_FLAGS):
                assert flag in section("Checking a load"), flag


async def test_report_example_has_the_keys_of_a_real_report(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """The report.json block parses back and names every key a run writes, in order."""
    block = section("What a run writes, and how every row is accounted for")
    example = json.loads(re.search(r"\*\*report.json\*\*.*?```json\n(.*?)```", block, re.S)[1])
    emu = await emulator_factory()
    generate_export(tmp_path / "export.csv", 20, seed=1)
    r = await uploader(
        "run", "export.csv", "--client", CLIENT, "--base-url", emu.base_url, "--work-dir", "w",
        "--progress", "none", cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    real = json.loads((tmp_path / "w" / "report.json").read_text())
    assert list(example) == list(real)
    for key in ("rows", "batches", "requests", "outputs", "settings"):
        assert list(example[key]) == list(real[key]), key
