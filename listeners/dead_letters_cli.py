"""``passerelle dead-letters``: list, show, retry and purge failed messages.

Dead letters live in the service's SQLite queue, or — with ``queue.backend = "amqp"``, or
``--amqp`` for the AMQP consumer's — in RabbitMQ's dead-letter queue. Both print the same
way: one line per dead letter, and for one dead letter its metadata and error as JSON,
without what may quote patient data (the offending value, the server's OperationOutcome,
the message itself) unless ``--payload`` asks for it.

Commands that change the store say what they act on: ``retry`` takes an ID *or* ``--all``
(both is a usage error, not "all"), and ``purge`` deletes only what ``--older-than-days``
selects, or everything with an explicit ``--all`` — never everything by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from converter.printable import printable, printable_json

from .config import ConfigError, ServiceConfig
from .errors import QueueError
from .queue.base import Envelope

if TYPE_CHECKING:
    from .queue.sqlite import SqliteQueue

__all__ = ["run_dead_letters"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: A URL in an error reason (up to the next blank).
_URL = re.compile(r"https?://\S+")
#: A dead letter id of the SQLite queue (its row's seq): ASCII digits (at most SQLite's
#: largest integer, the queue's SQLITE_MAX_INT).
_SQLITE_ID = re.compile(r"[0-9]+")


def run_dead_letters(args: argparse.Namespace, config: ServiceConfig) -> int:
    problem = _usage_problem(args)
    if problem is not None:
        print(f"passerelle: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.amqp or config.queue.backend == "amqp":
        return asyncio.run(_amqp(args, config))
    return _sqlite(args, config)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Selections that are ambiguous or would destroy more than asked (exit 2)."""
    if args.dl_command == "retry" and args.all and args.id is not None:
        # Retrying everything when one was named surprises; refuse rather than guess.
        return f"give a dead letter ID or --all, not both (got {args.id!r} and --all)"
    if args.dl_command == "purge":
        one = getattr(args, "id", None)  # Namespaces built by hand (tests) may lack it
        chosen = [one is not None, args.older_than_days is not None, bool(args.all)]
        if sum(chosen) > 1:
            return "give one dead letter ID, --older-than-days or --all, not several"
        if not any(chosen):
            # A bare purge used to delete every dead letter: they are the only copy of
            # messages that were acknowledged and never delivered.
            return (
                "purge deletes dead letters for good: give a dead letter ID, "
                "--older-than-days DAYS, or --all to delete every one"
            )
    return None


#: The wording of a template not found in reasons stored before it moved the name to
#: ``detail`` (the name in Python's repr, single or double quotes).
_TEMPLATE_NOT_FOUND = re.compile(r"""template ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") not found""")


# -- printing (both stores) -------------------------------------------------------------------
def _reason(error: dict[str, Any], *, payload: bool = False) -> str:
    """The error's reason without URL credentials, and without the server's diagnostics
    unless ``payload`` (``show --payload``) asks for what may quote patient data.

    Dead letters stored before errors named the status only had the OperationOutcome's
    summary appended to their reason, patient values and all; it is cut out here when the
    outcome stored beside it shows what it was (``--payload`` shows the outcome itself).
    Their reasons also quoted the destination URL as configured: always shown redacted.
    Dead letters stored before 2026-12-01 also named a template not found in their reason,
    and a template may build that name from the message (``site/`` and a patient's name):
    withheld unless ``payload`` (the converter now puts it in ``detail``).
    """
    reason = str(error.get("reason", ""))
    if not payload:
        reason = _TEMPLATE_NOT_FOUND.sub("template not found", reason)
    outcome = error.get("outcome")
    if not payload and isinstance(outcome, dict) and ": " in reason:
        from .delivery.fhir import outcome_summary  # httpx & co. only for such a record

        reason = reason.replace(f": {outcome_summary(outcome)}", "")
    if "://" in reason:
        from .delivery.urls import redact_url

        reason = _URL.sub(lambda found: redact_url(found.group(0)), reason)
    return reason


def _local(when: float | None, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(when)) if when is not None else "?"


def _line(
    out: TextIO,
    id: object,
    failed_at: float | None,
    envelope: Envelope | None,
    error: dict[str, Any],
) -> None:
    kind = error.get("kind", "?")
    if envelope is None:
        line = (
            f"{id!s:>8}  {_local(failed_at, '%Y-%m-%d %H:%M:%S')}  {'?':14} "
            f"(not a Passerelle envelope)  {kind}: {_reason(error)}"
        )
        print(printable(line), file=out)
        return
    line = (
        f"{id!s:>8}  {_local(failed_at, '%Y-%m-%d %H:%M:%S')}  "
        f"{envelope.message_type or '?':14} "
        f"control-id={envelope.control_id or '-'}  "
        f"sender={envelope.sender}  "
        f"{kind}: {_reason(error)}"
    )
    # Sender-supplied values: control characters are shown escaped, never interpreted.
    print(printable(line), file=out)


def _show(
    out: TextIO,
    *,
    info: dict[str, Any],
    envelope: Envelope | None,
    error: dict[str, Any],
    body: bytes,
    payload: bool,
) -> None:
    error = dict(error)
    if "reason" in error:
        error["reason"] = _reason(error, payload=payload)
    # The offending value and the server's OperationOutcome may quote patient data:
    # shown, like the message itself, only on request.
    detail = error.pop("detail", None)
    outcome = error.pop("outcome", None)
    if outcome is not None and not payload:
        error["outcome"] = "(the server's OperationOutcome: shown with --payload)"
    if envelope is not None:
        info |= {
            "received_at": _local(envelope.received_at, "%Y-%m-%dT%H:%M:%S%z"),
            "sender": envelope.sender,
            "listener": envelope.listener,
            "control_id": envelope.control_id,
            "message_type": envelope.message_type,
            "route": envelope.route,
        }
    info |= {"size": len(body), "error": error}
    if payload:
        if detail:
            error["detail"] = detail
        if outcome is not None:
            error["outcome"] = outcome
    print(printable_json(json.dumps(info, indent=2, ensure_ascii=False)), file=out)
    if payload:
        print("--- message ---", file=out)
        text = body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        print("\n".join(printable(line) for line in text.split("\n")), file=out)


# -- the SQLite queue --------------------------------------------------------------------------
def _sqlite(args: argparse.Namespace, config: ServiceConfig) -> int:
    from .queue.sqlite import SqliteQueue

    if not config.queue.path.exists():
        raise ConfigError(f"no queue at {config.queue.path} (is the data_dir right?)")
    queue = SqliteQueue(config.queue.path)
    try:
        return _sqlite_command(args, queue)
    except QueueError as exc:
        # A file locked past the busy timeout (a backup), not a queue, of another schema
        # version (list and show read it read-only, retry and purge write only their own
        # version: only the service migrates): one line, no traceback. The text is ours,
        # without content.
        print(f"passerelle: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _sqlite_id(text: str | None) -> int | None:
    """A dead letter id of the SQLite queue: ASCII digits within SQLite's integers (``²``
    passes ``str.isdigit`` and a 20-digit number overflows SQLite), else None."""
    from .queue.sqlite import SQLITE_MAX_INT

    if text is None or not _SQLITE_ID.fullmatch(text) or int(text) > SQLITE_MAX_INT:
        return None
    return int(text)


def _sqlite_command(args: argparse.Namespace, queue: SqliteQueue) -> int:
    out = sys.stdout
    if args.dl_command == "list":
        letters = queue.list_dead_letters(limit=args.limit, offset=args.offset)
        print(f"{queue.count_dead_letters()} dead letter(s)", file=out)
        for listed in letters:
            _line(out, listed.id, listed.failed_at, listed.envelope, listed.error)
        return EXIT_OK
    letter_id = _sqlite_id(getattr(args, "id", None))
    if (
        args.dl_command in ("show", "retry", "purge")
        and letter_id is None
        and getattr(args, "id", None) is not None
    ):
        print(
            printable(f"passerelle: dead letter ids of the SQLite queue are numbers: {args.id!r}"),
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.dl_command == "show":
        assert letter_id is not None  # the parser requires it
        letter = queue.get_dead_letter(letter_id)
        if letter is None:
            print(f"passerelle: no dead letter {args.id}", file=sys.stderr)
            return EXIT_FAILED
        info = {
            "id": letter.id,
            "attempts": letter.attempts,
            "failed_at": _local(letter.failed_at, "%Y-%m-%dT%H:%M:%S%z"),
        }
        _show(
            out,
            info=info,
            envelope=letter.envelope,
            error=letter.error,
            body=letter.envelope.payload,
            payload=args.payload,
        )
        return EXIT_OK
    if args.dl_command == "retry":
        if args.all:
            print(f"{queue.retry_all_dead_letters()} dead letter(s) queued again", file=out)
            return EXIT_OK
        if letter_id is None:
            print("passerelle: give a dead letter ID or --all", file=sys.stderr)
            return EXIT_USAGE
        if not queue.retry_dead_letter(letter_id):
            print(f"passerelle: no dead letter {args.id}", file=sys.stderr)
            return EXIT_FAILED
        print(f"dead letter {args.id} queued again", file=out)
        return EXIT_OK
    if args.dl_command == "purge":
        if letter_id is not None:
            # One message that must never be delivered (a training patient sent to the
            # production feed), the others to be retried --all once the cause is fixed:
            # before, only --all or an age could delete it, with the others.
            if not queue.purge_dead_letter(letter_id):
                print(f"passerelle: no dead letter {args.id}", file=sys.stderr)
                return EXIT_FAILED
            print(f"dead letter {args.id} purged", file=out)
            return EXIT_OK
        print(f"{queue.purge_dead_letters(_older_than(args))} dead letter(s) purged", file=out)
        return EXIT_OK
    return EXIT_USAGE


def _older_than(args: argparse.Namespace) -> float | None:
    """``purge --older-than-days`` in seconds; None (``purge --all``) purges every one."""
    return None if args.older_than_days is None else args.older_than_days * 86400


# -- RabbitMQ's dead-letter queue --------------------------------------------------------------
async def _amqp(args: argparse.Namespace, config: ServiceConfig) -> int:
    from .amqp.broker import PublishFailure
    from .amqp.dead_letters import AmqpDeadLetters

    out = sys.stdout
    try:
        async with AmqpDeadLetters(config.amqp) as store:
            if args.dl_command == "list":
                print(f"{await store.count()} dead letter(s)", file=out)
                for letter in await store.read(limit=args.limit, offset=args.offset):
                    _line(out, letter.id, letter.failed_at, letter.envelope, letter.error)
                return EXIT_OK
            if args.dl_command == "show":
                found = await store.find(args.id)
                if found is None:
                    print(f"passerelle: no dead letter {args.id}", file=sys.stderr)
                    return EXIT_FAILED
                info = {
                    "id": found.id,
                    "position": found.position,
                    "attempts": found.attempts,
                    "failed_at": _local(found.failed_at, "%Y-%m-%dT%H:%M:%S%z"),
                    "retry_to": (
                        {"exchange": found.target[0], "routing_key": found.target[1]}
                        if found.target
                        else None
                    ),
                }
                _show(
                    out,
                    info=info,
                    envelope=found.envelope,
                    error=found.error,
                    body=found.body,
                    payload=args.payload,
                )
                return EXIT_OK
            if args.dl_command == "retry":
                if not args.all and args.id is None:
                    print("passerelle: give a dead letter ID or --all", file=sys.stderr)
                    return EXIT_USAGE
                sent, skipped = await store.retry(
                    lambda letter: bool(args.all) or letter.id == args.id
                )
                if skipped:
                    print(
                        f"passerelle: {skipped} dead letter(s) not retried: not a Passerelle "
                        "envelope and no origin to send it back to",
                        file=sys.stderr,
                    )
                if not sent and not skipped and not args.all:
                    print(f"passerelle: no dead letter {args.id}", file=sys.stderr)
                    return EXIT_FAILED
                print(f"{sent} dead letter(s) sent again", file=out)
                return EXIT_FAILED if skipped and not sent else EXIT_OK
            if args.dl_command == "purge":
                if getattr(args, "id", None) is not None:
                    print(
                        "passerelle: purge ID works on the SQLite queue only; RabbitMQ's "
                        "dead-letter queue takes --older-than-days or --all",
                        file=sys.stderr,
                    )
                    return EXIT_USAGE
                print(f"{await store.purge(_older_than(args))} dead letter(s) purged", file=out)
                return EXIT_OK
    except ConnectionError as exc:
        print(f"passerelle: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PublishFailure as exc:
        print(
            f"passerelle: a retry was not confirmed by RabbitMQ ({exc}); "
            "what was not sent again is still a dead letter",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_USAGE
