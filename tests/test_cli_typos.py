"""A mistyped option or command is named with the nearest one that exists: exit 2, one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli_errors import assert_one_error_line, uploader
from uploader.cli import build_parser


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(list(argv))  # never runs a command
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ("run", "x.csv", "--concurency", "4"),
            "unrecognized argument --concurency (did you mean --concurrency?) "
            "(see 'uploader run --help')",
        ),
        (
            ("run", "x.csv", "--concurency=4", "--progess", "log"),
            "unrecognized arguments --concurency (did you mean --concurrency?), "
            "--progess (did you mean --progress?) (see 'uploader run --help')",
        ),
        (  # the options of the command it was given to: split has no --concurrency
            ("split", "x.csv", "--out", "o", "--max-bach-rows", "5"),
            "unrecognized argument --max-bach-rows (did you mean --max-batch-rows?) "
            "(see 'uploader split --help')",
        ),
        (
            ("status", "w", "--jsn"),
            "unrecognized argument --jsn (did you mean --json?) (see 'uploader status --help')",
        ),
        (
            ("emulator", "--max-inflite", "3"),
            "unrecognized argument --max-inflite (did you mean --max-inflight?) "
            "(see 'uploader emulator --help')",
        ),
        (  # a global flag before the command is suggested from the command's options
            ("--debugg", "run", "x.csv"),
            "unrecognized argument --debugg (did you mean --debug?) (see 'uploader run --help')",
        ),
        (
            ("run", "x.csv", "--zzzzzz"),
            "unrecognized argument --zzzzzz (see 'uploader run --help')",
        ),
        (
            ("run", "x.csv", "y.csv"),
            "unrecognized argument y.csv (see 'uploader run --help')",
        ),
        (
            ("rn", "x.csv"),
            "unknown command 'rn'; did you mean run? (see 'uploader --help')",
        ),
        (
            ("stauts", "w"),
            "unknown command 'stauts'; did you mean status? (see 'uploader --help')",
        ),
        (
            ("xyzzy",),
            "unknown command 'xyzzy'; the commands are run, split, check, submit, status, "
            "report, emulator, demo, verify, bench (see 'uploader --help')",
        ),
        (  # argparse's own messages are unchanged
            ("run",),
            "the following arguments are required: INPUT (see 'uploader run --help')",
        ),
        (
            ("run", "x.csv", "--concurrency", "many"),
            "argument --concurrency: invalid int value: 'many' (see 'uploader run --help')",
        ),
    ],
)
def test_typo_names_the_nearest(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], line: str
) -> None:
    assert usage_error(capsys, *argv) == f"uploader: error: {line}"


async def test_from_the_command_line(tmp_path: Path) -> None:
    r = await uploader("run", "x.csv", "--concurency", "4", cwd=tmp_path)
    assert_one_error_line(r, 2, "unrecognized argument --concurency (did you mean --concurrency?)")
    assert list(tmp_path.iterdir()) == []
