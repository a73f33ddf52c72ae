"""An input that does not open stops the command before it creates anything.

``run``, ``submit``, ``split`` and ``check`` each get a mistyped path, a
directory and (for ``run``) an object URL that does not exist: exit 2, one
line naming the input, and the directory the test runs in holds exactly what
it held before (no ``uploader-runs/``, no report); a ``--work-dir`` that
existed stays as it was, mode included.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CLIENT
from tests.s3server import S3Server, s3_server
from tests.test_cli_errors import Result, assert_one_error_line, uploader
from uploader import api

# Nothing listens on port 9 of loopback: were anything sent, the run would say so.
TARGET = ("--client", CLIENT, "--base-url", "http://127.0.0.1:9")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its mode and size: what "left as it was" compares."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size)
    return out


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "not-a-batch.txt").write_text("id,tier\nC1,gold\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("run", "nosuchfile.csv", *TARGET), "nosuchfile.csv: no such file"),
        (("run", "a-folder", *TARGET), "a-folder: is a directory"),
        (("run", "nosuchfile.csv", *TARGET, "--progress", "log"), "nosuchfile.csv: no such file"),
        (("submit", "nosuch.txt", *TARGET), "nosuch.txt: no such file or directory"),
        (
            ("submit", "not-a-batch.txt", *TARGET),
            "not-a-batch.txt: not a batch file (it must start with 'batch=')",
        ),
        (("split", "nosuchfile.csv", "--out", "out"), "nosuchfile.csv: no such file"),
        (("split", "a-folder", "--out", "out"), "a-folder: is a directory"),
        (("check", "nosuchfile.csv"), "nosuchfile.csv: no such file"),
        (("check", "a-folder"), "a-folder: is a directory"),
    ],
)
async def test_nothing_is_created(cwd: Path, args: tuple[str, ...], line: str) -> None:
    before = tree(cwd)
    r = await uploader(*args, cwd=cwd)
    assert assert_one_error_line(r, 2, line) == f"uploader: error: {line}"
    assert tree(cwd) == before


CLOSED_STDIN = "-: standard input is closed: nothing to read (pipe the export in, or name a file)"


@pytest.mark.parametrize(
    "args",
    [("run", "-", *TARGET), ("split", "-", "--out", "out"), ("check", "-")],
)
async def test_a_closed_standard_input_creates_nothing(cwd: Path, args: tuple[str, ...]) -> None:
    """``uploader run - <&-`` (a cron line whose pipe was lost): exit 2, not a crash."""
    before = tree(cwd)
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", 'exec "$0" -m uploader "$@" <&-', sys.executable, *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    r = Result(proc.returncode or 0, out.decode(), err.decode())
    assert assert_one_error_line(r, 2, CLOSED_STDIN) == f"uploader: error: {CLOSED_STDIN}"
    assert tree(cwd) == before


async def test_an_existing_work_dir_stays_as_it_was(cwd: Path) -> None:
    work = cwd / "w"
    work.mkdir(mode=0o755)
    work.chmod(0o755)  # whatever the umask: a mode we would never give a directory of ours
    before = tree(cwd)
    r = await uploader("run", "nosuchfile.csv", *TARGET, "--work-dir", "w", cwd=cwd)
    assert_one_error_line(r, 2, "nosuchfile.csv: no such file")
    assert tree(cwd) == before
    assert (work.stat().st_mode & 0o777, list(work.iterdir())) == (0o755, [])


async def test_report_and_summary_paths_are_still_written_where_asked(cwd: Path) -> None:
    named = ("--report", "r.json", "--summary-md", "s.md", "--junit", "j.xml")
    r = await uploader("run", "nosuchfile.csv", *TARGET, *named, cwd=cwd)
    assert_one_error_line(r, 2, "nosuchfile.csv: no such file")
    report = json.loads((cwd / "r.json").read_text())
    assert (report["status"], report["exit_code"], report["error"]) == (
        "error",
        2,
        "nosuchfile.csv: no such file",
    )
    assert "**Error:** nosuchfile.csv: no such file" in (cwd / "s.md").read_text().splitlines()
    assert sorted(p.name for p in cwd.iterdir()) == [
        "a-folder",
        "not-a-batch.txt",
        "r.json",
        "s.md",
    ]
    # No directory is created for them: the next run would find it in its way.
    before = tree(cwd)
    named = ("--report", "w/r.json", "--summary-md", "w/s.md", "--work-dir", "w")
    again = await uploader("run", "nosuchfile.csv", *TARGET, *named, cwd=cwd)
    assert_one_error_line(again, 2, "nosuchfile.csv: no such file")
    assert tree(cwd) == before


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.client().create_bucket(Bucket="exports")
        yield server


async def test_an_object_that_does_not_exist(cwd: Path, s3: S3Server) -> None:
    config = cwd / "acme.toml"
    config.write_text(f'[input.storage_options]\nendpoint_url = "{s3.endpoint}"\n')
    before = tree(cwd)
    r = await uploader("run", "s3://exports/nope.csv", *TARGET, "--config", "acme.toml", cwd=cwd)
    assert_one_error_line(r, 2, "s3://exports/nope.csv: no such object")
    assert tree(cwd) == before


async def test_the_python_api_creates_nothing_either(cwd: Path) -> None:
    settings = api.load_settings(None, {"target.client": CLIENT, "target.base_url": TARGET[3]})
    for name, message in (("nosuchfile.csv", "no such file"), ("a-folder", "is a directory")):
        with pytest.raises(api.UploaderError) as caught:
            await api.run_async(cwd / name, settings, work_dir=cwd / "w")
        assert (caught.value.exit_code, str(caught.value)) == (2, f"{cwd / name}: {message}")
    assert not (cwd / "w").exists()
