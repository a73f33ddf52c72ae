"""Shared fixtures: the real emulator, served in-process on 127.0.0.1 port 0.

``emulator_factory`` starts emulators with any ``EmulatorConfig`` overrides and
stops every one of them at teardown; ``emulator`` is one with the default
fault-free config and a fast applier.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.hostile import HostileServer
from uploader.emulator import Emulator, EmulatorConfig

EmulatorFactory = Callable[..., Awaitable[Emulator]]

FAST_APPLY = 1e6  # rows per second: batches complete almost at once in tests


@pytest.fixture
async def emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """``await make(**config_overrides)`` -> a started Emulator (stopped at teardown)."""
    started: list[Emulator] = []

    async def make(**overrides: Any) -> Emulator:
        overrides.setdefault("apply_rate", FAST_APPLY)
        emu = Emulator(EmulatorConfig(**overrides))
        await emu.start()
        started.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in reversed(started):
            await emu.stop()


@pytest.fixture
async def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """A fault-free emulator applying 1e6 rows per second."""
    return await emulator_factory()


@pytest.fixture(autouse=True)
def _not_in_github_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that run the CLI must not annotate or summarise the job running the tests."""
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def threaded_emulator() -> Iterator[Emulator]:
    """An emulator on its own loop in a thread, for code that runs its own event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    emu = Emulator(EmulatorConfig(apply_rate=FAST_APPLY))
    asyncio.run_coroutine_threadsafe(emu.start(), loop).result(10)
    try:
        yield emu
    finally:
        asyncio.run_coroutine_threadsafe(emu.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[..., Awaitable[HostileServer]]]:
    """``await hostile(mode, **kwargs)``: a started ``tests/hostile.py`` server, closed after."""
    servers: list[HostileServer] = []

    async def start(mode: str, **kwargs: Any) -> HostileServer:
        server = HostileServer(mode, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()
