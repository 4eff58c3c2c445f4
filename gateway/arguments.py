"""The command line's arguments: every command's options, and the handler each one runs."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

# 4 ms, with no SQLite: the one list of decisions the log holds, never a copy of it.
from gateway.sharelog.record import DECISIONS

if TYPE_CHECKING:
    from gateway.settings import Settings

# The parser is built for every command, `health` every few seconds: a command's module (the
# share log's reader and SQLite for `logs`, the consent registry for `consent`) is imported only
# when that command runs, by the handler `deferred` gives it.

Handler = Callable[[argparse.Namespace, "Settings"], int]

TIME_HELP = (
    "ISO date or date-time (a date is midnight in the configured time zone; a date-time "
    "without offset is in that zone), or an age such as 30m, 24h, 7d, 2w"
)
CONSENT_CSV_HEADER = ("subject", "partner", "purpose", "granted_at", "withdrawn_at", "reference")
LOGS_DESCRIPTION = (
    "The `share-gateway logs` commands: query, summary, subject, verify, export and prune."
)
# Below the image's HEALTHCHECK timeout (3 s) and the example pod's probes' (3 s): the probe
# reports its own failure, in its own words, before it is killed.
HEALTH_TIMEOUT_S = 2.0
# Any longer and the value is a typo (2000 for 2), never a wait anyone means a probe to make.
MAX_HEALTH_TIMEOUT_S = 300.0


def deferred(module: str, name: str) -> Handler:
    """The handler `name` of `module`, which is imported only when the handler runs."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        handler: Handler = getattr(importlib.import_module(module), name)
        return handler(args, settings)

    run.__name__ = name
    return run


def utf8(value: str) -> str:
    """An argument as typed, refused (exit 2) if it holds bytes that are not UTF-8: the log holds
    only UTF-8 text, and such a value could match nothing."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("not valid UTF-8") from None
    return value


_DECIMAL = re.compile(r"-?[0-9]+")


def decimal_int(value: str) -> int:
    """A whole number written in the digits 0-9: Python's `int` also reads full-width digits,
    another script's digits and `1_000`, which no one types as a count or a port on purpose."""
    if not _DECIMAL.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not a whole number in the digits 0-9: {value!r}")
    return int(value)


_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?|\.[0-9]+")


def health_timeout(value: str) -> float:
    """Seconds written as a positive decimal (`2`, `0.5`): `float` also reads `inf`, `nan`, `1e3`
    and `1_0`, and a timeout of 0 or less would give up before asking."""
    if not _SECONDS.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not a number of seconds such as 2 or 0.5: {value!r}")
    seconds = float(value)
    if not 0 < seconds <= MAX_HEALTH_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_HEALTH_TIMEOUT_S:g} seconds: {value!r}"
        )
    return seconds


def add_health(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `health`: asks the running gateway, where its settings put it, whether it answers."""
    health = subparsers.add_parser(
        "health",
        help="exit 0 if the gateway its settings describe answers, else 1",
        description="Ask the gateway at the address its settings (gateway.yaml, SHARE_GATEWAY_* "
        "variables, --host, --port) give it: GET /_gateway/health, or /_gateway/ready. Exit 0 "
        "on 200, printing nothing; 1 otherwise, with one line on stderr; 2 when the settings "
        "or the options are wrong.",
    )
    health.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    health.add_argument("--host", help="as given to serve: a wildcard is asked on loopback")
    health.add_argument("--port", type=decimal_int, help="as given to serve")
    health.add_argument(
        "--ready",
        action="store_true",
        help="ask /_gateway/ready (contracts loaded, share log writable) instead of health",
    )
    health.add_argument(
        "--timeout",
        type=health_timeout,
        default=HEALTH_TIMEOUT_S,
        metavar="S",
        help=f"seconds to connect and be answered in all (default: {HEALTH_TIMEOUT_S:g})",
    )
    health.set_defaults(handler=deferred("gateway.probe", "cmd_health"))


def add_logs(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `logs` and its sub-commands; each sets `handler(args, settings) -> exit code`."""
    logs = subparsers.add_parser(
        "logs", help="review, verify, export and prune the share log", description=LOGS_DESCRIPTION
    )
    sub = logs.add_subparsers(dest="logs_command", required=True, metavar="COMMAND")

    def handler(name: str) -> Handler:
        return deferred("gateway.sharelog.commands", name)

    query = sub.add_parser("query", help="list share records")
    _add_filters(query)
    query.add_argument(
        "--subject", metavar="ID", type=utf8, help="only shares about this data subject"
    )
    _add_output(query, ("table", "json", "csv"))
    _add_paging(query)
    _add_log_files(query)
    query.set_defaults(handler=handler("cmd_query"))

    summary = sub.add_parser("summary", help="per partner: shares, records, denials, data sent")
    _add_window(summary)
    _add_output(summary, ("table", "json"))
    _add_log_files(
        summary,
        "summarise this share log instead of share_log.path; repeat it for the logs of "
        "several gateways, added up as if they were one log",
    )
    summary.set_defaults(handler=handler("cmd_summary"))

    subject = sub.add_parser("subject", help="every share that carried data about one data subject")
    subject.add_argument(
        "id", metavar="ID", type=utf8, help="the data subject's id, as the platform knows it"
    )
    subject.add_argument(
        "--include-denied",
        action="store_true",
        help="also list requests about this subject that were denied (nothing was sent)",
    )
    _add_window(subject)
    _add_output(subject, ("table", "json", "csv"))
    _add_paging(subject)
    _add_log_files(subject)
    subject.set_defaults(handler=handler("cmd_subject"))

    verify = sub.add_parser(
        "verify", help="check the tamper-evidence chain; exit 1 naming the first broken record"
    )
    verify.add_argument(
        "--checkpoints",
        metavar="FILE",
        help="also check the log against the share_log_checkpointed lines the gateway printed "
        "(its stdout as kept, JSON lines; - reads standard input): it must still hold each "
        "checkpoint a prune has not removed, and reach the latest",
    )
    verify.add_argument(
        "--export",
        metavar="FILE",
        help="verify a `logs export` file instead, without the share log (- reads standard "
        "input): its lines, hashes and links, its head, and with the hash key its seals",
    )
    verify.add_argument(
        "--sealed",
        action="store_true",
        help="with --export: require the header to be sealed, its seal checked with the hash "
        "key, which proves where the export ends (exit 1 for a header exported without the key; "
        "2 with no key to check it)",
    )
    _add_output(verify, ("text", "json"))
    _add_log_files(
        verify,
        "verify this share log instead of share_log.path; repeat it for the logs of several "
        "gateways, each reported under its name (exit 1 if any fails). --checkpoints takes one",
    )
    verify.set_defaults(handler=handler("cmd_verify"))

    export = sub.add_parser(
        "export", help="JSON lines for an auditor, with the chain evidence to check them"
    )
    _add_window(export)
    export.add_argument(
        "--output", "-o", metavar="FILE", default="-", help="write here (default: stdout)"
    )
    _add_config(export)
    _add_log_files(
        export,
        "export this share log instead of share_log.path (once: each log is a chain of its own)",
    )
    export.set_defaults(handler=handler("cmd_export"))

    prune = sub.add_parser(
        "prune", help="remove records older than the retention period (a signed cut remains)"
    )
    prune.add_argument(
        "--before",
        metavar="T",
        type=utf8,
        help=f"remove records dated before T (default and latest allowed: now minus "
        f"share_log.retention_days); {TIME_HELP}",
    )
    prune.add_argument("--dry-run", action="store_true", help="only count what would go")
    _add_config(prune)
    prune.set_defaults(handler=handler("cmd_prune"))


def _add_config(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a value given before the sub-command is not overwritten by this default.
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="gateway.yaml")


def _add_window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="T", type=utf8, help=f"from T (inclusive); {TIME_HELP}")
    parser.add_argument(
        "--until",
        metavar="T",
        type=utf8,
        help="up to T (exclusive; a bare date includes that day)",
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partner", metavar="P", type=utf8)
    parser.add_argument("--purpose", metavar="P", type=utf8)
    parser.add_argument("--decision", choices=sorted(DECISIONS))
    parser.add_argument("--reason", metavar="CODE", type=utf8, help="e.g. scope_denied")
    parser.add_argument(
        "--caller", metavar="C", type=utf8, help="the calling service (token subject)"
    )
    parser.add_argument("--share-id", metavar="ID", type=utf8, help="one share, by its X-Share-Id")
    _add_window(parser)


def _add_output(parser: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    parser.add_argument("--format", choices=formats, default=formats[0])
    _add_config(parser)


def _add_paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=decimal_int,
        default=None,
        metavar="N",
        help="at most N rows (0: all; default: 100 in a table, all in json and csv)",
    )
    parser.add_argument(
        "--cursor",
        metavar="TOKEN",
        help="the next page, as the page before named it: give the same filters; the window is "
        "the first page's, and a prune since then is an error, never a gap",
    )
    parser.add_argument(
        "--offset",
        type=decimal_int,
        default=None,
        metavar="N",
        help="skip the first N rows (a prune between two runs shifts them: page with --cursor)",
    )


_ROWS_OF_LOGS = (
    "read this share log instead of share_log.path; repeat it for the logs of several "
    "gateways (a copy of each sidecar's log): their rows in time order, each naming its "
    "log. With more than one, no --cursor or --offset; a table shows the first 100 rows"
)


def _add_log_files(parser: argparse.ArgumentParser, text: str = _ROWS_OF_LOGS) -> None:
    # Appended even where one log is all a command reads: several are then refused in a
    # sentence saying why, as the other `logs` usage errors are.
    parser.add_argument("--log", action="append", metavar="FILE", help=text)


def add_consent(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `consent import FILE.csv` and `consent show SUBJECT` to the command line."""
    consent = subparsers.add_parser("consent", help="load and inspect consent grants")
    sub = consent.add_subparsers(dest="consent_command", required=True)

    load = sub.add_parser("import", help="load grants and withdrawals from a CSV file")
    load.add_argument("file", metavar="FILE.csv", help=f"columns: {','.join(CONSENT_CSV_HEADER)}")
    load.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    load.set_defaults(handler=deferred("gateway.consent", "cmd_import"))

    show = sub.add_parser("show", help="every consent grant of one data subject")
    show.add_argument("subject", metavar="SUBJECT")
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    show.set_defaults(handler=deferred("gateway.consent", "cmd_show"))
