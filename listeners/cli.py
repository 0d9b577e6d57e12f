"""The ``passerelle`` command: conversion tools, the service, and its operations.

    passerelle convert PATH...          convert files and folders (converter.cli)
    passerelle templates list           routes and templates
    passerelle serve [--config FILE]    run the service (MLLP, HTTP API, delivery)
    passerelle send FILE... --port P    an MLLP client that prints the ACKs
    passerelle worker [--config FILE]   deliver from RabbitMQ (queue.backend = "amqp")
    passerelle health [--config FILE]   exit 0 if the local service's GET /health answers 200
    passerelle dead-letters list|show ID|retry ID|--all|purge ID|--older-than-days N|--all

Configuration is read once here (file + ``PASSERELLE_…`` environment variables) and
passed down; exit status 2 on usage and configuration errors, 130 on Ctrl-C (from the
first import on: no traceback), 141 when the reader of stdout went away, for every command.
"""

# ruff: noqa: E402 (the imports after the SIGINT handler come after it on purpose)

from __future__ import annotations

import os
import sys

# First: the rest of this module's imports take most of a second (``python -m
# listeners.cli``; the ``passerelle`` script has installed it already, in listeners.entry).
from .entry import defer_stops, quiet_interrupts, run_quietly

defer_stops(as_main=__name__ == "__main__")
_QUIET_AT_START = quiet_interrupts(as_main=__name__ == "__main__")

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from .config import ConfigError, HttpConfig, ServiceConfig, load_config, load_http_config

# The other commands' modules (the converter, asyncio, the MLLP client, logging) are
# imported by the commands that use them: ``passerelle health``, the container's
# healthcheck run every few seconds, imported the whole converter (2 s on a loaded host)
# to send one GET; it now imports the configuration and urllib alone.

if TYPE_CHECKING:
    import urllib.error

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: 128 + SIGINT, as every command (converter.cli).
EXIT_INTERRUPTED = 130

_Config = TypeVar("_Config", ServiceConfig, HttpConfig)
_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration (environment variables override it)",
    )


def _load(args: argparse.Namespace) -> ServiceConfig:
    return _located(load_config, args.config)


def _located(load: Callable[[Path | None], _Config], path: Path | None) -> _Config:
    """``load(path)``, its error naming the configuration file the setting came from."""
    try:
        return load(path)
    except ConfigError as exc:
        if exc.path is None:
            raise
        raise ConfigError(f"{exc.path}: {exc}") from None


#: aio-pika's own debug logs print message headers: keep them quiet.
_AMQP_LOG_LEVELS = {"aio_pika": "WARNING", "aiormq": "WARNING"}


def _warn_environment(*, to_stderr: bool = False) -> None:
    """Name the ``PASSERELLE_…`` variables that are set but not used (a typo)."""
    import logging

    from .config.environment import environment_warnings

    for warning in environment_warnings(os.environ):
        if to_stderr:
            print(f"passerelle: warning: {warning}", file=sys.stderr)
        else:
            logging.getLogger("passerelle.config").warning("%s", warning)


def run_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.print_config:
        import json

        _warn_environment(to_stderr=True)
        print(json.dumps(config.redacted(), indent=2, ensure_ascii=False))
        return EXIT_OK
    import asyncio

    from .errors import ServiceError
    from .logs import configure_logging

    configure_logging(config.log_format, config.log_level, levels=_AMQP_LOG_LEVELS)
    _warn_environment()
    from .service import Service  # imports uvicorn and the pool only when serving

    try:
        # EXIT_OK after a stop signal; EXIT_RESTART (75) when it stopped itself.
        return asyncio.run(Service(config).run())
    except (OSError, ServiceError) as exc:
        # A port in use, a queue already opened by another service: one line, no trace.
        print(f"passerelle: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run_worker(args: argparse.Namespace) -> int:
    config = _load(args)
    if config.queue.backend != "amqp":
        raise ConfigError(
            "passerelle worker consumes RabbitMQ partitions: it needs "
            'queue.backend = "amqp" (and [amqp] url)'
        )
    import asyncio

    from .errors import ServiceError
    from .logs import configure_logging

    configure_logging(config.log_format, config.log_level, levels=_AMQP_LOG_LEVELS)
    _warn_environment()
    from .amqp.worker import AmqpWorker  # imports aio-pika and the pool only here

    try:
        asyncio.run(AmqpWorker(config).run())
    except (OSError, ServiceError) as exc:
        # As serve: conversion processes dying at every start were a traceback.
        print(f"passerelle: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def health_url(config: ServiceConfig | HttpConfig) -> str:
    """``/health`` of the service or worker this configuration runs, on this host."""
    http = config.http if isinstance(config, ServiceConfig) else config
    host = http.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}/health"


def run_health(args: argparse.Namespace) -> int:
    """The container's HEALTHCHECK: the port comes from the configuration and environment
    (PASSERELLE_HTTP_PORT) the service itself read."""
    import http.client
    import urllib.error
    import urllib.request

    # [http] alone: the other sections are the service's to check (and to report).
    url = health_url(_located(load_http_config, args.config))
    # No proxy: an HTTP_PROXY in the container's environment must not receive the probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=args.timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        if status != 200:
            # The 503's body says what stopped for good (the queue's writer…): what
            # `docker inspect` shows of a failed healthcheck is this line.
            print(f"passerelle: {url}: HTTP {status}{_stopped_parts(exc)}", file=sys.stderr)
            return EXIT_FAILED
    except (OSError, ValueError, http.client.HTTPException) as exc:
        print(f"passerelle: {url}: {_unreachable(exc, args.timeout)}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        print(f"passerelle: {url}: HTTP {status}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _unreachable(exc: Exception, timeout: float) -> str:
    """Why ``/health`` got no answer, as an operator reads it (it was urllib's
    ``<urlopen error [Errno 111] Connection refused>``)."""
    reason: object = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return (
            "connection refused: nothing listens there (the service is not running, or "
            "listens on another port than http.port / PASSERELLE_HTTP_PORT of this "
            "configuration)"
        )
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g}s (the service is overloaded or stuck)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _stopped_parts(exc: urllib.error.HTTPError) -> str:
    """``: stopped: queue (…)`` from a ``/health`` 503's JSON body, else nothing."""
    import json

    try:
        body = json.loads(exc.read(16384))
    except (OSError, ValueError):
        return ""
    stopped = body.get("stopped") if isinstance(body, dict) else None
    if not isinstance(stopped, dict) or not stopped:
        return ""
    return ": stopped: " + "; ".join(f"{part} ({why})" for part, why in stopped.items())


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be a positive number, got {text!r}")
    return value


def run_dead_letters(args: argparse.Namespace) -> int:
    from . import dead_letters_cli

    return dead_letters_cli.run_dead_letters(args, _load(args))


def _days(text: str) -> float:
    """A number of days, finite and not negative: a typo like -5 must not purge all."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not math.isfinite(days) or days < 0:
        raise argparse.ArgumentTypeError(f"days must be a finite number ≥ 0, got {text!r}")
    return days


def _parser() -> tuple[argparse.ArgumentParser, _Subparsers]:
    parser = argparse.ArgumentParser(
        prog="passerelle",
        description="HL7 v2 and CDA to FHIR R4: converter, MLLP/HTTP service, tools",
    )
    return parser, parser.add_subparsers(dest="command", required=True)


def _add_health_command(subparsers: _Subparsers) -> None:
    health = subparsers.add_parser(
        "health",
        help="check that the local service answers GET /health (a container healthcheck)",
        description="GET /health on this host, on the HTTP port of the configuration "
        "(file and PASSERELLE_HTTP_PORT / PASSERELLE_HTTP_HOST); exit 0 on a 200, 1 otherwise.",
    )
    _add_config_option(health)
    health.add_argument(
        "--timeout", type=_seconds, default=4.0, help="seconds to wait for the answer (4)"
    )
    health.set_defaults(handler=run_health)


def build_parser() -> argparse.ArgumentParser:
    from converter import cli as converter_cli

    from .mllp.client import add_send_command

    parser, subparsers = _parser()
    converter_cli.add_commands(subparsers)

    serve = subparsers.add_parser(
        "serve",
        help="run the service",
        description="Run the MLLP listener, the HTTP API and the "
        "delivery workers until SIGTERM, SIGINT or SIGHUP.",
    )
    _add_config_option(serve)
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (secrets masked) and exit",
    )
    serve.set_defaults(handler=run_serve)

    worker = subparsers.add_parser(
        "worker",
        help="deliver messages from RabbitMQ partitions (scale-out)",
        description='Consume the RabbitMQ partition queues of queue.backend = "amqp": '
        "convert and deliver, one message at a time per partition, sharing the partitions "
        "with the other workers, until SIGTERM, SIGINT or SIGHUP.",
    )
    _add_config_option(worker)
    worker.set_defaults(handler=run_worker)

    _add_health_command(subparsers)
    add_send_command(subparsers)

    dead = subparsers.add_parser("dead-letters", help="inspect and replay failed messages")
    dead_sub = dead.add_subparsers(dest="dl_command", required=True)
    listing = dead_sub.add_parser("list", help="dead letters with their error")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    show = dead_sub.add_parser("show", help="one dead letter's metadata and error")
    show.add_argument("id", help="its id (SQLite: a number; RabbitMQ: the message id)")
    show.add_argument(
        "--payload", action="store_true", help="also print the message itself (patient data)"
    )
    retry = dead_sub.add_parser("retry", help="queue dead letters again")
    retry.add_argument("id", nargs="?")
    retry.add_argument("--all", action="store_true")
    purge = dead_sub.add_parser("purge", help="delete dead letters")
    purge.add_argument("id", nargs="?", help="one dead letter (SQLite queue)")
    purge.add_argument("--older-than-days", type=_days, metavar="DAYS")
    purge.add_argument("--all", action="store_true", help="delete every dead letter")
    for sub in (listing, show, retry, purge):
        _add_config_option(sub)
        sub.add_argument(
            "--amqp",
            action="store_true",
            help='RabbitMQ\'s dead-letter queue (the default with queue.backend = "amqp")',
        )
        sub.set_defaults(handler=run_dead_letters)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["health"]:
        return _main_health(words)
    from converter import cli as converter_cli
    from converter.errors import ConfigurationError

    return converter_cli.run_command(
        build_parser, argv, usage_errors=(ConfigError, ConfigurationError)
    )


def _main_health(argv: list[str]) -> int:
    """``passerelle health``, parsed and run without the other commands' modules (which
    the full parser imports), under the exit statuses of every command."""
    try:
        parser, subparsers = _parser()
        _add_health_command(subparsers)
        args = parser.parse_args(argv)
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"passerelle: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_quietly(main) if _QUIET_AT_START else main())
