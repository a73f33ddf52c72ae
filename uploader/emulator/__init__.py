"""Built-in emulator of the Adobe Target Bulk Profile Update API (SPEC section 5).

Used by the tests, the demo and the benchmarks, and served by
``uploader emulator``. Everything runs on loopback; nothing here talks to
Adobe.
"""

from __future__ import annotations

from uploader.emulator.app import Emulator, serve_forever
from uploader.emulator.config import EmulatorConfig, add_arguments, config_from_args

__all__ = ["Emulator", "EmulatorConfig", "add_arguments", "config_from_args", "serve_forever"]
