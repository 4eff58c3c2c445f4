"""The `share-gateway` command line: serve, demo, contracts, logs, consent, health."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.arguments import (
    add_consent,
    add_health,
    add_logs,
    decimal_int,
    deferred,
    health_timeout,
)
from gateway.errors import GatewayError, StartupError
from gateway.settings import ListenSettings, Settings, SettingsError, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace, Settings], int]


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    update: dict[str, Any] = {}
    if getattr(args, "contracts", None) is not None:
        update["contracts_dir"] = Path(args.contracts)
    if getattr(args, "host", None) is not None or getattr(args, "port", None) is not None:
        listen = {
            **settings.listen.model_dump(),
            **{
                k: v
                for k, v in (("host", getattr(args, "host", None)), ("port", args.port))
                if v is not None
            },
        }
        try:  # validated like the file's values: `--port 70000` is no port
            update["listen"] = ListenSettings.model_validate(listen)
        except ValidationError as exc:
            raise SettingsError(
                [f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors() if e["loc"]]
            ) from exc
    return settings.model_copy(update=update) if update else settings


# Each command imports what it runs on as it runs: the server and its event loop (`serve`,
# `demo`), the contract loader and the policy compiler (`contracts`) would otherwise add to the
# start of every command, which operators run by hand and in scripts, and `health` runs every
# few seconds. Above, only what builds the parser and reads the settings.


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from gateway.app import serve
    from gateway.logconfig import configure_logging

    configure_logging()
    _install_uvloop()
    asyncio.run(serve(settings))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import logging

    from gateway.demo import run_demo
    from gateway.logconfig import configure_logging

    # The walk-through is the output: of the gateway's own events, only errors interrupt it
    # (its share log is new on every run, which a gateway otherwise warns about). Library
    # records are scrubbed, since the demo's gateway serves requests like any other.
    configure_logging(json=False, level=logging.ERROR)
    _install_uvloop()
    return asyncio.run(run_demo(keep_serving=args.serve, port=args.port))


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.contractset import load_contract_set, unknown_cap_share_partners

    directory = Path(args.dir) if args.dir else settings.contracts_dir
    contract_set, problems = load_contract_set(directory, settings)
    if contract_set is not None:
        problems = unknown_cap_share_partners(contract_set.contracts, settings)
        if problems:
            contract_set = None  # `serve` would not start with them
    for problem in problems:
        print(problem)
    if contract_set is None:
        print(f"{len(problems)} problem(s) in {directory}", file=sys.stderr)
        return EXIT_FAILED
    for warning in contract_set.warnings:
        print(warning, file=sys.stderr)
    if args.strict and contract_set.warnings:
        # A pipeline that gates on the exit code asked for these to stop the release.
        count = len(contract_set.warnings)
        print(f"{count} warning(s) in {directory}, counted as problems (--strict)", file=sys.stderr)
        return EXIT_FAILED
    names = ", ".join(
        f"{pid} (v{c.contract.contract.version})"
        for pid, c in sorted(contract_set.contracts.items())
    )
    print(f"{len(contract_set.contracts)} contract(s) valid: {names}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    import secrets
    from datetime import datetime

    import orjson

    from gateway.caps import caps_text, caps_view
    from gateway.contractset import load_contract_set
    from gateway.explain import RouteTextError, explain
    from gateway.keys import MIN_MASTER_KEY_BYTES
    from gateway.policy import compile_policy

    contract_set, problems = load_contract_set(settings.contracts_dir, settings)
    if contract_set is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILED
    key_text = os.environ.get(settings.secrets.hash_key_env, "")
    if len(key_text.encode()) >= MIN_MASTER_KEY_BYTES:
        key = key_text.encode()
    else:
        key = secrets.token_bytes(32)
        print(
            f"note: {settings.secrets.hash_key_env} is not set; hashes below use a throw-away key",
            file=sys.stderr,
        )
    policy = compile_policy(
        contract_set,
        zone=settings.zone,
        master_key=key,
        require_secrets=False,
        cap_shares=settings.cap_shares,
    )
    partner = policy.partners.get(args.partner)
    if partner is None:
        print(f"unknown_partner: no contract for partner {args.partner!r}", file=sys.stderr)
        return EXIT_FAILED
    try:
        body = Path(args.body).read_bytes() if args.body else None
    except OSError as exc:
        print(f"--body {args.body}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = explain(
            partner,
            args.route,
            args.purpose,
            body,
            now=datetime.now(settings.zone),
            max_depth=settings.limits.max_json_depth,
            max_body_bytes=settings.limits.max_body_bytes,
            max_query_params=settings.limits.max_query_params,
            max_line_size=settings.limits.max_line_size,
        )
    except RouteTextError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as error:
        if args.format == "json":
            print(orjson.dumps({"denied": {"code": error.code, "message": error.message}}).decode())
        else:
            print(f"DENIED {error.status} {error.code}: {error.message}")
        return EXIT_FAILED
    if args.format == "json":
        out = {
            "route": result.route.label,
            "purpose": args.purpose,
            "fields": [
                {"path": d.path, "action": d.action, "reason": d.reason} for d in result.decisions
            ],
            "query": result.result.query,
            # An upload's body goes as it came: not a document to show; a GET's is none.
            "body": None if result.upload_bytes is not None or result.bodyless else result.document,
            "upload_bytes": result.upload_bytes,
            # Not judged here (they depend on the traffic): what the running gateway holds to.
            "caps": caps_view(partner.caps),
        }
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    print(f"{partner.id}: {result.route.label} for {args.purpose} — allowed")
    width = max((len(d.path) for d in result.decisions), default=4)
    for d in result.decisions:
        print(f"  {d.action:<12} {d.path:<{width}}  {d.reason}")
    print("partner would receive:")
    if result.bodyless:
        print("no body")
    elif result.upload_bytes is None:
        print(orjson.dumps(result.document, option=orjson.OPT_INDENT_2).decode())
    else:
        categories = ", ".join(result.result.categories_sent)
        print(
            f"the body as sent ({result.upload_bytes} bytes), unread: recorded as holding "
            f"any personal category of the contract ({categories})"
        )
    if result.result.query:
        print("query: " + "&".join(f"{k}={v}" for k, v in result.result.query.items()))
    print(
        "note: consent and the rate and daily caps depend on the registry and the traffic; "
        f"the running gateway checks them (its caps for {partner.id}: {caps_text(partner.caps)})",
        file=sys.stderr,
    )
    return EXIT_OK


def _install_uvloop() -> None:
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent only on Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="share-gateway",
        description="Share personal data with partners only as their contracts allow.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="gateway.yaml (default: ./gateway.yaml if present)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    serve.add_argument("--contracts", type=Path)
    serve.add_argument("--host")
    serve.add_argument("--port", type=decimal_int)
    serve.set_defaults(handler=cmd_serve)

    demo = sub.add_parser("demo", help="run the gateway against local stand-in partners")
    demo.add_argument("--serve", action="store_true", help="keep serving after the sample shares")
    demo.add_argument(
        "--port", type=decimal_int, default=0, help="gateway port with --serve (default: any free)"
    )
    demo.set_defaults(handler=cmd_demo)

    contracts = sub.add_parser(
        "contracts", help="check and explain contract files, and try a partner's connection"
    )
    contracts_sub = contracts.add_subparsers(dest="contracts_command", required=True)
    validate = contracts_sub.add_parser("validate", help="check every contract file")
    validate.add_argument("dir", nargs="?", help="contracts folder (default: from settings)")
    validate.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    validate.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too (for CI pipelines)"
    )
    validate.set_defaults(handler=cmd_validate)
    explain = contracts_sub.add_parser("explain", help="dry run: what a partner would receive")
    explain.add_argument("partner")
    explain.add_argument("--route", required=True, help='e.g. "POST /v1/assess"')
    explain.add_argument("--purpose", required=True)
    explain.add_argument("--body", help="JSON file with the body the caller would send")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    explain.set_defaults(handler=cmd_explain)
    connect = contracts_sub.add_parser(
        "connect",
        help="connect to a partner as a share would, and send nothing",
        description="Connect to the partner's base_url with the gateway's own client (its "
        "upstream.tls, or the system's trust store), send no request, watch briefly for a "
        "refusal, and close. Exit 0 when connected and not refused, 1 otherwise, 2 for usage "
        "errors.",
    )
    connect.add_argument("partner")
    connect.add_argument("--contracts", type=Path, help="contracts folder (default: from settings)")
    connect.add_argument(
        "--timeout",
        type=health_timeout,
        default=None,
        metavar="S",
        help="seconds to connect in all (default: the contract's upstream.timeout_s)",
    )
    connect.add_argument("--format", choices=("text", "json"), default="text")
    connect.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    connect.set_defaults(handler=deferred("gateway.connectcheck", "cmd_connect"))

    add_logs(sub)
    add_consent(sub)
    add_health(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    handler: Handler = args.handler
    try:
        code = handler(args, settings)
        if args.command != "serve":
            sys.stdout.flush()  # here, not at exit, where a reader that left is not caught
        return code
    except StartupError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        if args.command == "serve":
            raise  # its share lines had nowhere to go: never a clean exit
        # The reader had what it wanted (`| head`): no error to report. Python flushes stdout
        # once more at exit; pointed at /dev/null, that flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
