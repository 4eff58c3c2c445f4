"""The check behind `contracts connect`: one connection to a partner, made as a share's is, over
which nothing is sent."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from cryptography import x509

from gateway.contractset import EXPIRY_NOTICE_DAYS, load_contract_set
from gateway.partnertls import (
    CertificateInfo,
    PartnerTls,
    dns_names,
    library_notice,
    partner_certificate_notice,
    read_quietly,
    tls_notices,
    utc_text,
)
from gateway.settings import Settings
from gateway.upstream import HANDSHAKE_REFUSALS, HttpUpstream

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Under TLS 1.3 a partner refuses our certificate (or its absence) only once our side of the
# handshake is over, with an alert a round trip later: the connection is watched this long,
# within the timeout, before it counts as not refused. Read when the command runs.
REFUSAL_WAIT_S = 1.0
# Our close_notify is answered by the partner's, or by its closing: not waited for longer.
CLOSE_WAIT_S = 1.0

Result = Literal["ok", "refused", "certificate did not verify", "could not connect", "timed out"]


@dataclass(frozen=True, slots=True)
class PartnerCertificate:
    info: CertificateInfo
    dns_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Handshake:
    version: str
    cipher: str
    certificate: PartnerCertificate | None


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """What connecting to a partner came to. `handshake` is None over plain HTTP and when no
    TLS session was made; `address` is None when TCP connected to none."""

    result: Result
    reason: str | None = None
    address: str | None = None
    handshake: Handshake | None = None
    waited_s: float = 0.0  # how long a refusal was watched for, once connected


async def check_connection(
    base_url: str, tls: PartnerTls | None, *, timeout_s: float, wait_s: float = REFUSAL_WAIT_S
) -> ConnectionCheck:
    """Connect to the partner at `base_url` with the partner client's own code, `tls` or the
    default context, write nothing, watch for a refusal for up to `wait_s`, and close. All but
    the close within `timeout_s`."""
    client = HttpUpstream(connections=1)
    await client.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    address: str | None = None

    def reached(sock: socket.socket) -> None:
        nonlocal address
        address = _address(sock.getpeername())

    try:
        try:
            async with asyncio.timeout_at(deadline):
                connection = await client.connect(base_url, tls, reached)
        except TimeoutError:
            return ConnectionCheck("timed out", f"not connected within {timeout_s:g} s", address)
        except ssl.SSLCertVerificationError as exc:
            return ConnectionCheck("certificate did not verify", exc.verify_message, address)
        except ssl.SSLError as exc:
            # Under TLS 1.2 the partner checks our certificate before our handshake ends.
            if exc.reason in HANDSHAKE_REFUSALS:
                return ConnectionCheck("refused", exc.reason, address)
            reason = f"the TLS handshake failed: {exc.reason or exc}"
            return ConnectionCheck("could not connect", reason, address)
        except ConnectionError as exc:
            if address is None:
                return ConnectionCheck("could not connect", _why(exc), address)
            # TCP connected, and the partner ended it during the handshake: as one that lets in
            # only the addresses it knows, or asks for a client certificate before the alert.
            return ConnectionCheck("refused", _refusal(exc), address)
        except (OSError, ValueError) as exc:
            # ValueError: a host name the resolver cannot encode, as for a share.
            return ConnectionCheck("could not connect", _why(exc), address)
        transport = connection.transport
        handshake = None if transport is None else _handshake(transport)
        waited = max(0.0, min(wait_s, deadline - loop.time()))
        done, _ = await asyncio.wait({connection.ended}, timeout=waited)
        if done:
            return ConnectionCheck(
                "refused", _refusal(connection.ended.result()), address, handshake, waited
            )
        connection.close()
        done, _ = await asyncio.wait({connection.ended}, timeout=CLOSE_WAIT_S)
        if not done:
            connection.abort()
        return ConnectionCheck("ok", None, address, handshake, waited)
    finally:
        await client.close()


def _address(peer: tuple[Any, ...]) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: OSError | ValueError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"the name was not found: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno is not None:
        # asyncio's own message names the address: the errno says what happened.
        return os.strerror(exc.errno)
    # uvloop ends a TLS handshake the partner hung up on with a bare ConnectionResetError.
    return str(exc) or "the partner ended the connection as it was made"


def _refusal(ended: BaseException | None) -> str:
    if isinstance(ended, ssl.SSLError):
        return ended.reason or str(ended)  # the alert, as OpenSSL names it
    if isinstance(ended, OSError) and ended.errno is not None:
        return f"the connection was ended: {os.strerror(ended.errno)}"
    return "the partner closed the connection"


def _handshake(transport: Any) -> Handshake | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    certificate = _partner_certificate(der) if der else None
    cipher = ssl_object.cipher()
    return Handshake(ssl_object.version() or "", cipher[0] if cipher else "", certificate)


def _partner_certificate(der: bytes) -> PartnerCertificate:
    """What the partner's certificate says, with what cryptography warned of reading it."""

    def read() -> PartnerCertificate:
        certificate = x509.load_der_x509_certificate(der)
        return PartnerCertificate(CertificateInfo.of(certificate), dns_names(certificate))

    shown, notices = read_quietly(read)
    return dataclasses.replace(shown, info=dataclasses.replace(shown.info, notices=notices))


# --- the command ------------------------------------------------------------------------------


def cmd_connect(args: argparse.Namespace, settings: Settings) -> int:
    contract_set, problems = load_contract_set(settings.contracts_dir, settings)
    if contract_set is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILED
    entry = contract_set.contracts.get(args.partner)
    if entry is None:
        print(f"unknown_partner: no contract for partner {args.partner!r}", file=sys.stderr)
        return EXIT_USAGE
    upstream = entry.contract.upstream
    base_url = upstream.base_url.rstrip("/")
    timeout_s = upstream.timeout_s if args.timeout is None else args.timeout
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        check = runner.run(
            check_connection(base_url, entry.tls, timeout_s=timeout_s, wait_s=REFUSAL_WAIT_S)
        )
    secure = base_url.lower().startswith("https://")
    report: dict[str, Any] = {
        "partner": args.partner,
        "status": entry.contract.contract.status,
        "base_url": base_url,
        "address": check.address,
    }
    if secure:
        ours = entry.tls.client_certificate if entry.tls is not None else None
        report["tls"] = _tls_view(check.handshake, datetime.now(UTC))
        report["client_certificate"] = ours.subject if ours is not None else None
    else:
        report["tls"] = None
    report["result"] = check.result
    report["reason"] = check.reason
    notes = [] if secure else ["plain HTTP: no TLS"]
    shown = check.handshake.certificate if check.handshake is not None else None
    if shown is not None:
        what = f"the partner's certificate {shown.info.subject}"
        notes += [library_notice(what, notice) for notice in shown.info.notices]
    if entry.tls is not None:
        notes += [message for _, message in tls_notices(entry.tls)]
    if check.result == "ok":
        after = "the handshake" if secure else "connecting"
        notes.append(
            f"not refused within {check.waited_s:g} s of {after}: the partner may still refuse "
            "at its first request"
        )
    report["notes"] = notes
    if args.format == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in _lines(report, secure):
            print(line)
    return EXIT_OK if check.result == "ok" else EXIT_FAILED


def _tls_view(handshake: Handshake | None, now: datetime) -> dict[str, Any] | None:
    if handshake is None:
        return None
    view: dict[str, Any] = {"version": handshake.version, "cipher": handshake.cipher}
    shown = handshake.certificate
    if shown is None:
        view["certificate"] = None
        return view
    info = shown.info
    view["certificate"] = {
        "subject": info.subject,
        "issuer": info.issuer,
        "dns_names": list(shown.dns_names),
        "not_after": utc_text(info.not_after),
        "days_left": (info.not_after - now).days,
        "notice": partner_certificate_notice(info, now, timedelta(days=EXPIRY_NOTICE_DAYS)),
    }
    return view


def _lines(report: dict[str, Any], secure: bool) -> list[str]:
    lines = [
        f"partner: {report['partner']}",
        f"status: {report['status']}",
        f"base_url: {report['base_url']}",
        f"address: {report['address'] or 'none'}",
    ]
    if secure:
        tls = report["tls"]
        if tls is not None:
            lines += [f"tls_version: {tls['version']}", f"cipher: {tls['cipher']}"]
            shown = tls["certificate"]
            if shown is not None:
                lines += [
                    f"certificate_subject: {shown['subject']}",
                    f"certificate_issuer: {shown['issuer']}",
                    f"certificate_dns_names: {', '.join(shown['dns_names']) or 'none'}",
                    f"certificate_not_after: {shown['not_after']}",
                    f"certificate_days_left: {shown['days_left']}",
                ]
                if shown["notice"] is not None:
                    lines.append(f"certificate_notice: {shown['notice']}")
        lines.append(f"client_certificate: {report['client_certificate'] or 'none'}")
    reason = report["reason"]
    lines.append(f"result: {report['result']}" + (f" ({reason})" if reason else ""))
    lines += [f"note: {note}" for note in report["notes"]]
    return lines


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The loop `serve` runs shares on, without making it every later loop's in this process.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent only on Windows
        return None
    return uvloop.new_event_loop
