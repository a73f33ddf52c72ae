"""The ``uploader`` command line: argument parsing and exit codes, nothing else.

Flags are turned into dotted config keys and handed to ``load_settings`` so
a TOML file and the command line speak one vocabulary (flags win). Every
error a user can cause ends as one line on stderr and the documented exit
code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from uploader import __version__
from uploader.config_types import closest
from uploader.errors import ConfigError, UploaderError
from uploader.logs import configure_logging, json_line, print_exception, redact
from uploader.settings import Settings, load_settings

__all__ = ["PACING_FLAGS", "add_config_argument", "add_pacing_arguments", "build_parser", "main"]

T = TypeVar("T")

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERNAL = 0, 1, 2, 3, 4

# flag dest -> config key
_TARGET_FLAGS = {
    "client": "target.client",
    "base_url": "target.base_url",
    "api": "target.api",
    "token_env": "target.token_env",
    "allow_http": "target.allow_http",
}
_INPUT_FLAGS = {
    "id_column": "input.id_column",
    "id_type": "input.id_type",
    "delimiter": "input.delimiter",
    "encoding": "input.encoding",
    "strip_ids": "input.strip_ids",
    "short_rows": "input.short_rows",
    "limit": "input.limit",
    "unique_ids": "input.unique_ids",
    "max_batch_rows": "batch.max_rows",
    "max_batch_bytes": "batch.max_bytes",
    "shard": "input.shard",
}
_RUN_FLAGS = {
    "concurrency": "submit.concurrency",
    "max_attempts": "submit.max_attempts",
    "stop_after_errors": "submit.stop_after_errors",
    "wait": "status.wait",
    "status_timeout": "status.timeout_s",
    "work_dir": "run.work_dir",
    "fresh": "run.fresh",
    "report": "run.report",
    "junit": "run.junit",
    "summary_md": "run.summary_md",
    "progress": "run.progress",
    "loop": "run.loop",
    "log_format": "run.log_format",
    "metrics_port": "run.metrics_port",
    "metrics_textfile": "run.metrics_textfile",
}
PACING_FLAGS = {
    "max_rows_per_s": "pacing.max_rows_per_s",
    "window": "pacing.window",
    "timezone": "pacing.timezone",
    "exit_outside_window": "pacing.exit_outside_window",
    "daily_rows": "pacing.daily_rows",
    "max_backlog_rows": "pacing.max_backlog_rows",
    "send_for_s": "pacing.send_for_s",
}


STATUS_EXIT_CODES = """\
exit codes (those of the run it shows):
  0  the run ended with every batch final and every row successful (or not_found)
  1  the run ended with rows rejected, failed or in stuck batches
  2  the run ended on a usage, input or credentials error (the error is shown),
     or WORK_DIR holds no journal
  3  not finished: still running (its pid is shown), or stopped before the end
  4  the run ended on an internal error (the error is shown; the journal is intact)
several WORK_DIRs exit with the most urgent of their codes: 4, then 2, 3, 1, 0
"""

INPUT_HELP = "the export: CSV with a header, Parquet or JSON Lines (.gz ok), an s3:// URL, or -"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error, with a hint for typos.

    An unknown option is named with the nearest option of the command it was
    given to (``--concurency`` -> ``--concurrency``), an unknown command with
    the nearest command; the help to see is that of the command.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"uploader: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        commands = self._subcommands()
        if extras and commands is not None:  # the top parser: say it here, for the command
            command = commands.choices.get(getattr(ns, "command", None) or "")
            parser = command if isinstance(command, _Parser) else self
            parser.error(_unrecognized(parser, extras))
        return ns, extras

    def _subcommands(self) -> argparse._SubParsersAction[Any] | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return None

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            hint = closest(value, action.choices)
            near = (
                f"did you mean {hint}?" if hint else f"the commands are {', '.join(action.choices)}"
            )
            raise argparse.ArgumentError(None, f"unknown command {value!r}; {near}")
        super()._check_value(action, value)


def _unrecognized(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``unrecognized argument --concurency (did you mean --concurrency?)``.

    Options are named without their values (``--concurency=4``, ``--concurency 4``:
    ``--concurency``); the words after an unknown option may be its value, so
    they are named only when no option is unknown.
    """
    options = [word.split("=", 1)[0] for word in extras if word.startswith("-") and word != "-"]
    if not options:
        plural = "s" if len(extras) > 1 else ""
        return f"unrecognized argument{plural} {' '.join(extras)}"
    known = {name.lstrip("-"): name for name in parser._option_string_actions}
    named = []
    for option in options:
        hint = closest(option.lstrip("-"), known)
        named.append(f"{option} (did you mean {known[hint]}?)" if hint else option)
    return f"unrecognized argument{'s' if len(named) > 1 else ''} {', '.join(named)}"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", metavar="PATH", help="TOML config file; flags win over it (default: none)"
    )


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    g.add_argument("--client", metavar="CODE", help="Target client code (required)")
    g.add_argument(
        "--base-url", metavar="URL", help="API base URL (default: https://CLIENT.tt.omtrdc.net)"
    )
    g.add_argument("--api", choices=("v1", "v2"), help="submit API version (default: v2)")
    g.add_argument(
        "--token-env",
        metavar="NAME",
        help="environment variable holding the Bearer token (default: TARGET_PROFILE_TOKEN)",
    )
    g.add_argument(
        "--allow-http",
        action="store_true",
        default=None,
        help="allow plain http:// to a non-loopback host (default: refuse)",
    )


def _add_input(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input and batches")
    g.add_argument("--id-column", metavar="NAME", help="column holding the id (default: first)")
    g.add_argument(
        "--id-type",
        choices=("thirdPartyId", "pcId"),
        help="what the id column holds (default: thirdPartyId)",
    )
    g.add_argument("--delimiter", metavar="C", help="field delimiter, or tab (default: ,)")
    g.add_argument(
        "--shard",
        metavar="I/N",
        help="only ids that hash to shard I of N, 0 <= I < N (default: the whole export)",
    )
    g.add_argument("--encoding", metavar="E", help="input encoding (default: utf-8; BOM skipped)")
    g.add_argument(
        "--strip-ids",
        action="store_true",
        default=None,
        help="trim whitespace around ids (default: reject such rows as invalid_id)",
    )
    g.add_argument(
        "--short-rows",
        choices=("pad", "reject"),
        help="rows with fewer fields than the header (default: pad with empty values)",
    )
    g.add_argument(
        "--limit", type=int, metavar="N", help="read only the first N data rows (a trial load)"
    )
    g.add_argument(
        "--unique-ids",
        action="store_true",
        default=None,
        help="the export holds each id once: skip the pre-pass that folds repeated ids "
        "(default: fold them; repeats seen anyway are reported)",
    )
    g.add_argument(
        "--max-batch-rows",
        type=int,
        metavar="N",
        help="rows per batch (default: 500000, also the max)",
    )
    g.add_argument(
        "--max-batch-bytes",
        type=int,
        metavar="N",
        help="bytes per batch body (default: 50000000; must stay under 50 MiB)",
    )


def _add_run(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("submission, tracking and outputs")
    g.add_argument(
        "--concurrency", type=int, metavar="N", help="max submits in flight (default: 8)"
    )
    g.add_argument(
        "--max-attempts", type=int, metavar="N", help="attempts per batch submit (default: 8)"
    )
    g.add_argument(
        "--stop-after-errors",
        type=int,
        metavar="N",
        help="exit 3 after N submit attempts in a row failed with an error other than "
        "throttling; unsent batches wait for the next run (default: off)",
    )
    g.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="follow batches until final (default: --wait); --no-wait exits 3 once all are sent",
    )
    g.add_argument(
        "--status-timeout",
        type=float,
        metavar="S",
        help="stop S seconds after this run started (sending included), exit 3 (default: 86400)",
    )
    g.add_argument(
        "--work-dir", metavar="DIR", help="journal and outputs (default: ./uploader-runs/JOB_ID)"
    )
    g.add_argument(
        "--fresh",
        action="store_true",
        default=None,
        help="start over even if the work dir has a journal (default: resume)",
    )
    g.add_argument(
        "--report", metavar="PATH", help="also write report.json here (default: WORK_DIR only)"
    )
    g.add_argument("--junit", metavar="PATH", help="write a JUnit XML report (default: none)")
    g.add_argument(
        "--summary-md",
        metavar="FILE",
        help="write a Markdown job summary; inside GitHub Actions it is also appended to "
        "GITHUB_STEP_SUMMARY (default: none)",
    )
    g.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        help="progress display (default: auto = bars on a terminal, log lines otherwise)",
    )
    g.add_argument(
        "--loop", choices=("auto", "uvloop", "asyncio"), help="event loop (default: auto)"
    )


def _add_observability(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("logs and metrics")
    g.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text, or one JSON object per line (default: text)",
    )
    g.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus /metrics on 127.0.0.1:N during the run (default: off)",
    )
    g.add_argument(
        "--metrics-textfile",
        metavar="PATH",
        help="rewrite Prometheus metrics to PATH every few seconds (default: off)",
    )


def add_pacing_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pacing (each off unless given)")
    g.add_argument(
        "--max-rows-per-s", type=float, metavar="R", help="cap on rows submitted per second"
    )
    g.add_argument(
        "--window",
        metavar="HH:MM-HH:MM",
        help="submit new batches only inside these hours (may wrap midnight)",
    )
    g.add_argument(
        "--timezone", metavar="ZONE", help="IANA zone of --window and --daily-rows (default: local)"
    )
    g.add_argument(
        "--exit-outside-window",
        action="store_true",
        default=None,
        help="outside the window, exit 3 once accepted batches are final (default: wait)",
    )
    g.add_argument(
        "--daily-rows",
        type=int,
        metavar="N",
        help="rows per calendar day for this job, across reruns; then exit 3",
    )
    g.add_argument(
        "--max-backlog-rows",
        type=int,
        metavar="N",
        help="no new submit while more than N submitted rows are not final in Target",
    )
    g.add_argument(
        "--send-for",
        dest="send_for_s",
        type=float,
        metavar="S",
        help="no new batch S seconds after the run started; then exit 3 once the accepted "
        "batches are final",
    )


# What -v adds, for the commands where it adds something: the others log nothing at
# the info level (split, check, status, report, emulator), so they do not offer it.
_BATCH_LOGS = "log each retry (reason and wait) and each batch accepted, complete or failed"
_VERBOSE_HELP = {
    "run": _BATCH_LOGS,
    "submit": _BATCH_LOGS,
    "demo": _BATCH_LOGS,
    "bench": _BATCH_LOGS,
    "verify": "log each retry of a profile fetch (reason and wait)",
}


def _add_global(p: argparse.ArgumentParser, *, command: str | None) -> None:
    """--debug, and -v where it does something, accepted before and after the command name.

    Under a command the defaults are SUPPRESS, so a flag given before the
    command is not reset by the command's parser. Before the command, -v is
    accepted whatever the command (a global flag in an alias or a script) and
    does something only for those of ``_VERBOSE_HELP``.
    """
    default: Any = False if command is None else argparse.SUPPRESS
    p.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and debug logs"
    )
    if command is None:
        verbose = f"{_BATCH_LOGS} ({', '.join(_VERBOSE_HELP)}; no effect on the others)"
    elif command in _VERBOSE_HELP:
        verbose = _VERBOSE_HELP[command]
    else:
        return
    p.add_argument("-v", "--verbose", action="store_true", default=default, help=verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="uploader",
        description="Bulk-load visitor profiles into Adobe Target: streamed, concurrent, "
        "resumable, and accounted for row by row.",
        epilog="Exit codes: 0 all rows successful; 1 finished with rejected or failed rows; "
        "2 usage/config/input error, nothing sent; 3 not finished yet, run the same command again; "
        "4 internal error (the journal is intact).",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"uploader {__version__}")
    _add_global(parser, command=None)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    run = sub.add_parser(
        "run", help="chunk, submit and track to completion (resumable)", formatter_class=_Formatter
    )
    run.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    add_config_argument(run)
    _add_target(run)
    _add_input(run)
    _add_run(run)
    add_pacing_arguments(run)
    _add_observability(run)

    split = sub.add_parser(
        "split",
        help="only write batch files and rejects.csv; no network",
        formatter_class=_Formatter,
    )
    split.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    split.add_argument("--out", metavar="DIR", required=True, help="output directory")
    add_config_argument(split)
    _add_input(split)

    check = sub.add_parser(
        "check",
        help="read the whole export and show what a run would send; no network",
        formatter_class=_Formatter,
    )
    check.add_argument("input", metavar="INPUT", help="the export, as for run, or -")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.add_argument(
        "--show", type=int, default=5, metavar="N", help="examples shown per finding (default: 5)"
    )
    add_config_argument(check)
    _add_input(check)

    submit = sub.add_parser(
        "submit", help="submit existing batch files and track them", formatter_class=_Formatter
    )
    submit.add_argument("files", nargs="+", metavar="FILE|DIR", help="batch files or directories")
    add_config_argument(submit)
    _add_target(submit)
    _add_run(submit)
    add_pacing_arguments(submit)
    _add_observability(submit)

    status = sub.add_parser(
        "status",
        help="show where a run stands (from its journal)",
        formatter_class=_Formatter,
        epilog=STATUS_EXIT_CODES,
    )
    status.add_argument(
        "work_dir",
        nargs="+",
        metavar="WORK_DIR",
        help="the work dir of a run or submit; several (the shards of one load) are also combined",
    )
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.add_argument(
        "--refresh",
        action="store_true",
        help="first ask Target for the status of batches not final yet, and update the journal "
        "and report.json (submits nothing)",
    )
    status.add_argument(
        "--config", metavar="PATH", help="with --refresh: TOML config (token_env, token_hosts)"
    )
    status.add_argument(
        "--token-env", metavar="NAME", help="with --refresh: variable holding the Bearer token"
    )
    status.add_argument(
        "--allow-http",
        action="store_true",
        default=None,
        help="with --refresh: allow plain http:// to a non-loopback host",
    )

    report = sub.add_parser(
        "report",
        help="an offline HTML page with pictures of a run (from its journal)",
        formatter_class=_Formatter,
    )
    report.add_argument("work_dir", metavar="WORK_DIR", help="the work dir of a run or submit")
    report.add_argument(
        "--html", metavar="FILE", required=True, help="write the page here (self-contained)"
    )

    from uploader import emulator

    emu = sub.add_parser(
        "emulator", help="serve the local Target emulator", formatter_class=_Formatter
    )
    emulator.add_arguments(emu)

    from uploader import demo

    dem = sub.add_parser(
        "demo",
        help="generate an export, start the emulator, run, verify",
        formatter_class=_Formatter,
    )
    demo.add_arguments(dem)

    from uploader import verify

    ver = sub.add_parser(
        "verify",
        help="fetch profiles back from Target and compare them with the load",
        formatter_class=_Formatter,
    )
    verify.add_arguments(ver)

    from uploader import bench

    ben = sub.add_parser(
        "bench", help="measure submission throughput against a target", formatter_class=_Formatter
    )
    bench.add_arguments(ben)
    for name, command in sub.choices.items():
        _add_global(command, command=name)
    return parser


def settings_from_args(ns: argparse.Namespace, *, require_client: bool = True) -> Settings:
    overrides: dict[str, Any] = {}
    for table in (_TARGET_FLAGS, _INPUT_FLAGS, _RUN_FLAGS, PACING_FLAGS):
        for dest, key in table.items():
            if hasattr(ns, dest):
                overrides[key] = getattr(ns, dest)
    return load_settings(getattr(ns, "config", None), overrides, require_client=require_client)


def run_async(coro: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run on uvloop when asked or available, plain asyncio otherwise."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop in ("auto", "uvloop"):
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if loop == "uvloop":
                raise ConfigError("run.loop = uvloop, but uvloop is not installed") from None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _cmd_run(ns: argparse.Namespace) -> int:
    from uploader.commands import run_command

    return run_command(ns.input, _run_settings(ns))


def _cmd_submit(ns: argparse.Namespace) -> int:
    from uploader.commands import submit_command

    return submit_command([Path(f) for f in ns.files], _run_settings(ns))


def _run_settings(ns: argparse.Namespace) -> Settings:
    """Settings of run/submit; the log format may come from the config file too."""
    settings = settings_from_args(ns)
    if settings.run.log_format != "text":
        ns.log_format = settings.run.log_format
        configure_logging(logging.getLogger().level, settings.run.log_format)
    return settings


def _cmd_split(ns: argparse.Namespace) -> int:
    from uploader.split import run_split

    settings = settings_from_args(ns, require_client=False)
    return run_split(ns.input, Path(ns.out), settings.input, settings.batch)


def _cmd_check(ns: argparse.Namespace) -> int:
    from uploader.check import run_check

    settings = settings_from_args(ns, require_client=False)
    return run_check(ns.input, settings.input, settings.batch, as_json=ns.json, show=ns.show)


def _cmd_status(ns: argparse.Namespace) -> int:
    from uploader.commands import status_command

    if ns.refresh:
        from uploader.refresh import refresh_work_dir

        flags = {"target.token_env": ns.token_env, "target.allow_http": ns.allow_http}
        for work_dir in ns.work_dir:
            r = run_async(refresh_work_dir(Path(work_dir), config=ns.config, flags=flags))
            print(
                f"{work_dir}: asked Target about {r.asked} open batches: {r.complete} complete, "
                f"{r.stuck} stuck, {r.incomplete} still incomplete, {r.errors} not answered",
                file=sys.stderr,
            )
    return status_command([Path(d) for d in ns.work_dir], as_json=ns.json)


def _cmd_report(ns: argparse.Namespace) -> int:
    from uploader.html_report import write_html_report

    out = write_html_report(Path(ns.work_dir), Path(ns.html))
    print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK


def _cmd_emulator(ns: argparse.Namespace) -> int:
    from uploader import emulator

    config = emulator.config_from_args(ns)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_async(emulator.serve_forever(config, ns.host, ns.port))
    except OSError as exc:  # the port is taken, or the address is not ours to bind
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {ns.host} port {ns.port}: {reason}") from exc
    return EXIT_OK


def _cmd_demo(ns: argparse.Namespace) -> int:
    from uploader import demo

    return demo.main(ns)


def _cmd_verify(ns: argparse.Namespace) -> int:
    from uploader import verify

    return verify.main(ns)


def _cmd_bench(ns: argparse.Namespace) -> int:
    from uploader import bench

    return bench.main(ns)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "split": _cmd_split,
    "check": _cmd_check,
    "submit": _cmd_submit,
    "status": _cmd_status,
    "report": _cmd_report,
    "emulator": _cmd_emulator,
    "demo": _cmd_demo,
    "bench": _cmd_bench,
    "verify": _cmd_verify,
}


def _print_error(ns: argparse.Namespace, event: str, message: str) -> None:
    """The one error line: plain text, or a JSON log line under --log-format json."""
    if getattr(ns, "log_format", None) == "json":
        message = json_line("error", event, message)
    print(redact(message), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports the commands: long enough to be interrupted
    except KeyboardInterrupt:
        print("uploader: interrupted", file=sys.stderr)
        return EXIT_INCOMPLETE
    ns = parser.parse_args(argv)
    level = logging.DEBUG if ns.debug else logging.INFO if ns.verbose else logging.WARNING
    configure_logging(level, getattr(ns, "log_format", None) or "text")
    try:
        return _COMMANDS[ns.command](ns)
    except UploaderError as exc:
        if ns.debug:
            print_exception(exc)  # redacted, like everything we print
        _print_error(ns, "error", f"uploader: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        print("uploader: interrupted", file=sys.stderr)
        return EXIT_INCOMPLETE
    except BrokenPipeError:  # `uploader status --json | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: still one line unless --debug
        if ns.debug:
            print_exception(exc)
        _print_error(
            ns,
            "internal_error",
            f"uploader: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
        )
        return EXIT_INTERNAL
