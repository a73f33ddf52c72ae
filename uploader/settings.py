"""One frozen settings tree, loaded from TOML + command-line flags + environment.

Validation happens here, once, with messages that name the key; everything
downstream receives a ``Settings`` (or one of its parts) and never reads the
environment or globals itself. Flags arrive as dotted config keys
(``{"batch.max_rows": 1000}``) so the TOML file and the command line share
one vocabulary, and command-line values win.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, get_type_hints
from urllib.parse import urlsplit

from uploader.config_types import closest, convert, toml_type
from uploader.errors import ConfigError
from uploader.logs import protect
from uploader.pacing import parse_window, resolve_timezone

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ROWS",
    "MAX_PROFILE_BYTES",
    "MIN_BATCH_BYTES",
    "BatchSettings",
    "InputSettings",
    "PacingSettings",
    "RunSettings",
    "Settings",
    "StatusSettings",
    "SubmitSettings",
    "TargetSettings",
    "is_loopback_host",
    "known_keys",
    "load_settings",
    "parse_shard",
]

MAX_BATCH_ROWS = 500_000
# "under 50 MB": we stay below 50 MiB and default to 50,000,000 bytes.
MAX_BATCH_BYTES = 50 * 1024 * 1024
# Target's limit on one visitor's profile, measured as Target stores it: the
# UTF-8 bytes of the id and the values once decoded (not the percent-encoded
# text on the wire). The emulator measures the same way.
MAX_PROFILE_BYTES = 64 * 1024
# The smallest batch.max_bytes accepted from a file or flag: one row at the
# profile limit (every byte percent-encoded: 3 x 64 KB) plus room for a header.
MIN_BATCH_BYTES = 256 * 1024

_API_VERSIONS = ("v1", "v2")
_ID_TYPES = ("thirdPartyId", "pcId")
_PROGRESS = ("auto", "bar", "log", "none")
_LOOPS = ("auto", "uvloop", "asyncio")
_FORMATS = ("auto", "csv", "parquet", "jsonl")
_LOG_FORMATS = ("text", "json")
_SHORT_ROWS = ("pad", "reject")
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}
T = TypeVar("T")
_CLIENT_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TargetSettings:
    """Where batches go and how we authenticate."""

    client: str
    base_url: str = ""  # "" means https://CLIENT.tt.omtrdc.net
    api: str = "v2"
    token_env: str = "TARGET_PROFILE_TOKEN"
    token: str | None = field(default=None, repr=False)  # only ever from the environment
    allow_http: bool = False  # plain http:// to a non-loopback host needs this opt-in
    token_hosts: tuple[str, ...] = ()  # extra hosts allowed to receive the token

    def __post_init__(self) -> None:
        if not self.client or not self.client.strip():
            raise ConfigError("target.client is required (--client CODE): the Target client code")
        if not _CLIENT_CODE.fullmatch(self.client):
            raise ConfigError(
                f"target.client {self.client!r} is not a valid client code "
                "(letters, digits, '-' and '_': it is part of a host name and of every path)"
            )
        if not self.base_url:
            object.__setattr__(self, "base_url", f"https://{self.client}.tt.omtrdc.net")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        _one_of("target.api", self.api, _API_VERSIONS)
        try:
            parts = urlsplit(self.base_url)
            scheme, hostname = parts.scheme, parts.hostname
        except ValueError:  # "http://[" and the like; not echoed: it may hold a password
            raise ConfigError("target.base_url is not a valid URL") from None
        if "@" in parts.netloc:  # never echo it: the part before @ may be a password
            raise ConfigError(
                "target.base_url must not hold credentials (user:password@host); "
                f"put the token in the environment variable {self.token_env} instead"
            )
        if scheme not in ("http", "https") or not hostname:
            raise ConfigError(f"target.base_url {self.base_url!r} is not an http(s) URL")
        if scheme == "http" and not (self.allow_http or is_loopback_host(hostname)):
            raise ConfigError(
                f"target.base_url {self.base_url!r} uses plain http to a non-loopback host; "
                "use https, or pass --allow-http (target.allow_http = true) to accept sending "
                "profiles unencrypted"
            )

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""


@dataclass(frozen=True)
class InputSettings:
    """How to read the export and map its columns to Target parameters."""

    id_column: str | None = None  # None: the first column
    id_type: str = "thirdPartyId"
    delimiter: str = ","
    encoding: str = "utf-8"
    columns: tuple[str, ...] | None = None  # CRM columns to send (the id is always sent)
    rename: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    format: str = "auto"  # auto: from the name (.parquet, .jsonl), else CSV
    # fsspec options for URL inputs (an S3-compatible endpoint_url, a profile...)
    storage_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    shard: str | None = None  # "I/N": only ids that hash to shard I of N (0 <= I < N)
    strip_ids: bool = False  # trim spaces around ids instead of rejecting them as invalid_id
    short_rows: str = "pad"  # rows with fewer fields than the header: pad | reject
    limit: int | None = None  # read only the first N data records (a trial load)
    # True: the export holds each id once; skip the pre-pass that folds repeated ids
    unique_ids: bool = False

    def __post_init__(self) -> None:
        _one_of("input.id_type", self.id_type, _ID_TYPES)
        _one_of("input.format", self.format, _FORMATS)
        _one_of("input.short_rows", self.short_rows, _SHORT_ROWS)
        if self.limit is not None:
            _positive("input.limit", self.limit)
        object.__setattr__(self, "storage_options", MappingProxyType(dict(self.storage_options)))
        object.__setattr__(
            self, "delimiter", _DELIMITER_NAMES.get(self.delimiter.lower(), self.delimiter)
        )
        if self.shard is not None:
            try:
                parse_shard(self.shard)
            except ValueError as exc:
                raise ConfigError(f"input.shard: {exc}") from None
        if len(self.delimiter) != 1 or self.delimiter in '\r\n"':
            raise ConfigError(f"input.delimiter must be one character, got {self.delimiter!r}")
        try:
            "".encode(self.encoding)
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            raise ConfigError(f"input.encoding {self.encoding!r} is not a known encoding") from None
        object.__setattr__(self, "rename", MappingProxyType(dict(self.rename)))
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))

    @property
    def shard_spec(self) -> tuple[int, int] | None:
        """``(I, N)`` of ``input.shard``, or None for the whole export."""
        return None if self.shard is None else parse_shard(self.shard)


@dataclass(frozen=True)
class BatchSettings:
    """Size bounds of one batch file (one submit body)."""

    max_rows: int = MAX_BATCH_ROWS
    max_bytes: int = 50_000_000
    max_waiting: int = 16  # batch files written but not yet accepted: bounds disk use

    def __post_init__(self) -> None:
        _positive("batch.max_rows", self.max_rows)
        _positive("batch.max_bytes", self.max_bytes)
        _positive("batch.max_waiting", self.max_waiting)
        if self.max_rows > MAX_BATCH_ROWS:
            raise ConfigError(
                f"batch.max_rows {self.max_rows} is above Target's limit of {MAX_BATCH_ROWS} rows"
            )
        if self.max_bytes >= MAX_BATCH_BYTES:
            raise ConfigError(
                f"batch.max_bytes {self.max_bytes} must stay under Target's 50 MB "
                f"limit (below {MAX_BATCH_BYTES})"
            )


@dataclass(frozen=True)
class SubmitSettings:
    """Concurrency and retry of submits."""

    concurrency: int = 8  # upper bound of submits in flight; adaptive below it
    max_attempts: int = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    request_timeout_s: float = 300.0
    adaptive: bool = True  # False: exactly `concurrency` in flight, 429s or not (benchmarks)
    # stop the run (exit 3) after this many submit attempts in a row failed with an error
    # that is not throttling; None: never (each batch retries up to max_attempts)
    stop_after_errors: int | None = None

    def __post_init__(self) -> None:
        _positive("submit.concurrency", self.concurrency)
        if self.stop_after_errors is not None:
            _positive("submit.stop_after_errors", self.stop_after_errors)
        _positive("submit.max_attempts", self.max_attempts)
        _positive("submit.backoff_initial_s", self.backoff_initial_s)
        _positive("submit.backoff_max_s", self.backoff_max_s)
        _positive("submit.request_timeout_s", self.request_timeout_s)


@dataclass(frozen=True)
class StatusSettings:
    """How accepted batches are followed to a final status."""

    wait: bool = True
    timeout_s: float = 86_400.0
    poll_initial_s: float = 2.0
    poll_max_s: float = 60.0
    max_inflight: int = 4  # status calls in flight at once
    resubmit_stuck: int = 1
    # A batch whose status answers stay unreadable (a redirect, an HTML page, an
    # unknown status word) for this many calls in a row, over at least
    # unreadable_for_s, stops the run (exit 2); 0: follow it until timeout_s.
    max_unreadable: int = 10
    unreadable_for_s: float = 600.0

    def __post_init__(self) -> None:
        _positive("status.timeout_s", self.timeout_s)
        _positive("status.poll_initial_s", self.poll_initial_s)
        _positive("status.poll_max_s", self.poll_max_s)
        _positive("status.max_inflight", self.max_inflight)
        if self.resubmit_stuck < 0:
            raise ConfigError("status.resubmit_stuck must be 0 or more")
        if self.max_unreadable < 0:
            raise ConfigError(f"status.max_unreadable must be 0 or more; got {self.max_unreadable}")
        if not self.unreadable_for_s >= 0:  # NaN too
            raise ConfigError(
                f"status.unreadable_for_s must be 0 or more; got {self.unreadable_for_s}"
            )


@dataclass(frozen=True)
class RunSettings:
    """Where a run keeps its files and how it talks to the user."""

    work_dir: Path | None = None  # None: ./uploader-runs/JOB_ID
    report: Path | None = None
    junit: Path | None = None
    progress: str = "auto"
    loop: str = "auto"
    fresh: bool = False
    log_format: str = "text"  # "json": one JSON object per log line
    metrics_port: int | None = None  # serve Prometheus /metrics on 127.0.0.1:PORT
    metrics_textfile: Path | None = None  # rewrite this file for node_exporter
    summary_md: Path | None = None  # a Markdown job summary (GITHUB_STEP_SUMMARY gets one too)

    def __post_init__(self) -> None:
        _one_of("run.progress", self.progress, _PROGRESS)
        _one_of("run.loop", self.loop, _LOOPS)
        _one_of("run.log_format", self.log_format, _LOG_FORMATS)
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"run.metrics_port must be 0..65535; got {self.metrics_port}")
        for name in ("work_dir", "report", "junit", "metrics_textfile", "summary_md"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))


@dataclass(frozen=True)
class PacingSettings:
    """Operator limits on when and how fast batches are submitted (see pacing.py)."""

    max_rows_per_s: float | None = None  # token bucket on rows, bursts of one batch
    window: str | None = None  # "HH:MM-HH:MM": submit only inside, may wrap midnight
    timezone: str | None = None  # IANA name for window and daily budget; None: local
    exit_outside_window: bool = False  # outside the window: exit 3 instead of waiting
    daily_rows: int | None = None  # rows per calendar day for this job, across reruns
    max_backlog_rows: int | None = None  # accepted rows not yet final before pausing
    send_for_s: float | None = None  # no new batch this long after the run started; exit 3

    def __post_init__(self) -> None:
        for name in ("max_rows_per_s", "daily_rows", "max_backlog_rows", "send_for_s"):
            value = getattr(self, name)
            if value is not None:
                _positive(f"pacing.{name}", value)
        if self.window is not None:
            parse_window(self.window)
        resolve_timezone(self.timezone)


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration of one command."""

    target: TargetSettings
    input: InputSettings = field(default_factory=InputSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    submit: SubmitSettings = field(default_factory=SubmitSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    run: RunSettings = field(default_factory=RunSettings)
    pacing: PacingSettings = field(default_factory=PacingSettings)

    def __post_init__(self) -> None:
        if self.pacing.max_backlog_rows is not None and not self.status.wait:
            raise ConfigError(
                "pacing.max_backlog_rows needs status.wait (--wait): the backlog is only "
                "known while batches are followed to a final status"
            )


_SECTIONS: dict[str, type[Any]] = {
    "target": TargetSettings,
    "input": InputSettings,
    "batch": BatchSettings,
    "submit": SubmitSettings,
    "status": StatusSettings,
    "run": RunSettings,
    "pacing": PacingSettings,
}
# Keys that exist on the dataclasses but must not come from a file or flag.
_HIDDEN = {("target", "token"), ("run", "fresh")}


def load_settings(
    config_path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_client: bool = True,
) -> Settings:
    """Build validated settings: defaults < TOML file < ``overrides`` (flags).

    ``overrides`` uses dotted keys (``"submit.concurrency"``); ``None`` values
    mean "flag not given" and are ignored. The token is read from the
    environment variable named by ``target.token_env``, never from a file.
    Every problem is one ``ConfigError`` line naming the file (or "command
    line"), the key, what was expected and, for a misspelt key, the nearest one.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    sources: dict[str, str] = {}  # dotted key -> where its value came from
    if config_path is not None:
        source = str(config_path)
        for key, value in _file_values(_read_toml(Path(config_path)), source):
            _set(values, sources, key, value, source)
    fresh = False
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "run.fresh":
            fresh = bool(value)
            continue
        _check_key(key, source="command line")
        _set(values, sources, key, value, "command line")
    if not require_client:
        values["target"].setdefault("client", "unset")
    if not values["target"].get("client"):
        where = f"{sources['target.client']}: " if "target.client" in sources else ""
        raise ConfigError(
            f"{where}target.client is required: pass --client CODE or set it in the config"
        )
    token_env = values["target"].get("token_env", "TARGET_PROFILE_TOKEN")
    values["target"]["token"] = environ.get(token_env) or None
    protect(values["target"]["token"])  # no piece of it in any line or traceback we print
    parts = {name: _build(cls, values[name], sources) for name, cls in _SECTIONS.items()}
    parts["run"] = replace(parts["run"], fresh=fresh)
    if "max_bytes" in values["batch"] and parts["batch"].max_bytes < MIN_BATCH_BYTES:
        raise ConfigError(
            f"{sources['batch.max_bytes']}: batch.max_bytes {parts['batch'].max_bytes} cannot "
            f"hold one row of the maximum size (a {MAX_PROFILE_BYTES // 1024} KB profile is up "
            f"to {3 * MAX_PROFILE_BYTES:,} bytes once percent-encoded); "
            f"use at least {MIN_BATCH_BYTES}"
        )
    return _build(Settings, parts, sources)  # checks across sections


def known_keys() -> list[str]:
    """Every dotted key a config file or flag may set, in section order."""
    return [
        f"{section}.{f.name}"
        for section, cls in _SECTIONS.items()
        for f in fields(cls)
        if (section, f.name) not in _HIDDEN
    ]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except IsADirectoryError:
        raise ConfigError(f"{path}: cannot read config file: is a directory") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from exc


def _file_values(data: dict[str, Any], source: str) -> list[tuple[str, Any]]:
    """The dotted keys of a parsed file; unknown or misplaced keys refused."""
    out = []
    for section, table in data.items():
        if section not in _SECTIONS:
            if isinstance(table, dict):
                hint = closest(section, _SECTIONS)
                near = f"; did you mean [{hint}]?" if hint else f" (known: {', '.join(_SECTIONS)})"
                raise ConfigError(f"{source}: unknown config table [{section}]{near}")
            _check_key(section, source=source)  # a bare key outside any table
        if not isinstance(table, dict):
            raise ConfigError(
                f"{source}: {section} must be a table ([{section}]), got {toml_type(table)}"
            )
        for name, value in table.items():
            key = f"{section}.{name}"
            _check_key(key, source=source)
            out.append((key, value))
    return out


def _check_key(key: str, *, source: str) -> None:
    known = known_keys()
    if key in known:
        return
    section, _, name = key.partition(".")
    if name == "token":
        raise ConfigError(
            f"{source}: unknown config key {key} (the token is read only from the environment)"
        )
    hint = closest(key, known)
    if hint is None:  # a key in the wrong table, or a bare key: match the name alone
        by_name = {k.partition(".")[2]: k for k in known}
        found = closest(name or section, by_name)
        hint = by_name[found] if found else None
    near = f"; did you mean {hint}?" if hint else ""
    raise ConfigError(f"{source}: unknown config key {key}{near}")


def _set(
    values: dict[str, dict[str, Any]],
    sources: dict[str, str],
    key: str,
    value: Any,
    source: str,
) -> None:
    section, _, name = key.partition(".")
    hint = get_type_hints(_SECTIONS[section])[name]
    try:
        values[section][name] = convert(key, hint, value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    sources[key] = source


def _build(cls: type[T], values: dict[str, Any], sources: Mapping[str, str]) -> T:
    """Construct ``cls``; a message of its own checks gets the key's file or "command line"."""
    try:
        return cls(**values)
    except ConfigError as exc:
        key = str(exc).split(" ", 1)[0].rstrip(":")
        source = sources.get(key)
        if source is None or str(exc).startswith(source):
            raise
        raise ConfigError(f"{source}: {exc}") from None


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ValueError otherwise."""
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"expected I/N, e.g. 0/4, got {text!r}")
    i, n = int(index), int(count)
    if n < 1 or i >= n:
        raise ValueError(f"shard index must be 0 to N-1 and N at least 1, got {text!r}")
    return i, n


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(key: str, value: float) -> None:
    if not value > 0:  # also refuses nan
        raise ConfigError(f"{key} must be greater than 0; got {value}")
