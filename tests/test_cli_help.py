"""``-v`` is offered where it logs something, and only there; ``verify -v`` logs its retries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import run, write_csv
from tests.test_cli_errors import uploader
from uploader.cli import main

BATCH_LOGS = "log each retry (reason and wait) and each batch accepted, complete or failed"
VERBOSE = {
    "run": BATCH_LOGS,
    "submit": BATCH_LOGS,
    "demo": BATCH_LOGS,
    "bench": BATCH_LOGS,
    "verify": "log each retry of a profile fetch (reason and wait)",
}
QUIET = ("split", "check", "status", "report", "emulator")


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command", [*VERBOSE, *QUIET])
def test_verbose_is_in_the_help_of_the_commands_it_changes(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = _help(capsys, command)
    assert "--debug show tracebacks and debug logs" in text
    if command in VERBOSE:
        assert f"-v, --verbose {VERBOSE[command]}" in text
    else:
        assert "--verbose" not in text and not re.search(r"(^|[\s\[,])-v\b", text)


def test_the_global_verbose_names_the_commands_it_changes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        f"-v, --verbose {BATCH_LOGS} (run, submit, demo, bench, verify; no effect on the others)"
        in _help(capsys)
    )


def test_verbose_after_a_command_without_it_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["split", "in.csv", "--out", "d", "-v"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "uploader: error: unrecognized argument -v (see 'uploader split --help')\n"
    )


async def test_verify_verbose_logs_each_retry_of_a_fetch(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src = write_csv(tmp_path / "export.csv", ["id", "tier"], [["C1", "gold"]])
    await run(emu, src, tmp_path / "w")
    port = int(emu.base_url.rsplit(":", 1)[1])
    await emu.stop()  # the verify finds nothing listening where the run sent its rows
    (tmp_path / "fast.toml").write_text(
        "[submit]\nmax_attempts = 3\nbackoff_initial_s = 0.01\nbackoff_max_s = 0.02\n"
    )
    args = ("verify", "w", "--all", "--config", "fast.toml", "--progress", "none")
    quiet = await uploader(*args, cwd=tmp_path)
    loud = await uploader(*args, "-v", cwd=tmp_path)
    assert quiet.code == loud.code == 3, loud.stderr
    assert "profile fetch" not in quiet.stderr
    retries = [line for line in loud.stderr.splitlines() if "profile fetch: attempt" in line]
    attempts = []
    for line in retries:
        found = re.fullmatch(
            r"\S+ \S+ INFO uploader\.verify\.fetch: profile fetch: attempt (\d) failed "
            rf"\(TransportError: fetch profile 127\.0\.0\.1:{port}: cannot connect: .*\); "
            r"retrying in 0\.0\d s",
            line,
        )
        assert found, line
        attempts.append(int(found.group(1)))
    assert attempts == [1, 2]  # of 3: then the verify stops, the server being unreachable
