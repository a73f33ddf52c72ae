"""Configuration of the emulator: the fault switches, validated once.

``EmulatorConfig`` is what tests, the demo and the benchmarks build directly;
``add_arguments`` / ``config_from_args`` give the ``uploader emulator``
command the same switches as flags, so the CLI only wires them.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

from uploader.errors import ConfigError

__all__ = ["APPLY_ORDERS", "EmulatorConfig", "add_arguments", "config_from_args", "parse_latency"]

APPLY_ORDERS = ("arrival", "random")


def _check_rate(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ConfigError(f"emulator: {name} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated Target behaves. Defaults: a fast, fault-free server."""

    apply_rate: float = 50_000.0  # rows applied per second by the background applier
    latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform random delay added to every submit
    max_inflight: int | None = None  # more submits in flight than this -> HTTP 429
    error_rate: float = 0.0  # share of submits answered HTTP 503 (batch not accepted)
    drop_rate: float = 0.0  # share of accepted submits whose connection is closed unanswered
    stuck_rate: float = 0.0  # share of accepted batches that end `stuck`, never applied
    status_error_rate: float = 0.0  # share of status calls answered HTTP 500
    token: str | None = None  # when set, submit/status/fetch need `Authorization: Bearer TOKEN`
    seed: int | None = 0  # one random.Random(seed) drives every fault: runs repeat
    retry_after_s: float = 1.0  # the Retry-After of a 429
    status_host: str = "127.0.0.2"  # host name of the returned status URLs (another "edge")
    # share of rows silently not applied although their batch reports them successful
    # (Adobe documents that up to 0.1% of a large batch may be dropped); chosen per
    # (seed, id), so the same ids are lost whatever the order batches arrive in
    lose_rate: float = 0.0
    fetch_latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform delay added to profile fetches
    # "full": keep every profile (fetch and verify work); "none": keep only counts and an
    # order-independent digest of the applied rows (constant memory: for benchmarks)
    store: str = "full"
    # "arrival": accepted batches are applied one after another in the order they came in;
    # "random": every slice of rows comes from a batch picked at random among the accepted
    # ones not yet applied, as real Target may process batches it took in together in any order
    apply_order: str = "arrival"
    # bodies of accepted batches waiting to be applied are kept in memory up to this many
    # MB (10^6 bytes); beyond it they wait in files of a temporary directory (0: always)
    queue_memory_mb: float = 256.0
    spill_dir: str | None = None  # where that directory is made (None: the system's temp dir)

    def __post_init__(self) -> None:
        if not (self.apply_rate > 0 and math.isfinite(self.apply_rate)):
            raise ConfigError(f"emulator: apply_rate must be > 0, got {self.apply_rate}")
        for name in ("latency_ms", "fetch_latency_ms"):
            low, high = getattr(self, name)
            if not (0.0 <= low <= high and math.isfinite(high)):
                raise ConfigError(f"emulator: {name} must be 0 <= A <= B, got {(low, high)}")
        if self.max_inflight is not None and self.max_inflight < 1:
            raise ConfigError(f"emulator: max_inflight must be >= 1, got {self.max_inflight}")
        for name in ("error_rate", "drop_rate", "stuck_rate", "status_error_rate", "lose_rate"):
            _check_rate(name, getattr(self, name))
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ConfigError("emulator: token must be non-empty without whitespace")
        if not (self.retry_after_s >= 0 and math.isfinite(self.retry_after_s)):
            raise ConfigError(f"emulator: retry_after_s must be >= 0, got {self.retry_after_s}")
        if not self.status_host or "/" in self.status_host or ":" in self.status_host:
            raise ConfigError(f"emulator: bad status_host {self.status_host!r}")
        if self.store not in STORES:
            raise ConfigError(
                f"emulator: store must be one of {', '.join(STORES)}; got {self.store!r}"
            )
        if not (self.queue_memory_mb >= 0 and math.isfinite(self.queue_memory_mb)):
            raise ConfigError(f"emulator: queue_memory_mb must be >= 0, got {self.queue_memory_mb}")
        if self.spill_dir is not None and not os.path.isdir(self.spill_dir):
            raise ConfigError(f"emulator: spill_dir {self.spill_dir} is not a directory")
        if self.apply_order not in APPLY_ORDERS:
            raise ConfigError(
                f"emulator: apply_order must be one of {', '.join(APPLY_ORDERS)}; "
                f"got {self.apply_order!r}"
            )


STORES = ("full", "none")


def parse_latency(text: str) -> tuple[float, float]:
    """``"A-B"`` or ``"A"`` (milliseconds) -> ``(A, B)``."""
    low, sep, high = text.partition("-")
    try:
        pair = (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B milliseconds, got {text!r}") from None
    return pair


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``uploader emulator`` (values are checked by EmulatorConfig)."""
    add = parser.add_argument
    add(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="address to listen on (default: 127.0.0.1)",
    )
    add(
        "--port",
        type=int,
        default=0,
        metavar="N",
        help="port to listen on (default: 0 = any free port, printed on start)",
    )
    add(
        "--status-host",
        default="127.0.0.2",
        metavar="HOST",
        help="host of returned status URLs (default: 127.0.0.2)",
    )
    add(
        "--apply-rate",
        type=float,
        default=50_000.0,
        metavar="R",
        help="rows applied per second (default: 50000)",
    )
    add(
        "--latency-ms",
        type=parse_latency,
        default=(0.0, 0.0),
        metavar="A-B",
        help="random delay per submit, in ms (default: 0-0)",
    )
    add(
        "--max-inflight",
        type=int,
        default=None,
        metavar="N",
        help="429 above N submits in flight (default: no limit)",
    )
    add(
        "--retry-after",
        type=float,
        default=1.0,
        metavar="S",
        help="Retry-After of a 429 (default: 1)",
    )
    add(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of submits answered 503 (default: 0)",
    )
    add(
        "--drop-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share accepted, then connection dropped (default: 0)",
    )
    add(
        "--stuck-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of accepted batches that stick (default: 0)",
    )
    add(
        "--status-error-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of status calls answered 500 (default: 0)",
    )
    add(
        "--lose-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of rows silently not applied in batches reported complete (default: 0)",
    )
    add(
        "--fetch-latency-ms",
        type=parse_latency,
        default=(0.0, 0.0),
        metavar="A-B",
        help="random delay per profile fetch, in ms (default: 0-0)",
    )
    add(
        "--store",
        choices=STORES,
        default="full",
        help="full: keep every profile (fetchable); none: only counts and a digest of the "
        "applied rows, in constant memory (default: full)",
    )
    add(
        "--apply-order",
        choices=APPLY_ORDERS,
        default="arrival",
        help="apply accepted batches in arrival order, or interleaved in random order "
        "(default: arrival)",
    )
    add(
        "--queue-memory",
        type=float,
        default=256.0,
        metavar="MB",
        help="bodies of accepted batches waiting to be applied stay in memory up to MB "
        "(10^6 bytes), the rest waits in files of a temporary directory (default: 256)",
    )
    add(
        "--spill-dir",
        default=None,
        metavar="DIR",
        help="where that temporary directory is made (default: the system's temp dir)",
    )
    add("--token", default=None, help="require Authorization: Bearer TOKEN (default: none)")
    add("--seed", type=int, default=0, metavar="N", help="seed of the fault generator (default: 0)")


def config_from_args(ns: argparse.Namespace) -> EmulatorConfig:
    """Build the config from parsed flags (raises ConfigError on bad values)."""
    return EmulatorConfig(
        apply_rate=ns.apply_rate,
        latency_ms=(float(ns.latency_ms[0]), float(ns.latency_ms[1])),
        max_inflight=ns.max_inflight,
        error_rate=ns.error_rate,
        drop_rate=ns.drop_rate,
        stuck_rate=ns.stuck_rate,
        status_error_rate=ns.status_error_rate,
        token=ns.token,
        seed=ns.seed,
        retry_after_s=ns.retry_after,
        status_host=ns.status_host,
        lose_rate=ns.lose_rate,
        fetch_latency_ms=(float(ns.fetch_latency_ms[0]), float(ns.fetch_latency_ms[1])),
        store=ns.store,
        apply_order=ns.apply_order,
        queue_memory_mb=ns.queue_memory,
        spill_dir=ns.spill_dir,
    )
