"""Queued batch bodies: in memory up to ``queue_memory_mb``, beyond it in files.

The spool on its own (a spilled body reads back as the same rows, files are
private and removed), then the emulator over HTTP: queued bytes in memory
never pass the budget, and batches applied from files give the same answers
and the same store as batches applied from memory.
"""

from __future__ import annotations

import argparse
import io
import stat
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import spawned_emulator
from uploader.emulator import Emulator, EmulatorConfig, add_arguments, config_from_args
from uploader.emulator import formdata as fd
from uploader.emulator.spool import FileBody, MemoryBody, Spool
from uploader.errors import ConfigError

CLIENT = "demo"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def submit(http: aiohttp.ClientSession, emu: Emulator, body: bytes) -> tuple[int, str]:
    url = f"{emu.base_url}/m2/{CLIENT}/v2/profile/batchUpdate"
    data = io.BytesIO(body) if len(body) > 1 << 20 else body  # big bytes: aiohttp warns
    async with http.post(url, data=data) as resp:
        return resp.status, await resp.text()


async def status_of(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "&showDetails=true") as resp:
        assert resp.status == 200
        doc = ET.fromstring(await resp.text())
    counts = {k: doc.findtext(k) for k in ("status", "consumedCount", "successfulUpdates")}
    counts["failures"] = [(p.findtext("id"), p.findtext("message")) for p in doc.findall("profile")]
    return counts


VALUES = [
    "",  # an empty value of one row
    "a,b & c=d",
    "100%",
    "Zoë 日本語 🎉",
    "two\nlines",
    "x" * 70_000,  # a profile over 64 KB: its row fails on its own
    "y" * (fd.WINDOW * 2 + 5),  # one line longer than two applier windows
]


def batches(count: int, rows: int) -> list[list[list[str]]]:
    """Bodies with repeated ids across batches (so order matters), bad rows, long lines."""
    out = []
    for b in range(count):
        table = [["thirdPartyId", "tier", "note"]]
        for r in range(rows):
            pid = f"C{(b * rows + r) % (rows * 2)}"
            table.append([pid, f"t{b}-{r}", VALUES[(b + r) % len(VALUES)]])
        table.append(["bad+id", "x", "y"])  # fails: + in a thirdPartyId
        out.append(table)
    return out


# -- the spool on its own -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"thirdPartyId,a\nC1,x\nC2,y",
        b"thirdPartyId,a\r\nC1,x\r\n\r\nC2,y\r\n",
        b"thirdPartyId,a\n\n\nC1,x\n",
        b"pcId,a\n" + b"\n".join(b"P%d,%s" % (i, b"v" * (i % 700)) for i in range(3000)),
        b"thirdPartyId,a\nC1," + b"z" * (3 * fd.WINDOW) + b"\nC2,w",
        b"thirdPartyId,a\n" + b"C1," + b"q" * (fd.WINDOW - 18) + b"\nC2,%2C\n",
    ],
)
def test_a_spilled_body_reads_back_as_the_same_rows(tmp_path: Path, value: bytes) -> None:
    spool = Spool(0, str(tmp_path))
    body = spool.hold(value)
    assert isinstance(body, FileBody) and body.path is not None
    assert body.path.read_bytes() == value
    expected = list(fd.iter_decoded_rows(value))
    assert list(fd.decode_windows(body.windows())) == expected
    assert list(fd.decode_windows(MemoryBody(value).windows())) == expected
    windows = list(body.windows())
    assert b"\n".join(windows) == value  # every cut is at a newline, which it drops


def test_the_budget_splits_memory_and_files(tmp_path: Path) -> None:
    spool = Spool(100, str(tmp_path))
    held = [spool.hold(bytes([65 + i]) * 40) for i in range(4)]
    assert [type(b).__name__ for b in held] == ["MemoryBody", "MemoryBody", "FileBody", "FileBody"]
    assert (spool.memory_bytes, spool.disk_bytes, spool.spilled) == (80, 80, 2)
    held[0].release()
    held[0].release()  # idempotent
    assert isinstance(spool.hold(b"z" * 60), MemoryBody)  # 40 + 60 fits again
    assert (spool.memory_bytes, spool.peak_memory_bytes) == (100, 100)
    directory = spool.directory
    assert directory is not None and directory.parent == tmp_path
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600, 0o600]
    held[2].release()
    assert (len(list(directory.iterdir())), spool.disk_bytes) == (1, 40)
    spool.close()
    assert not directory.exists() and spool.disk_bytes == 0
    held[3].release()  # its file went with the directory: counted once only
    assert spool.disk_bytes == 0
    assert isinstance(spool.hold(b"w" * 200), FileBody)  # a new directory
    assert spool.disk_bytes == 200 and spool.directory not in (None, directory)
    spool.close()


def test_a_removed_file_is_an_error_not_silence(tmp_path: Path) -> None:
    spool = Spool(0, str(tmp_path))
    body = spool.hold(b"thirdPartyId,a\nC1,x")
    assert isinstance(body, FileBody) and body.path is not None
    body.path.unlink()
    with pytest.raises(FileNotFoundError):
        list(body.windows())


# -- the emulator ---------------------------------------------------------------------


async def load(
    http: aiohttp.ClientSession, emu: Emulator, tables: list[list[list[str]]]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Submit every table, wait until applied; the status of each and every profile."""
    urls = []
    for table in tables:
        code, text = await submit(http, emu, fd.encode_body(table))
        assert code == 200, text
        urls.append(ET.fromstring(text).findtext("batchStatus") or "")
    await emu.wait_applied(timeout=60)
    statuses = [await status_of(http, url) for url in urls]
    ids = {row[0] for table in tables for row in table[1:]}
    profiles = {}
    for pid in sorted(ids):
        found = emu.profile(CLIENT, "thirdPartyId", pid)
        if found is not None:
            profiles[pid] = {k: v["value"] for k, v in found["profileAttributes"].items()}
    return statuses, profiles


@pytest.mark.parametrize("order", ["arrival", "random"])
async def test_spilled_batches_give_the_same_answers_and_store(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession, tmp_path: Path, order: str
) -> None:
    tables = batches(6, 40)
    if order == "random":  # ids unique across batches: the final store is order-free
        for b, table in enumerate(tables):
            for row in table[1:-1]:
                row[0] = f"B{b}-{row[0]}"
    results, stats = [], []
    for budget in (256.0, 0.0):
        emu = await emulator_factory(
            queue_memory_mb=budget,
            spill_dir=str(tmp_path),
            apply_order=order,
            lose_rate=0.05,
            apply_rate=20_000.0,
        )
        results.append(await load(http, emu, tables))
        stats.append(emu.stats())
    (memory_statuses, memory_store), (spilled_statuses, spilled_store) = results
    assert spilled_statuses == memory_statuses
    assert spilled_store == memory_store
    assert len(memory_store) > 40
    assert [s["status"] for s in memory_statuses] == ["complete"] * 6
    assert all(len(s["failures"]) >= 1 for s in memory_statuses)
    keys = ("rows_applied", "rows_lost", "batches_applied", "stuck")
    assert [stats[1][k] for k in keys] == [stats[0][k] for k in keys]
    assert stats[0]["rows_lost"] > 0
    assert (stats[0]["batches_spilled"], stats[1]["batches_spilled"]) == (0, 6)
    assert stats[1]["queued_bytes_memory"] == stats[1]["queued_bytes_disk"] == 0
    assert stats[1]["peak_queued_bytes_memory"] == 0
    assert [p for p in tmp_path.iterdir() if any(p.iterdir())] == []  # every file removed


async def test_store_none_digest_is_the_same_when_spilled(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    tables = batches(4, 30)
    digests = []
    for budget in (256.0, 0.0):
        emu = await emulator_factory(store="none", queue_memory_mb=budget, spill_dir=str(tmp_path))
        await load(http, emu, tables)
        digests.append((emu.stats()["rows_digest"], emu.stats()["rows_applied"]))
    assert digests[0] == digests[1]
    assert digests[0][0] != 0 and digests[0][1] == 4 * 31


async def test_queued_bytes_in_memory_never_pass_the_budget(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # one row per second: no batch completes (and frees its bytes) while the test runs
    emu = await emulator_factory(queue_memory_mb=0.002, spill_dir=str(tmp_path), apply_rate=1.0)
    sizes = []
    for b in range(8):
        table = [["thirdPartyId", "v"]] + [[f"C{b}-{r}", "w" * 20] for r in range(15)]
        body = fd.encode_body(table)
        sizes.append(len(body) - len("batch="))
        code, _ = await submit(http, emu, body)
        assert code == 200
        stats = emu.stats()
        assert stats["queued_bytes_memory"] <= 2000
        assert stats["queued_bytes_memory"] + stats["queued_bytes_disk"] == sum(sizes)
    assert len(set(sizes)) == 1
    in_memory = 2000 // sizes[0]
    stats = emu.stats()
    assert stats["batches_spilled"] == 8 - in_memory
    assert stats["peak_queued_bytes_memory"] == stats["queued_bytes_memory"] == in_memory * sizes[0]
    (directory,) = tmp_path.iterdir()
    assert len(list(directory.iterdir())) == 8 - in_memory
    emu.reset()  # forgets the queue, and removes its files
    assert list(tmp_path.iterdir()) == []
    assert emu.stats()["queued_bytes_memory"] == emu.stats()["queued_bytes_disk"] == 0


async def test_stop_removes_the_spilled_files(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    emu = await emulator_factory(queue_memory_mb=0, spill_dir=str(tmp_path), apply_rate=1.0)
    code, _ = await submit(http, emu, fd.encode_body([["thirdPartyId", "a"], ["C1", "x"]] * 5))
    assert code == 200
    (directory,) = tmp_path.iterdir()
    assert len(list(directory.iterdir())) == 1
    await emu.stop()
    assert list(tmp_path.iterdir()) == []


async def test_a_body_that_cannot_be_spilled_gets_503(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    emu = await emulator_factory(queue_memory_mb=0, spill_dir=str(gone))
    gone.rmdir()
    code, text = await submit(http, emu, fd.encode_body([["thirdPartyId", "a"], ["C1", "x"]]))
    assert (code, ET.fromstring(text).findtext("message")) == (503, "Service unavailable")
    stats = emu.stats()
    assert (stats["spill_errors"], stats["batches_accepted"], stats["rows_accepted"]) == (1, 0, 0)
    gone.mkdir()  # the directory is back: the resend is accepted
    code, _ = await submit(http, emu, fd.encode_body([["thirdPartyId", "a"], ["C1", "x"]]))
    assert code == 200
    await emu.wait_applied()
    assert emu.stats()["rows_applied"] == 1


def test_queue_memory_flags_and_checks(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--queue-memory", "64", "--spill-dir", str(tmp_path)])
    assert config_from_args(ns) == EmulatorConfig(queue_memory_mb=64.0, spill_dir=str(tmp_path))
    defaults = config_from_args(parser.parse_args([]))
    assert (defaults.queue_memory_mb, defaults.spill_dir) == (256.0, None)
    with pytest.raises(ConfigError, match="queue_memory_mb must be >= 0"):
        EmulatorConfig(queue_memory_mb=-1)
    with pytest.raises(ConfigError, match="is not a directory"):
        EmulatorConfig(spill_dir=str(tmp_path / "missing"))


async def test_the_command_removes_its_spill_directory_on_sigterm(tmp_path: Path) -> None:
    flags = ("--queue-memory", "0", "--spill-dir", str(tmp_path), "--apply-rate", "1")
    async with spawned_emulator(*flags) as base_url, aiohttp.ClientSession() as http:
        body = fd.encode_body([["thirdPartyId", "a"]] + [[f"C{i}", "x"] for i in range(9)])
        url = f"{base_url}/m2/{CLIENT}/v2/profile/batchUpdate"
        async with http.post(url, data=body) as resp:
            assert resp.status == 200
        (directory,) = tmp_path.iterdir()
        assert [f.read_bytes() for f in directory.iterdir()] == [body[len("batch=") :]]
    assert list(tmp_path.iterdir()) == []  # spawned_emulator sent SIGTERM and waited


async def test_a_chunked_body_is_read_whole_into_one_buffer(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    """No Content-Length: the buffer grows as chunks come; the same batch as in one piece."""
    emu = await emulator_factory(queue_memory_mb=0)
    table = [["thirdPartyId", "a"]] + [[f"C{i}", "é & x"] for i in range(3000)]
    body = fd.encode_body(table) + b"&ignored=1"

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7000):
            yield body[start : start + 7000]

    url = f"{emu.base_url}/m2/{CLIENT}/v2/profile/batchUpdate"
    async with http.post(url, data=pieces()) as resp:
        assert resp.status == 200
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    await emu.wait_applied()
    stats = emu.stats()
    assert (stats["rows_applied"], stats["bytes_received"]) == (3000, len(body))
    assert (emu.profile(CLIENT, "thirdPartyId", "C2999") or {})["profileAttributes"]["a"][
        "value"
    ] == "é & x"
