"""What a user sees when something is wrong: one clear line, the documented exit code.

Each test runs the real command line in a subprocess (``python -m uploader``)
and checks stderr line by line: no traceback, exactly one ``uploader: error:``
line, and nothing sent when the exit code is 2. Servers are the in-process
emulator on 127.0.0.1; the test's event loop keeps serving it while the
subprocess runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from uploader.gen import generate_export

ERROR = "uploader: error: "


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    def error_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith(ERROR)]


async def uploader(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 60
) -> Result:
    """``python -m uploader ARGS`` in ``cwd``, without the token unless ``env`` gives one."""
    environ = {k: v for k, v in os.environ.items() if k != "TARGET_PROFILE_TOKEN"}
    environ.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uploader",
        *args,
        cwd=cwd,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def run_in_w(
    tmp_path: Path, source: str, base_url: str, *flags: str, env: dict[str, str] | None = None
) -> Result:
    """``uploader run SOURCE --client demo --base-url URL --work-dir w --progress none FLAGS``."""
    return await uploader(
        "run", source, "--client", "demo", "--base-url", base_url,
        "--work-dir", "w", "--progress", "none", *flags, cwd=tmp_path, env=env,
    )  # fmt: skip


def assert_one_error_line(r: Result, code: int, text: str) -> str:
    """Exactly one line, which is the error, and it says ``text``."""
    assert "Traceback" not in r.stderr
    assert r.code == code, r.stderr
    assert len(r.lines) == 1, r.stderr
    line = r.lines[0]
    assert line.startswith(ERROR)
    assert text in line, line
    return line


def small_export(tmp_path: Path, rows: int = 50) -> Path:
    return generate_export(tmp_path / "export.csv", rows, seed=1).path


def report(work_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((work_dir / "report.json").read_text())
    return data


# -- usage, configuration and input errors: exit 2, nothing sent --------------------------


async def test_missing_input_file(tmp_path: Path) -> None:
    r = await uploader("run", "nope.csv", "--client", "demo", "--work-dir", "w", cwd=tmp_path)
    assert_one_error_line(r, 2, "nope.csv: no such file")
    assert not (tmp_path / "w").exists()  # nothing is created for an input that does not open


async def test_missing_client(tmp_path: Path) -> None:
    small_export(tmp_path)
    r = await uploader("run", "export.csv", cwd=tmp_path)
    assert_one_error_line(r, 2, "target.client is required")


async def test_empty_file_has_no_header(tmp_path: Path, emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory()
    (tmp_path / "empty.csv").write_bytes(b"")
    r = await run_in_w(tmp_path, "empty.csv", emu.base_url)
    assert_one_error_line(r, 2, "empty.csv: empty file (no header)")
    assert emu.stats()["submits"] == 0
    assert report(tmp_path / "w")["status"] == "error"


async def test_unknown_config_key(tmp_path: Path) -> None:
    small_export(tmp_path)
    (tmp_path / "c.toml").write_text('[submit]\nconcurency = 4\n[target]\nclient = "demo"\n')
    r = await uploader("run", "export.csv", "--config", "c.toml", cwd=tmp_path)
    assert_one_error_line(r, 2, "c.toml: unknown config key submit.concurency")


async def test_token_in_config_file_is_refused(tmp_path: Path) -> None:
    small_export(tmp_path)
    (tmp_path / "c.toml").write_text('[target]\nclient = "demo"\ntoken = "secret"\n')
    r = await uploader("run", "export.csv", "--config", "c.toml", cwd=tmp_path)
    line = assert_one_error_line(r, 2, "unknown config key target.token")
    assert "environment" in line
    assert "secret" not in r.stderr


async def test_concurrency_zero(tmp_path: Path) -> None:
    small_export(tmp_path)
    r = await uploader("run", "export.csv", "--client", "demo", "--concurrency", "0", cwd=tmp_path)
    assert_one_error_line(r, 2, "submit.concurrency must be greater than 0; got 0")


async def test_batch_rows_above_target_limit(tmp_path: Path) -> None:
    small_export(tmp_path)
    r = await uploader(
        "run", "export.csv", "--client", "demo", "--max-batch-rows", "600000", cwd=tmp_path
    )
    assert_one_error_line(r, 2, "batch.max_rows 600000 is above Target's limit of 500000 rows")


async def test_plain_http_to_remote_host(tmp_path: Path) -> None:
    small_export(tmp_path)
    r = await uploader(
        "run", "export.csv", "--client", "demo", "--base-url", "http://example.com", cwd=tmp_path
    )
    assert_one_error_line(r, 2, "uses plain http to a non-loopback host")


async def test_status_without_journal(tmp_path: Path) -> None:
    r = await uploader("status", "nowhere", cwd=tmp_path)
    assert_one_error_line(r, 2, "nowhere: no journal here")


async def test_bad_flag_type_is_one_line(tmp_path: Path) -> None:
    r = await uploader("run", "x.csv", "--concurrency", "many", cwd=tmp_path)
    assert_one_error_line(
        r, 2, "argument --concurrency: invalid int value: 'many' (see 'uploader run --help')"
    )


async def test_missing_command_is_one_line(tmp_path: Path) -> None:
    r = await uploader(cwd=tmp_path)
    assert_one_error_line(r, 2, "the following arguments are required: COMMAND")


# -- the server: unreachable, 401 ---------------------------------------------------------


async def test_unreachable_server(tmp_path: Path) -> None:
    """Connection refused before any batch got through: a configuration error.

    Nothing was sent, so the batches stay pending in the journal (not failed):
    the same command continues once the server is reachable.
    """
    small_export(tmp_path)
    r = await run_in_w(tmp_path, "export.csv", "http://127.0.0.1:1", "--max-attempts", "1")
    assert_one_error_line(r, 2, "cannot reach http://127.0.0.1:1: ")
    rep = report(tmp_path / "w")
    assert rep["status"] == "error"
    assert rep["rows"]["successful"] == 0
    assert rep["rows"]["failed"] == 0
    assert rep["rows"]["pending"] == rep["rows"]["submitted"] == 50
    assert not (tmp_path / "w" / "failed.csv").exists()


async def test_401_without_token(tmp_path: Path, emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory(token="s3cret")
    small_export(tmp_path)
    r = await run_in_w(tmp_path, "export.csv", emu.base_url)
    line = assert_one_error_line(r, 2, "401")
    assert "TARGET_PROFILE_TOKEN" in line
    assert emu.stats()["batches_accepted"] == 0
    assert report(tmp_path / "w")["status"] == "error"


async def test_401_with_wrong_token_never_prints_it(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    emu = await emulator_factory(token="s3cret")
    small_export(tmp_path)
    r = await run_in_w(
        tmp_path, "export.csv", emu.base_url, env={"TARGET_PROFILE_TOKEN": "wrong-token-value"}
    )
    assert_one_error_line(r, 2, "401")
    assert "wrong-token-value" not in r.stderr + r.stdout
    assert "wrong-token-value" not in (tmp_path / "w" / "report.json").read_text()


async def test_emulator_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = await uploader("emulator", "--port", str(port), cwd=tmp_path)
    assert_one_error_line(r, 2, f"cannot listen on 127.0.0.1 port {port}: Address already in use")
    assert r.lines == [f"{ERROR}cannot listen on 127.0.0.1 port {port}: Address already in use"]


def test_ctrl_c_while_starting_up_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during the imports of the commands: no traceback, exit 3 (nothing happened)."""
    from uploader import cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["status", "w"]) == 3
    assert capsys.readouterr().err == "uploader: interrupted\n"
